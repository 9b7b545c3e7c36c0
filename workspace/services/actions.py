"""What an SDR does on a lead: log a call, note, BANT, qualify, return to nurturing, close, tasks."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils.timezone import now as timezone_now
from django.utils.translation import gettext as _

from leads.models import Lead, RecycleReason, Stage
from workspace.models import Assignment, LeadNote
from workspace.services.common import (
    SQL_MIN_BANT,
    User,
    WorkspaceError,
    _end_open,
    _open,
)


def followups_mark(*, lead_ids: Iterable[int], at: datetime) -> int:
    """The open assignments of these leads are followed up at `at` (the first follow-up counts)."""
    return _open(lead_ids).filter(followed_up_at__isnull=True, assigned_at__lte=at).update(followed_up_at=at)


def lead_call_log(
    *,
    lead: Lead,
    by: User,
    outcome: str,
    notes: str = "",
    call_back_at: datetime | None = None,
    task_id: int | None = None,
    now: datetime | None = None,
) -> None:
    """Log a call on the lead (`call_logged`, the call task closed, a call back opens a new one); it
    counts as the follow-up of the SLA. A wrong number also marks the lead's phone as bad (tag)."""
    from channels.calls import CallLogError, call_log
    from channels.models import CallTask

    now = now or timezone_now()
    task = None
    if task_id is not None:
        task = CallTask.objects.filter(pk=task_id, lead=lead).first()
        if task is None:
            raise WorkspaceError("task", _("This call task is not this lead's."))
    if call_back_at is not None and call_back_at <= now:
        raise WorkspaceError("call_back_at", _("A call back must be in the future."))
    with transaction.atomic():
        try:
            call_log(
                task=task, lead=lead, outcome=outcome, notes=notes, call_back_at=call_back_at, by=by, now=now
            )
        except CallLogError as exc:
            field, message = next(iter(exc.errors.items()))
            raise WorkspaceError(field, message) from exc
        followups_mark(lead_ids=[lead.pk], at=now)
        if outcome == CallTask.Outcome.WRONG_NUMBER:
            from leads.services import lead_tags_change

            lead_tags_change(lead=lead, add=["电话:错号"], source="workspace", now=now)


def lead_note_add(*, lead: Lead, by: User, text: str, now: datetime | None = None) -> LeadNote:
    text = text.strip()
    if not text:
        raise WorkspaceError("text", _("A note cannot be empty."))
    return LeadNote.objects.create(lead=lead, author=by, text=text[:5000], created_at=now or timezone_now())


def lead_bant_set(*, lead: Lead, bant: dict[str, bool], now: datetime | None = None) -> Lead:
    """Write the four BANT criteria (each true or false)."""
    from leads.services import lead_update

    unknown = set(bant) - {"budget", "authority", "need", "timeline"}
    if unknown:
        raise WorkspaceError(
            "bant", _("Unknown BANT criteria: %(names)s") % {"names": ", ".join(sorted(unknown))}
        )
    return lead_update(lead=lead, data={f"bant_{k}": bool(v) for k, v in bant.items()}, now=now)


def lead_mark_sql(*, lead: Lead, by: User, override_reason: str = "", now: datetime | None = None) -> None:
    """Qualify the lead: stage SQL (and `lead.sql` to the CRM). Needs BANT ≥ 3 of 4, or a reason for the
    override. The assignment ends `sql`: the SLA is met by qualifying."""
    now = now or timezone_now()
    lead.refresh_from_db()
    override_reason = override_reason.strip()
    if lead.bant_count < SQL_MIN_BANT and not override_reason:
        raise WorkspaceError(
            "override_reason",
            _("BANT is %(n)s/4: at least %(min)s criteria, or give a reason for qualifying anyway.")
            % {"n": lead.bant_count, "min": SQL_MIN_BANT},
        )
    from leads.services import lead_stage_set

    reason = override_reason and _("override: %(reason)s") % {"reason": override_reason}
    reason = reason or f"BANT {lead.bant_count}/4"
    with transaction.atomic():
        lead_stage_set(lead=lead, stage=Stage.SQL, reason=reason, by=by, now=now)
        followups_mark(lead_ids=[lead.pk], at=now)
        _end_open(lead_ids=[lead.pk], reason=Assignment.End.SQL, now=now)


def lead_return_to_nurture(
    *, lead: Lead, by: User, reason: RecycleReason, note: str = "", now: datetime | None = None
) -> dict[str, Any]:
    """Hand the lead back to marketing: stage `recycled` with the reason (whose tag moves it into its value
    pool), enrolled in the reason's sequence, the owner cleared so it can come back to the queue."""
    from leads.services import lead_stage_set
    from sequences.services import sequence_enroll

    now = now or timezone_now()
    if not reason.active:
        raise WorkspaceError("reason", _("This reason is no longer offered."))
    enrolled: list[int] = []
    with transaction.atomic():
        lead_stage_set(lead=lead, stage=Stage.RECYCLED, reason=reason.code, by=by, now=now)
        if note.strip():
            lead_note_add(lead=lead, by=by, text=f"{reason.label}：{note.strip()}", now=now)
        followups_mark(lead_ids=[lead.pk], at=now)
        _end_open(lead_ids=[lead.pk], reason=Assignment.End.RETURNED, now=now)
        Lead.objects.filter(pk=lead.pk).update(owner=None, updated_at=now)
        if reason.sequence_id is not None:
            enrolled = sequence_enroll(sequence=reason.sequence, lead_ids=[lead.pk], now=now)["enrolled"]
    return {"reason": reason.code, "sequence": reason.sequence_id, "enrolled": bool(enrolled)}


def lead_close(*, lead: Lead, by: User, kind: str, note: str = "", now: datetime | None = None) -> None:
    """Mark the lead unreachable (stage `recycled`, tag 线索:无法联系: nurturing goes on by other channels)
    or invalid (stage `lost`, tag 线索:无效, do not contact)."""
    from leads.services import lead_stage_set, lead_tags_change

    now = now or timezone_now()
    if kind not in (Assignment.End.UNREACHABLE, Assignment.End.INVALID):
        raise WorkspaceError("kind", _("Unknown kind."))
    stage = Stage.RECYCLED if kind == Assignment.End.UNREACHABLE else Stage.LOST
    tag = "线索:无法联系" if kind == Assignment.End.UNREACHABLE else "线索:无效"
    with transaction.atomic():
        lead_stage_set(
            lead=lead,
            stage=stage,
            reason=kind + (f": {note.strip()}" if note.strip() else ""),
            by=by,
            now=now,
        )
        lead_tags_change(lead=lead, add=[tag], source="workspace", now=now)
        followups_mark(lead_ids=[lead.pk], at=now)
        _end_open(lead_ids=[lead.pk], reason=kind, now=now)
        update: dict[str, Any] = {"owner": None, "updated_at": now}
        if kind == Assignment.End.INVALID:
            update["do_not_contact"] = True
        Lead.objects.filter(pk=lead.pk).update(**update)


def task_done_by(*, touch_id: int, lead: Lead, by: User, now: datetime | None = None) -> bool:
    """The SDR sent a staff touch by hand: the task is done and counts as the follow-up."""
    from sequences.models import Touch
    from sequences.services import task_done

    now = now or timezone_now()
    touch = Touch.objects.filter(pk=touch_id, lead=lead).first()
    if touch is None:
        raise WorkspaceError("task", _("This task is not this lead's."))
    with transaction.atomic():
        done = task_done(touch=touch, by=by, now=now)
        if done:
            followups_mark(lead_ids=[lead.pk], at=now)
    return done


def task_snooze_by(*, touch_id: int, lead: Lead, until: datetime, now: datetime | None = None) -> bool:
    from sequences.models import Touch
    from sequences.services import task_snooze

    now = now or timezone_now()
    if until <= now:
        raise WorkspaceError("until", _("Snooze until a later time."))
    touch = Touch.objects.filter(pk=touch_id, lead=lead).first()
    if touch is None:
        raise WorkspaceError("task", _("This task is not this lead's."))
    return task_snooze(touch=touch, until=until)


def call_task_snooze(*, task_id: int, lead: Lead, until: datetime, now: datetime | None = None) -> bool:
    from channels.models import CallTask

    now = now or timezone_now()
    if until <= now:
        raise WorkspaceError("until", _("Snooze until a later time."))
    return bool(
        CallTask.objects.filter(pk=task_id, lead=lead, state=CallTask.State.OPEN).update(due_at=until)
    )
