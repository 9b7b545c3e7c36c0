"""Reads about sequences: the API's sequence and touch lists, merged lead ids resolved in bulk, and the
touches on a lead's timeline."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.db.models import Count, F, IntegerField, OuterRef, Prefetch, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce

from leads.models import Lead, LeadMerge
from leads.selectors import timeline_source
from sequences.models import Enrollment, EnrollmentState, Sequence, Step, Touch

LIVE_STATES = (EnrollmentState.ACTIVE, EnrollmentState.PAUSED)


def sequence_list() -> QuerySet[Sequence]:
    """Sequences with their steps in order and `enrolled_active` (leads in them now, active or paused),
    in a fixed number of queries however many there are."""
    live = (
        Enrollment.objects.filter(sequence=OuterRef("pk"), state__in=LIVE_STATES)
        .order_by()
        .values("sequence")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return Sequence.objects.annotate(
        enrolled_active=Coalesce(Subquery(live, output_field=IntegerField()), Value(0))
    ).prefetch_related(Prefetch("steps", queryset=Step.objects.order_by("position")))


def touch_list() -> QuerySet[Touch]:
    """Touches with their step's position, one query per page."""
    return Touch.objects.annotate(step_position=F("step__position"))


def lead_ids_resolve(*, lead_ids: Iterable[int]) -> dict[int, int]:
    """Each id that names a lead, mapped to that lead, or to the survivor it was merged into; unknown
    ids are left out. Two queries for any number of ids (a merge re-points older merges, so one hop)."""
    wanted = set(lead_ids)
    live = set(Lead.objects.filter(pk__in=wanted).values_list("pk", flat=True))
    resolved = {pk: pk for pk in live}
    if wanted - live:
        resolved.update(
            LeadMerge.objects.filter(merged_id__in=wanted - live).values_list("merged_id", "survivor_id")
        )
    return resolved


@timeline_source
def lead_timeline_touches(lead: Lead, before: datetime | None, limit: int) -> list[dict[str, Any]]:
    """The lead's touches at the time they were sent (or are, were, due), newest first."""
    rows = (
        Touch.objects.filter(lead=lead)
        .annotate(at=Coalesce("sent_at", "due_at"))
        .select_related("step")
        .annotate(sequence_name=F("sequence__name"))
    )
    if before is not None:
        rows = rows.filter(at__lt=before)
    return [_timeline_item(touch) for touch in rows.order_by("-at", "-id")[:limit]]


def _timeline_item(touch: Touch) -> dict[str, Any]:
    step = touch.step
    day = step.day if step else None
    summary = " · ".join(
        part
        for part in (
            touch.sequence_name,  # type: ignore[attr-defined]
            f"day {day}" if day is not None else "",
            touch.channel,
            touch.state + (f" ({touch.skip_reason})" if touch.skip_reason else ""),
        )
        if part
    )
    return {
        "kind": "touch",
        "at": touch.at,  # type: ignore[attr-defined]
        "id": touch.pk,
        "type": "touch",
        "summary": summary,
        "data": {
            "sequence": touch.sequence_id,
            "sequence_name": touch.sequence_name,  # type: ignore[attr-defined]
            "step": step.position if step else None,
            "day": day,
            "channel": touch.channel,
            "mode": touch.mode,
            "state": touch.state,
            "due_at": touch.due_at,
            "sent_at": touch.sent_at,
            "text": touch.rendered,
            "content": touch.content_id,
            "skip_reason": touch.skip_reason,
            "error": touch.error,
        },
    }
