"""Call tasks (issue 6 item 7): a touch on the `call` channel becomes a phone call for the lead's owner;
logging the call's outcome records `call_logged` and closes the task (and so the touch: `sent`)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.db import transaction

from channels.models import CallTask
from leads.models import Lead
from leads.services import EventInput, event_record_bulk
from sequences.models import Touch, TouchState

CALL_REF_PREFIX = "call:"


class CallLogError(ValueError):
    """The outcome cannot be logged (a task already closed, a call back without a time …)."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


def call_ref(task_id: int) -> str:
    return f"{CALL_REF_PREFIX}{task_id}"


def call_tasks_for_touches(*, items: Iterable[dict[str, Any]]) -> dict[int, CallTask]:
    """The call task of each touch (by touch id), made if it has none: `items` carry touch_id, lead_id,
    assignee_id, script, due_at. Safe to run twice or at once: a touch has at most one task."""
    rows = {item["touch_id"]: item for item in items}
    if not rows:
        return {}
    CallTask.objects.bulk_create(
        [
            CallTask(
                touch_id=touch_id,
                lead_id=item["lead_id"],
                assignee_id=item.get("assignee_id"),
                script=item.get("script", ""),
                due_at=item["due_at"],
            )
            for touch_id, item in rows.items()
        ],
        ignore_conflicts=True,  # the touch's task exists already (a resend, or a second worker)
    )
    return {task.touch_id: task for task in CallTask.objects.filter(touch_id__in=list(rows))}


def call_log(
    *,
    task: CallTask | None,
    lead: Lead,
    outcome: str,
    notes: str = "",
    call_back_at: datetime | None = None,
    by: Any = None,
    now: datetime,
) -> CallTask | None:
    """Log a call: `call_logged` on the lead (outcome, notes, by), the task done with its outcome, the
    touch it came from `sent`; `call_back` opens a new task at `call_back_at`. Returns the new task."""
    if outcome not in CallTask.Outcome.values:
        raise CallLogError({"outcome": f"must be one of {', '.join(CallTask.Outcome.values)}"})
    if outcome == CallTask.Outcome.CALL_BACK and call_back_at is None:
        raise CallLogError({"call_back_at": "a call back needs a time"})
    if task is not None and task.lead_id != lead.pk:
        raise CallLogError({"task": "belongs to another lead"})
    by_name = getattr(by, "username", None) or (str(by) if by else "")
    follow_up: CallTask | None = None
    with transaction.atomic():
        if task is not None:
            closed = CallTask.objects.filter(pk=task.pk, state=CallTask.State.OPEN).update(
                state=CallTask.State.DONE,
                outcome=outcome,
                notes=notes,
                call_back_at=call_back_at,
                done_at=now,
            )
            if not closed:
                raise CallLogError({"task": "is not open (already logged or cancelled)"})
            task.refresh_from_db()
            if task.touch_id:
                # The lead engineer's confirm poll would see it too; moving it now shows it at once.
                Touch.objects.filter(pk=task.touch_id, state=TouchState.AWAITING_CONFIRM).update(
                    state=TouchState.SENT, sent_at=now
                )
                # A sequence's staff task on the call channel: done with the call.
                Touch.objects.filter(pk=task.touch_id, state=TouchState.TASK_OPEN).update(
                    state=TouchState.TASK_DONE, done_at=now, sent_at=now
                )
        properties: dict[str, Any] = {"outcome": outcome, "notes": notes, "by": by_name}
        if task is not None:
            properties["call_task"] = task.pk
        if call_back_at is not None:
            properties["call_back_at"] = call_back_at.isoformat()
        event_record_bulk(
            items=[
                EventInput(
                    type="call_logged",
                    occurred_at=now,
                    properties=properties,
                    event_id=f"call_logged:{task.pk}" if task is not None else None,
                    lead_id=lead.pk,
                    identity=None,
                    source="call",
                )
            ],
            now=now,
        )
        if outcome == CallTask.Outcome.CALL_BACK:
            follow_up = CallTask.objects.create(
                lead=lead,
                assignee=task.assignee if task is not None else (by if getattr(by, "pk", None) else None),
                script=task.script if task is not None else "",
                due_at=call_back_at,
            )
    return follow_up


def call_tasks_reassign(*, lead_owners: dict[int, int]) -> int:
    """Open call tasks follow their lead to its new owner (lead id → user id)."""
    moved = 0
    by_owner: dict[int, list[int]] = {}
    for lead_id, owner_id in lead_owners.items():
        by_owner.setdefault(owner_id, []).append(lead_id)
    for owner_id, lead_ids in by_owner.items():
        moved += CallTask.objects.filter(lead_id__in=lead_ids, state=CallTask.State.OPEN).update(
            assignee_id=owner_id
        )
    return moved


def call_task_cancel(*, task_ids: Iterable[int], now: datetime) -> int:
    """Cancel open call tasks; the touches they came from end `skipped` (reason policy:cancelled)."""
    ids = list(task_ids)
    with transaction.atomic():
        cancelled = list(
            CallTask.objects.select_for_update()
            .filter(pk__in=ids, state=CallTask.State.OPEN)
            .values_list("pk", "touch_id")
        )
        CallTask.objects.filter(pk__in=[pk for pk, _ in cancelled]).update(
            state=CallTask.State.CANCELLED, done_at=now
        )
        Touch.objects.filter(
            pk__in=[touch for _, touch in cancelled if touch],
            state__in=[TouchState.AWAITING_CONFIRM, TouchState.TASK_OPEN],
        ).update(state=TouchState.SKIPPED, skip_reason="policy:cancelled")
    return len(cancelled)


def call_tasks_close_for_touch(*, touch_id: int, now: datetime) -> int:
    """The staff task of a touch was marked done elsewhere (the sequence's task list): its call task
    closes too, without an outcome (no call was logged)."""
    return CallTask.objects.filter(touch_id=touch_id, state=CallTask.State.OPEN).update(
        state=CallTask.State.DONE, done_at=now
    )
