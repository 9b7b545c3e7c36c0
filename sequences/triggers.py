"""Triggers, each tick, set-based per sequence: the rows a trigger names (memberships, events, tags,
stage changes) newer than the sequence's cursor, or the leads whose silence began since the last look,
become enrollments; re-entry and exit conditions decide who may enter (`services._contactable`)."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import connection, transaction
from django.db.models import Exists, F, Max, OuterRef, Q, QuerySet, Subquery

from leads.models import Event, Lead, LeadTag, PoolMembership, StageChange
from sequences.models import Enrollment, Sequence, SequenceStatus, Touch, TriggerType
from sequences.services import ENROLL_BATCH, SequencePlan, _contactable, _enroll_rows, sequence_plans


def _source(sequence: Sequence) -> tuple[QuerySet | None, str]:
    """The trigger's source rows (with `lead_id`, an `at` for the anchor and an increasing id)."""
    trigger = sequence.trigger or {}
    kind = sequence.trigger_type
    if kind == TriggerType.POOL_ENTERED:
        rows = PoolMembership.objects.filter(pool__slug=trigger.get("pool"))
        return rows.annotate(trigger_at=F("joined_at")), "pk"
    if kind in (TriggerType.WECOM_ADDED, TriggerType.EVENT):
        event_type = "wecom_added" if kind == TriggerType.WECOM_ADDED else trigger.get("event")
        rows = Event.objects.filter(type=event_type)
        if kind == TriggerType.EVENT and trigger.get("where"):
            # The `where` of an event rule, on the row itself.
            rows = rows.filter(**{f"properties__{k}": v for k, v in trigger["where"].items()})
        return rows.annotate(trigger_at=F("occurred_at")), "pk"
    if kind == TriggerType.TAG_ADDED:
        from leads.tagging import tag_name_normalize

        rows = LeadTag.objects.filter(tag__name=tag_name_normalize(str(trigger.get("tag"))))
        return rows.annotate(trigger_at=F("first_at")), "pk"
    if kind == TriggerType.STAGE_CHANGED:
        rows = StageChange.objects.filter(to_stage=trigger.get("stage"))
        return rows.annotate(trigger_at=F("at")), "pk"
    return None, ""


def _trigger_by_source(sequence: Sequence, plan: SequencePlan, now: datetime) -> int:
    rows, _ = _source(sequence)
    if rows is None:
        return 0
    top = rows.model.objects.aggregate(m=Max("pk"))["m"] or 0
    if sequence.trigger_cursor is None:  # first run: from now on, no backfill
        Sequence.objects.filter(pk=sequence.pk).update(trigger_cursor=top)
        return 0
    new = rows.filter(pk__gt=sequence.trigger_cursor, pk__lte=top)
    # One anchor per lead: its earliest new trigger row.
    anchors = new.filter(lead=OuterRef("pk")).order_by("trigger_at").values("trigger_at")[:1]
    leads = (
        _contactable(sequence, Lead.objects.filter(Exists(new.filter(lead=OuterRef("pk")))), now)
        .annotate(anchor=Subquery(anchors))
        .order_by("pk")
        .values_list("pk", "anchor")
    )
    created = _enroll_rows(
        plan=plan, rows=leads.iterator(chunk_size=ENROLL_BATCH), now=now, trigger=sequence.trigger_type
    )
    Sequence.objects.filter(pk=sequence.pk).update(trigger_cursor=top)
    return created


def _trigger_silent(sequence: Sequence, plan: SequencePlan, now: datetime) -> int:
    """Leads with no `message_in` for N days that were contacted before, once per silence.

    Silence is a state: the first run takes every lead silent now; later runs only the leads whose
    N days of silence ended since the last run (one range on the lead table, not every silent lead
    each minute)."""
    days = int((sequence.trigger or {}).get("days") or 14)
    silent_since = now - timedelta(days=days)
    window = Q(last_inbound_at__lte=silent_since) | Q(
        last_inbound_at__isnull=True, created_at__lte=silent_since
    )
    if sequence.trigger_checked_at is not None:
        began = sequence.trigger_checked_at - timedelta(days=days)
        window &= Q(last_inbound_at__gt=began) | Q(last_inbound_at__isnull=True, created_at__gt=began)
    contacted = Q(Exists(Event.objects.filter(lead=OuterRef("pk"), type="message_out"))) | Q(
        Exists(Touch.objects.filter(lead=OuterRef("pk"), state__in=["sent", "delivered"]))
    )
    leads = Lead.objects.filter(window).filter(contacted)
    # Once per silence: no enrollment of this sequence since the lead last spoke.
    leads = leads.exclude(
        Exists(
            Enrollment.objects.filter(lead=OuterRef("pk"), sequence=sequence).filter(
                Q(entered_at__gte=OuterRef("last_inbound_at")) | Q(state__in=["active", "paused"])
            )
        )
    )
    leads = _contactable(sequence, leads, now).order_by("pk").values_list("pk", flat=True)
    created = _enroll_rows(
        plan=plan,
        rows=((pk, now) for pk in leads.iterator(chunk_size=ENROLL_BATCH)),
        now=now,
        trigger="silent",
    )
    Sequence.objects.filter(pk=sequence.pk).update(trigger_checked_at=now)
    return created


def _plan_for_all_rows() -> None:
    """The candidates are read through a cursor, which PostgreSQL plans for the first rows; with many
    candidates and many enrollments that plan checked re-entry per lead against every enrollment of
    the sequence (100,000 × 100,000). Plan for reading them all."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL cursor_tuple_fraction = 1.0")


def _analyze_after_enrolling(count: int) -> None:
    """After a large enrollment, fresh statistics for the next tick's statements that read them."""
    if connection.vendor == "postgresql" and count >= ANALYZE_AFTER:
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {Enrollment._meta.db_table}")


ANALYZE_AFTER = 10_000


def sequences_trigger(*, now: datetime) -> dict[str, int]:
    """Enroll, for every active sequence, the leads its trigger fired for since the last tick."""
    enrolled = 0
    sequences = list(Sequence.objects.filter(status=SequenceStatus.ACTIVE).exclude(trigger__type="manual"))
    plans = sequence_plans(s.pk for s in sequences)
    for sequence in sequences:
        plan = plans[sequence.pk]
        if not plan.steps:
            continue
        with transaction.atomic():
            _plan_for_all_rows()
            if sequence.trigger_type == TriggerType.SILENT:
                enrolled += _trigger_silent(sequence, plan, now)
            else:
                enrolled += _trigger_by_source(sequence, plan, now)
    _analyze_after_enrolling(enrolled)
    return {"enrolled": enrolled}
