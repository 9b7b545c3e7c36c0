"""Reads about leads: the timeline (events, stage changes, merges; touches join with the sequences issue)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from leads.models import Event, Lead, LeadMerge, StageChange

# Later issues register sources of timeline items (touches, content views, calls, notes).
TimelineSource = Callable[[Lead, datetime | None, int], list[dict[str, Any]]]
_TIMELINE_SOURCES: list[TimelineSource] = []


def timeline_source(func: TimelineSource) -> TimelineSource:
    _TIMELINE_SOURCES.append(func)
    return func


def _events(lead: Lead, before: datetime | None, limit: int) -> list[dict[str, Any]]:
    rows = Event.objects.filter(lead=lead)
    if before is not None:
        rows = rows.filter(occurred_at__lt=before)
    return [
        {
            "kind": "event",
            "at": e.occurred_at,
            "id": e.pk,
            "type": e.type,
            "summary": _event_summary(e),
            "data": {"event_id": e.event_id, "properties": e.properties, "source": e.source},
        }
        for e in rows.order_by("-occurred_at", "-id")[:limit]
    ]


def _event_summary(event: Event) -> str:
    props = event.properties or {}
    detail = props.get("title") or props.get("asset") or props.get("text") or props.get("url") or ""
    return f"{event.type}: {detail}" if detail else event.type


def _stage_changes(lead: Lead, before: datetime | None, limit: int) -> list[dict[str, Any]]:
    rows = StageChange.objects.filter(lead=lead).select_related("by")
    if before is not None:
        rows = rows.filter(at__lt=before)
    return [
        {
            "kind": "stage_change",
            "at": c.at,
            "id": c.pk,
            "type": c.to_stage,
            "summary": f"{c.from_stage or '-'} → {c.to_stage}" + (f" ({c.reason})" if c.reason else ""),
            "data": {
                "from": c.from_stage,
                "to": c.to_stage,
                "reason": c.reason,
                "amount": str(c.amount) if c.amount is not None else None,
                "by": c.by.username if c.by else c.actor,
            },
        }
        for c in rows.order_by("-at", "-id")[:limit]
    ]


def _merges(lead: Lead, before: datetime | None, limit: int) -> list[dict[str, Any]]:
    rows = LeadMerge.objects.filter(survivor=lead)
    if before is not None:
        rows = rows.filter(at__lt=before)
    return [
        {
            "kind": "merge",
            "at": m.at,
            "id": m.pk,
            "type": "merged",
            "summary": f"#{m.merged_id} merged in: {m.why}",
            "data": {"merged_id": m.merged_id, "identities": m.identities},
        }
        for m in rows.order_by("-at", "-id")[:limit]
    ]


def lead_timeline(*, lead: Lead, before: datetime | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """Everything that happened to the lead, newest first, at most `limit` items before `before`."""
    items: list[dict[str, Any]] = []
    for source in (_events, _stage_changes, _merges, *_TIMELINE_SOURCES):
        items.extend(source(lead, before, limit))
    items.sort(key=lambda item: (item["at"], item["kind"], item["id"]), reverse=True)
    return items[:limit]
