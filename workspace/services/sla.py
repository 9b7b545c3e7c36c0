"""The tick's SLA pass: follow-ups, warnings, breaches and escalation, reassignment, penalties,
auto-assignment (set-based)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Exists, Min, OuterRef, Q, QuerySet, Subquery
from django.utils.translation import gettext as _

from leads.models import Event, Lead, Stage
from nurture.outbox import outbox_put
from workspace.models import Assignment, Notification, SdrProfile, WorkspaceSettings
from workspace.people import person_name
from workspace.services.assignment import _notify_taken_away, leads_assign
from workspace.services.common import (
    FOLLOW_UP_EVENTS,
    TICK_BATCH,
    _local,
    _open,
    hot_queue_leads,
    lead_label,
    notifications_add,
    sdrs_managers,
    sdrs_penalised,
    work_calendar,
    workspace_settings_get,
)


@dataclass
class _Counts:
    ended: int = 0
    followed_up: int = 0
    warned: int = 0
    breached: int = 0
    reassigned: int = 0
    auto_assigned: int = 0
    penalised: int = 0
    forwarded: int = 0

    def as_dict(self) -> dict[str, int]:
        return {k: v for k, v in self.__dict__.items() if v}


def workspace_tick(now: datetime) -> dict[str, int]:
    """One pass of the SLA as of `now`: follow-ups found in events and staff tasks, warnings before the
    deadline, breaches (flag, SDR and managers told, `lead.sla_breached`), reassignment M working hours
    after a breach, penalty periods, auto-assignment of hot leads left unclaimed, WeCom forwarding."""
    s = workspace_settings_get()
    counts = _Counts()
    counts.ended = _assignments_end_stale(now)
    counts.followed_up = _followups_find(now)
    soon = now + timedelta(minutes=s.warn_before_minutes)
    # Most minutes no deadline is near: one indexed look instead of three (a breach is due before `soon`).
    if _sla_waiting().filter(first_touch_due__lte=soon).exists():
        counts.warned = _sla_warn(now, s)
        counts.breached = _sla_breach(now, s)
        counts.reassigned = _sla_reassign(now, s)
    counts.penalised = _penalties_write(now, s)
    counts.auto_assigned = _auto_assign(now, s)
    if s.forward:
        from workspace.forwarding import notifications_forward

        counts.forwarded = notifications_forward(now=now)
    return counts.as_dict()


def _assignments_end_stale(now: datetime) -> int:
    """Assignments whose lead moved on outside the workspace end: qualified, won or lost by the CRM's
    write-back (`sql`, or `released` for won/lost), or given another owner (the API, the admin)."""
    open_rows = Assignment.objects.filter(ended_at__isnull=True)
    ended = open_rows.filter(lead__stage=Stage.SQL).update(ended_at=now, end_reason=Assignment.End.SQL)
    ended += open_rows.filter(lead__stage__in=(Stage.WON, Stage.LOST)).update(
        ended_at=now, end_reason=Assignment.End.RELEASED
    )
    moved = Lead.objects.filter(pk=OuterRef("lead_id"), owner_id=OuterRef("sdr_id"))
    ended += (
        Assignment.objects.filter(ended_at__isnull=True)
        .exclude(Exists(moved))
        .update(ended_at=now, end_reason=Assignment.End.REASSIGNED)
    )
    return ended


def _followups_find(now: datetime) -> int:
    """Open assignments not followed up whose lead has a call logged or a message sent since assignment,
    or a staff task done: followed up at the first of those."""
    from sequences.models import Touch, TouchState

    waiting = Assignment.objects.filter(
        ended_at__isnull=True, followed_up_at__isnull=True, assigned_at__lte=now
    )
    first_event = (
        Event.objects.filter(
            lead_id=OuterRef("lead_id"),
            type__in=FOLLOW_UP_EVENTS,
            occurred_at__gte=OuterRef("assigned_at"),
            occurred_at__lte=now,
        )
        .order_by()
        .values("lead_id")
        .annotate(first=Min("occurred_at"))
        .values("first")[:1]
    )
    first_task = (
        Touch.objects.filter(
            lead_id=OuterRef("lead_id"),
            state=TouchState.TASK_DONE,
            done_at__gte=OuterRef("assigned_at"),
            done_at__lte=now,
        )
        .order_by()
        .values("lead_id")
        .annotate(first=Min("done_at"))
        .values("first")[:1]
    )
    found = list(
        waiting.annotate(by_event=Subquery(first_event), by_task=Subquery(first_task))
        .filter(Q(by_event__isnull=False) | Q(by_task__isnull=False))
        .values_list("pk", "by_event", "by_task")[:TICK_BATCH]
    )
    for pk, by_event, by_task in found:  # rows only where a follow-up happened (a few per minute)
        at = min(t for t in (by_event, by_task) if t is not None)
        Assignment.objects.filter(pk=pk, followed_up_at__isnull=True).update(followed_up_at=at)
    return len(found)


def _sla_waiting() -> QuerySet[Assignment]:
    return Assignment.objects.filter(ended_at__isnull=True, followed_up_at__isnull=True)


def _sla_warn(now: datetime, s: WorkspaceSettings) -> int:
    if not s.warn_before_minutes:
        return 0
    soon = now + timedelta(minutes=s.warn_before_minutes)
    with transaction.atomic():
        rows = list(
            _sla_waiting()
            .select_for_update(skip_locked=True)
            .filter(
                warned_at__isnull=True,
                breached_at__isnull=True,
                first_touch_due__gt=now,
                first_touch_due__lte=soon,
            )
            .select_related("lead")[:TICK_BATCH]
        )
        if not rows:
            return 0
        Assignment.objects.filter(pk__in=[a.pk for a in rows]).update(warned_at=now)
        notifications_add(
            items=[
                (
                    a.sdr_id,
                    Notification.Kind.SLA_WARNING,
                    a,
                    _("SLA: follow up %(lead)s by %(due)s")
                    % {"lead": lead_label(a.lead), "due": _local(a.first_touch_due, s)},
                )
                for a in rows
            ],
            now=now,
            settings_row=s,
        )
    return len(rows)


def _sla_breach(now: datetime, s: WorkspaceSettings) -> int:
    cal = work_calendar(s)
    with transaction.atomic():
        rows = list(
            _sla_waiting()
            .select_for_update(skip_locked=True)
            .filter(breached_at__isnull=True, first_touch_due__lte=now)
            .select_related("lead", "sdr")[:TICK_BATCH]
        )
        if not rows:
            return 0
        reassign_at = {
            a.pk: cal.add_working_time(a.first_touch_due, timedelta(hours=s.reassign_after_hours))
            for a in rows
        }
        for a in rows:  # each its own reassignment time (a handful per tick)
            Assignment.objects.filter(pk=a.pk).update(breached_at=now, reassign_at=reassign_at[a.pk])
        managers = list(sdrs_managers().values_list("pk", flat=True))
        items: list[tuple[int, str, Assignment | None, str]] = []
        for a in rows:
            label = lead_label(a.lead)
            sdr_name = person_name(a.sdr)
            items.append(
                (
                    a.sdr_id,
                    Notification.Kind.SLA_BREACHED,
                    a,
                    _("SLA breached: %(lead)s was not followed up in time") % {"lead": label},
                )
            )
            items.extend(
                (
                    m,
                    Notification.Kind.ESCALATION,
                    a,
                    _("Escalation: %(sdr)s did not follow up %(lead)s in time (reassigned at %(at)s)")
                    % {"sdr": sdr_name, "lead": label, "at": _local(reassign_at[a.pk], s)},
                )
                for m in managers
            )
        notifications_add(items=items, now=now, settings_row=s)
        outbox_put(
            type="lead.sla_breached",
            lead_ids=[a.lead_id for a in rows],
            occurred_at=now,
            data_by_lead={
                a.lead_id: {"owner": a.sdr.username, "first_touch_due": a.first_touch_due.isoformat()}
                for a in rows
            },
        )
    return len(rows)


def _sla_reassign(now: datetime, s: WorkspaceSettings) -> int:
    """Breached and still not followed up M working hours later: the lead goes to the next SDR."""
    late = list(
        _sla_waiting()
        .filter(breached_at__isnull=False, reassign_at__lte=now)
        .values_list("lead_id", "sdr_id")[:TICK_BATCH]
    )
    if not late:
        return 0
    moved = 0
    by_old: dict[int, list[int]] = {}
    for lead_id, sdr_id in late:
        by_old.setdefault(sdr_id, []).append(lead_id)
    for old_sdr, lead_ids in by_old.items():
        with transaction.atomic():
            # Ends the breached assignment `sla` first, so leads_assign's `reassigned` ending does not apply.
            still = list(
                _sla_waiting()
                .select_for_update(skip_locked=True)
                .filter(lead_id__in=lead_ids, sdr_id=old_sdr, reassign_at__lte=now)
                .values_list("lead_id", flat=True)
            )
            if not still:
                continue
            _open(still).update(ended_at=now, end_reason=Assignment.End.SLA)
            Lead.objects.filter(pk__in=still, owner_id=old_sdr).update(owner=None, updated_at=now)
            done = leads_assign(lead_ids=still, via=Assignment.Via.SLA, now=now, exclude_sdrs=[old_sdr])
            moved += len(done)
            # Without another SDR free the lead waits in the queue: taken from the SDR either way.
            _notify_taken_away(previous=dict.fromkeys(still, old_sdr), now=now, after_breach=True)
    return moved


def _penalties_write(now: datetime, s: WorkspaceSettings) -> int:
    """Profiles show who is in a penalty period until when (the assignment code asks sdrs_penalised)."""
    blocked = sdrs_penalised(now=now, settings_row=s)
    SdrProfile.objects.exclude(user_id__in=list(blocked)).filter(penalty_until__isnull=False).update(
        penalty_until=None
    )
    for sdr_id, until in blocked.items():
        SdrProfile.objects.update_or_create(user_id=sdr_id, defaults={"penalty_until": until})
    return len(blocked)


def _auto_assign(now: datetime, s: WorkspaceSettings) -> int:
    """Hot leads unclaimed for the configured minutes go round-robin to the available SDRs."""
    if s.auto_assign_after_minutes is None:
        return 0
    from scoring.models import LeadScore

    cutoff = now - timedelta(minutes=s.auto_assign_after_minutes)
    waited = LeadScore.objects.filter(lead_id=OuterRef("pk"), hot_since__lte=cutoff)
    recently_released = Assignment.objects.filter(lead_id=OuterRef("pk"), ended_at__gt=cutoff)
    ids = list(
        hot_queue_leads()
        .filter(owner__isnull=True)
        .filter(Exists(waited))
        .exclude(Exists(recently_released))
        .order_by("-score", "pk")
        .values_list("pk", flat=True)[:TICK_BATCH]
    )
    return len(leads_assign(lead_ids=ids, via=Assignment.Via.AUTO, now=now))


def assignment_for(*, lead: Lead) -> Assignment | None:
    return _open([lead.pk]).select_related("sdr").first()
