"""Serializers of the sequence API: a sequence with its steps (one shape to read and to write, so an
exported sequence posts back as it was), its figures, enrolling, touches."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.utils.timezone import now as timezone_now
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.exceptions import ValidationError

from content.models import ContentAsset
from leads.models import Stage
from sequences.api.fields import (
    MAX_DAYS,
    MAX_ENROLL,
    MAX_ID,
    MAX_POSITION,
    MAX_STEPS,
    ActiveField,
    OnCompleteField,
    QuietHoursField,
    ReentryField,
    RuleField,
    SendTimeField,
    StepContentField,
    TriggerField,
    WaitForField,
    known_time_zones,
)
from sequences.models import Channel, Sequence, SequenceStatus, StepMode, Touch
from sequences.services import sequence_figures


class StepSerializer(serializers.Serializer):
    position = serializers.IntegerField(
        min_value=0, max_value=MAX_POSITION, required=False, help_text="order of the steps; default: index"
    )
    day = serializers.IntegerField(min_value=0, max_value=MAX_DAYS, help_text="local day N after the anchor")
    send_time = SendTimeField(required=False, allow_null=True, help_text="omitted: 10:00")
    channel = serializers.ChoiceField(choices=Channel.choices, required=False)
    mode = serializers.ChoiceField(choices=StepMode.choices, required=False)
    text = serializers.CharField(
        required=False, allow_blank=True, max_length=20_000, trim_whitespace=False, help_text="template"
    )
    content = StepContentField(required=False, allow_null=True)
    condition = RuleField(required=False, allow_null=True, help_text="the step is taken if the lead meets it")
    else_position = serializers.IntegerField(
        min_value=0, max_value=MAX_POSITION, required=False, allow_null=True, help_text="condition false"
    )
    wait_for = WaitForField(required=False, allow_null=True)
    else_channel = serializers.ChoiceField(
        choices=Channel.choices, required=False, allow_blank=True, help_text="when the channel refuses"
    )


class FiguresSerializer(serializers.Serializer):
    enrolled = serializers.IntegerField()
    by_state = serializers.DictField(child=serializers.IntegerField())
    exited_by_reason = serializers.DictField(child=serializers.IntegerField())
    touches = serializers.ListField(child=serializers.DictField(), help_text="counts by channel and state")
    replies = serializers.IntegerField(help_text="sent touches answered within 3 days")
    conversions = serializers.DictField(child=serializers.IntegerField(), help_text="to mql, sql")
    first_entered = serializers.DateTimeField(allow_null=True)


class SequenceSerializer(serializers.Serializer):
    """A sequence and its steps; what a GET returns, a POST elsewhere recreates."""

    id = serializers.IntegerField(read_only=True)
    name = serializers.CharField(max_length=200)
    goal = serializers.CharField(required=False, allow_blank=True, max_length=10_000)
    active = ActiveField(required=False)
    status = serializers.ChoiceField(choices=SequenceStatus.choices, required=False)
    timezone = serializers.CharField(required=False, max_length=64, help_text="default: the site's")
    quiet_hours = QuietHoursField(required=False, allow_null=True)
    trigger = TriggerField(required=False)
    entry_rule = RuleField(required=False, allow_null=True)
    exit_rule = RuleField(required=False, allow_null=True)
    exit_stages = serializers.ListField(
        child=serializers.ChoiceField(choices=Stage.choices), required=False, max_length=len(Stage.values)
    )
    reentry = ReentryField(required=False)
    max_lateness_minutes = serializers.IntegerField(min_value=1, max_value=MAX_DAYS * 24 * 60, required=False)
    caps = serializers.DictField(
        child=serializers.IntegerField(min_value=1, max_value=1000),
        required=False,
        help_text="touches per lead per local day, by channel",
    )
    on_complete = OnCompleteField(required=False)
    steps = StepSerializer(many=True, required=False, max_length=MAX_STEPS)
    enrolled_active = serializers.IntegerField(read_only=True, help_text="leads in it now (active or paused)")
    created_at = serializers.DateTimeField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)

    def validate_timezone(self, value: str) -> str:
        if value not in known_time_zones():
            raise ValidationError(f"unknown time zone {value!r}")
        return value

    def validate_caps(self, value: dict[str, int]) -> dict[str, int]:
        unknown = sorted(key for key in value if key not in Channel.values)
        if unknown:
            raise ValidationError({key: "not a channel" for key in unknown})
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        wanted = {
            (index, step["content_id"])
            for index, step in enumerate(attrs.get("steps") or [])
            if step.get("content_id")
        }
        if wanted:
            known = set(
                ContentAsset.objects.filter(pk__in={pk for _, pk in wanted}).values_list("pk", flat=True)
            )
            missing = {
                f"steps[{i}].content": [f"no content asset {pk}"] for i, pk in wanted if pk not in known
            }
            if missing:
                raise ValidationError(missing)
        return attrs


class SequenceDetailSerializer(SequenceSerializer):
    figures = serializers.SerializerMethodField()

    @extend_schema_field(FiguresSerializer)
    def get_figures(self, sequence: Sequence) -> dict[str, Any]:
        return FiguresSerializer(sequence_figures(sequence=sequence)).data


class EnrollSerializer(serializers.Serializer):
    lead_ids = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=MAX_ID),
        allow_empty=False,
        max_length=MAX_ENROLL,
        help_text="a merged lead's id enrolls its survivor",
    )
    anchor_at = serializers.DateTimeField(
        required=False, allow_null=True, help_text="day 0 of the leads' timeline; default: now"
    )

    def validate_anchor_at(self, value: Any) -> Any:
        now = timezone_now()
        if value is not None and not now - timedelta(days=MAX_DAYS) <= value <= now + timedelta(days=366):
            raise ValidationError("must be within ten years before and one year after now")
        return value


class EnrollResultSerializer(serializers.Serializer):
    enrolled = serializers.ListField(child=serializers.IntegerField(), help_text="lead ids enrolled")
    refused = serializers.ListField(
        child=serializers.IntegerField(),
        help_text="ids given and not enrolled: unknown, or the lead may not enter (exit stage, opted out, "
        "re-entry policy, already in the sequence)",
    )
    merged = serializers.DictField(
        child=serializers.IntegerField(), help_text="ids given that were merged → the survivor's id"
    )


class TouchSerializer(serializers.ModelSerializer):
    lead = serializers.IntegerField(source="lead_id", read_only=True)
    sequence = serializers.IntegerField(source="sequence_id", read_only=True)
    step = serializers.IntegerField(
        source="step_position", read_only=True, allow_null=True, help_text="the step's position"
    )
    scheduled_for = serializers.DateTimeField(source="due_at", read_only=True)

    class Meta:
        model = Touch
        fields = [
            "id",
            "lead",
            "sequence",
            "step",
            "channel",
            "mode",
            "scheduled_for",
            "state",
            "sent_at",
            "skip_reason",
            "attempts",
            "error",
        ]
        read_only_fields = fields
