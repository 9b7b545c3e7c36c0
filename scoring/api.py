"""The score explanation of the API (`GET /api/v1/leads/{id}/score/`), served by the lead viewset."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime

from rest_framework import serializers

from leads.models import Lead
from scoring.selectors import score_explain


class FitRuleSerializer(serializers.Serializer):
    rule = serializers.IntegerField()
    name = serializers.CharField()
    points = serializers.IntegerField()
    description = serializers.CharField()


class BehaviourRuleSerializer(serializers.Serializer):
    rule = serializers.IntegerField()
    name = serializers.CharField()
    event_type = serializers.CharField()
    points_each = serializers.IntegerField()
    half_life_days = serializers.IntegerField(allow_null=True)
    cap_per_day = serializers.IntegerField(allow_null=True)
    cap_total = serializers.IntegerField(allow_null=True)
    events = serializers.IntegerField(help_text="ledger entries (events that earned points)")
    points = serializers.IntegerField(help_text="points earned, after caps, before decay")
    decayed = serializers.FloatField(help_text="what those points are worth as of `as_of`")
    last_at = serializers.DateTimeField()


class EntrySerializer(serializers.Serializer):
    rule = serializers.IntegerField()
    name = serializers.CharField()
    event = serializers.IntegerField()
    event_type = serializers.CharField()
    at = serializers.DateTimeField()
    points = serializers.IntegerField()
    decayed = serializers.FloatField()


class StoredScoreSerializer(serializers.Serializer):
    score = serializers.IntegerField()
    fit = serializers.IntegerField()
    engagement = serializers.FloatField()
    grade = serializers.CharField()
    temperature = serializers.CharField()
    computed_at = serializers.DateTimeField()
    hot_since = serializers.DateTimeField(allow_null=True)


class ScoreExplanationSerializer(serializers.Serializer):
    lead = serializers.IntegerField(source="lead_id")
    as_of = serializers.DateTimeField()
    score = serializers.IntegerField(help_text="fit + round(engagement), as of `as_of`")
    fit = serializers.IntegerField()
    engagement = serializers.FloatField()
    grade = serializers.CharField()
    temperature = serializers.CharField()
    stored = StoredScoreSerializer(allow_null=True, help_text="as computed by the last tick")
    thresholds = serializers.DictField(child=serializers.IntegerField())
    fit_rules = FitRuleSerializer(many=True, help_text="fit rules the lead meets")
    behaviour_rules = BehaviourRuleSerializer(many=True)
    entries = EntrySerializer(many=True, help_text="the newest ledger entries")
    entries_total = serializers.IntegerField()


def score_explanation_data(*, lead: Lead, now: datetime) -> dict:
    return ScoreExplanationSerializer(asdict(score_explain(lead=lead, now=now))).data
