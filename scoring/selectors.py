"""Reads of scoring: the explanation of one lead's score, and what leads earned by rule lately."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.db import connection
from django.db.models import BooleanField, Case, Value, When
from django.utils.dateparse import parse_datetime
from django.utils.timezone import is_naive, make_aware

from leads.models import Event, Lead
from leads.rules import rule_compile
from scoring.models import LeadScore, ScoreEntry, ScoringRule
from scoring.services import Scope, _decayed_sql, entry_points_sql, scores_select, scoring_settings_get

ENTRIES_SHOWN = 50


@dataclass
class ScoreExplanation:
    lead_id: int
    as_of: datetime
    fit: int
    engagement: float
    score: int
    grade: str
    temperature: str
    stored: dict[str, Any] | None
    thresholds: dict[str, int]
    fit_rules: list[dict[str, Any]] = field(default_factory=list)
    behaviour_rules: list[dict[str, Any]] = field(default_factory=list)
    entries: list[dict[str, Any]] = field(default_factory=list)
    entries_total: int = 0


def score_explain(*, lead: Lead, now: datetime) -> ScoreExplanation:
    """Why the lead scores what it does as of `now`: the totals by the same SELECT the recomputation
    writes, each fit rule it meets, each behaviour rule with its ledger entries and their decayed
    values, and the score stored at the last computation. A bounded number of queries."""
    select_sql, params = scores_select(scope=Scope(ids=[lead.pk]), now=now)
    with connection.cursor() as cursor:
        cursor.execute(select_sql, params)
        row = cursor.fetchone()
    _, fit, engagement, score, grade, temperature = row or (lead.pk, 0, 0.0, 0, "D", "cold")
    thresholds = scoring_settings_get()

    fit_rules = list(
        ScoringRule.objects.filter(kind=ScoringRule.Kind.FIT, active=True).order_by("position", "pk")
    )
    matched: dict[str, Any] = {}
    if fit_rules:
        matched = (
            Lead.objects.filter(pk=lead.pk)
            .annotate(
                **{
                    f"rule_{rule.pk}": Case(
                        When(rule_compile(rule.rule, now=now), then=Value(True)),
                        default=Value(False),
                        output_field=BooleanField(),
                    )
                    for rule in fit_rules
                }
            )
            .values(*[f"rule_{rule.pk}" for rule in fit_rules])
            .get()
        )
    explanation = ScoreExplanation(
        lead_id=lead.pk,
        as_of=now,
        fit=fit,
        engagement=round(float(engagement), 2),
        score=score,
        grade=grade,
        temperature=temperature,
        stored=None,
        thresholds={
            "hot_score": thresholds.hot_score,
            "hot_min_engagement": thresholds.hot_min_engagement,
            "warm_score": thresholds.warm_score,
            "grade_a": thresholds.grade_a,
            "grade_b": thresholds.grade_b,
            "grade_c": thresholds.grade_c,
        },
        fit_rules=[
            {"rule": rule.pk, "name": rule.name, "points": rule.points, "description": rule.description}
            for rule in fit_rules
            if matched.get(f"rule_{rule.pk}")
        ],
    )
    stored = LeadScore.objects.filter(lead_id=lead.pk).first()
    if stored is not None:
        explanation.stored = {
            "score": stored.score,
            "fit": stored.fit,
            "engagement": round(stored.engagement, 2),
            "grade": stored.grade,
            "temperature": stored.temperature,
            "computed_at": stored.computed_at,
            "hot_since": stored.hot_since,
        }

    at = connection.ops.adapt_datetimefield_value(now)
    entries = ScoreEntry._meta.db_table
    rules = ScoringRule._meta.db_table
    with connection.cursor() as cursor:
        # The entries that earn something under the rules as they are now (a day's events past its cap
        # are kept in the ledger with nothing to earn).
        earning = f"({entry_points_sql()}) <> 0"
        cursor.execute(
            f"SELECT r.id, r.name, r.event_type, r.points, r.half_life_days, r.cap_per_day, r.cap_total, "
            f"COUNT(*), SUM({entry_points_sql()}), SUM({_decayed_sql()}), MAX(se.at) "
            f"FROM {entries} se JOIN {rules} r ON r.id = se.rule_id "
            f"WHERE se.lead_id = %s AND r.active AND se.at <= %s AND {earning} "
            f"GROUP BY r.id, r.name, r.event_type, r.points, r.half_life_days, r.cap_per_day, r.cap_total "
            f"ORDER BY SUM({_decayed_sql()}) DESC, r.id",
            [at, lead.pk, at, at],
        )
        for (
            rule_id,
            name,
            event_type,
            points,
            half_life,
            per_day,
            total,
            count,
            earned,
            decayed,
            last,
        ) in cursor.fetchall():
            explanation.behaviour_rules.append(
                {
                    "rule": rule_id,
                    "name": name,
                    "event_type": event_type,
                    "points_each": points,
                    "half_life_days": half_life,
                    "cap_per_day": per_day,
                    "cap_total": total,
                    "events": count,
                    "points": int(earned),
                    "decayed": round(float(decayed), 2),
                    "last_at": _as_datetime(last),
                }
            )
        explanation.entries_total = sum(item["events"] for item in explanation.behaviour_rules)
        cursor.execute(
            f"SELECT se.rule_id, r.name, se.event_id, e.type, se.at, {entry_points_sql()}, {_decayed_sql()} "
            f"FROM {entries} se JOIN {rules} r ON r.id = se.rule_id "
            f"JOIN {Event._meta.db_table} e ON e.id = se.event_id "
            f"WHERE se.lead_id = %s AND r.active AND se.at <= %s AND {earning} "
            f"ORDER BY se.at DESC, se.id DESC LIMIT %s",
            [at, lead.pk, at, ENTRIES_SHOWN],
        )
        explanation.entries = [
            {
                "rule": rule_id,
                "name": name,
                "event": event_id,
                "event_type": event_type,
                "at": _as_datetime(when),
                "points": points,
                "decayed": round(float(decayed), 2),
            }
            for rule_id, name, event_id, event_type, when, points, decayed in cursor.fetchall()
        ]
    return explanation


def _as_datetime(value: Any) -> Any:
    """Raw SQL on SQLite returns datetimes as UTC text; make them what the ORM would return."""
    if value is None:
        return value
    if isinstance(value, datetime):
        return make_aware(value, UTC) if is_naive(value) else value
    parsed = parse_datetime(str(value))
    if parsed is not None and is_naive(parsed):
        parsed = make_aware(parsed, UTC)
    return parsed


def earned_by_rule(*, lead_ids: list[int], since: datetime, now: datetime) -> list[dict[str, Any]]:
    """Per lead and active behaviour rule, the ledger entries that earned points between `since` and
    `now` (under the rules as they are now): how many (`n`), the points (`points`), the first one
    (`first`) and the latest event (`last_event`). One query for any number of leads."""
    if not lead_ids:
        return []
    scope_sql, scope_params = Scope(ids=lead_ids).where("se.lead_id")
    points = entry_points_sql()
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT se.lead_id, se.rule_id, COUNT(*), SUM({points}), MIN(se.at), MAX(se.event_id) "
            f"FROM {ScoreEntry._meta.db_table} se JOIN {ScoringRule._meta.db_table} r ON r.id = se.rule_id "
            f"WHERE {scope_sql} AND r.active AND se.at >= %s AND se.at <= %s AND ({points}) > 0 "
            "GROUP BY se.lead_id, se.rule_id",
            [
                *scope_params,
                connection.ops.adapt_datetimefield_value(since),
                connection.ops.adapt_datetimefield_value(now),
            ],
        )
        return [
            {
                "lead_id": lead_id,
                "rule_id": rule_id,
                "n": n,
                "points": int(total),
                "first": _as_datetime(first),
                "last_event": last_event,
            }
            for lead_id, rule_id, n, total, first, last_event in cursor.fetchall()
        ]
