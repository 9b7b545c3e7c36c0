"""The SDR workspace's writes: assignment (claim, round-robin, by the manager), the SLA (follow-up,
warning, breach, escalation, reassignment, penalties), the SDR's actions on a lead, the inbox.

Every write that the tick or two browsers can race on is a conditional UPDATE or runs under a row lock,
and one lead has at most one open assignment (a partial unique index), so nothing is assigned twice."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Count, Exists, F, Min, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.utils.timezone import now as timezone_now
from django.utils.translation import gettext as _

from leads.models import Event, Lead, RecycleReason, Stage, Temperature
from nurture.outbox import outbox_put
from workspace.calendar import WorkCalendar, calendar_build
from workspace.models import Assignment, LeadNote, Notification, SdrProfile, WorkspaceSettings
from workspace.people import person_name

logger = logging.getLogger(__name__)

User = Any  # the auth user model (get_user_model()), typed loosely: it is swappable

# Stages an SDR no longer works: the lead left the hot queue.
CLOSED_STAGES = (Stage.SQL, Stage.WON, Stage.LOST)
# Events that count as the SDR's follow-up (a logged call, a message the SDR sent on WeCom).
FOLLOW_UP_EVENTS = ("call_logged", "message_out")
# The tick's statements work through at most this many rows each.
TICK_BATCH = 2000
# BANT criteria needed to qualify without an override reason.
SQL_MIN_BANT = 3


class WorkspaceError(Exception):
    """An action that cannot be done, with the field it is about and a message for the SDR."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class ClaimLost(WorkspaceError):
    """Another SDR claimed the lead first (or it is no longer in the queue)."""


# --- Settings and the calendar.


def workspace_settings_get() -> WorkspaceSettings:
    row, _created = WorkspaceSettings.objects.get_or_create(pk=1)
    return row


def work_calendar(settings_row: WorkspaceSettings | None = None) -> WorkCalendar:
    s = settings_row or workspace_settings_get()
    return calendar_build(
        timezone=s.timezone,
        start=s.work_start,
        end=s.work_end,
        weekdays=s.work_weekdays,
        holidays=s.holidays,
        extra_workdays=s.extra_workdays,
    )


def sla_first_touch_due(*, assigned_at: datetime, settings_row: WorkspaceSettings | None = None) -> datetime:
    """`assigned_at` + the SLA's working hours in the working calendar."""
    s = settings_row or workspace_settings_get()
    return work_calendar(s).add_working_time(assigned_at, timedelta(hours=s.sla_working_hours))


# --- Who may get new leads.


def sdrs_penalised(*, now: datetime, settings_row: WorkspaceSettings | None = None) -> dict[int, datetime]:
    """SDRs with at least K breaches in the window: id → when the window clears (the moment the K-th most
    recent breach leaves it)."""
    s = settings_row or workspace_settings_get()
    since = now - timedelta(days=s.penalty_window_days)
    counts = (
        Assignment.objects.filter(breached_at__gte=since)
        .values("sdr_id")
        .annotate(n=Count("pk"))
        .filter(n__gte=s.penalty_breaches)
    )
    blocked = {row["sdr_id"]: row["n"] for row in counts}
    out: dict[int, datetime] = {}
    for sdr_id, n in blocked.items():
        # With n breaches in the window, it clears when n - K + 1 of them have aged out.
        breaches = list(
            Assignment.objects.filter(sdr_id=sdr_id, breached_at__gte=since)
            .order_by("breached_at")
            .values_list("breached_at", flat=True)[: n - s.penalty_breaches + 1]
        )
        out[sdr_id] = breaches[-1] + timedelta(days=s.penalty_window_days)
    return out


def sdrs_team() -> QuerySet:
    """The active SDRs (group `sdr`)."""
    return get_user_model().objects.filter(is_active=True, groups__name="sdr").distinct()


def sdrs_managers() -> QuerySet:
    return get_user_model().objects.filter(is_active=True, groups__name="sdr_manager").distinct()


def sdrs_for_round_robin(*, now: datetime, exclude: Iterable[int] = ()) -> list[User]:
    """Available SDRs not in a penalty period, the one assigned longest ago first (never: first of all),
    then the one owning the fewest leads. Unavailable: the profile says so, or a member of the group
    `sdr_unavailable` (a quick switch in the admin)."""
    blocked = set(sdrs_penalised(now=now)) | set(exclude)
    unavailable = SdrProfile.objects.filter(user=OuterRef("pk"), available=False)
    last = SdrProfile.objects.filter(user=OuterRef("pk")).values("last_assigned_at")[:1]
    owned = (
        Lead.objects.filter(owner=OuterRef("pk"))
        .order_by()
        .values("owner")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return list(
        sdrs_team()
        .exclude(pk__in=blocked)
        .exclude(Exists(unavailable))
        .exclude(groups__name="sdr_unavailable")
        .annotate(last_assigned=Subquery(last), owned=Coalesce(Subquery(owned), 0))
        .order_by(F("last_assigned").asc(nulls_first=True), "owned", "pk")
    )


# --- Assignment.


def _open(lead_ids: Iterable[int]) -> QuerySet[Assignment]:
    return Assignment.objects.filter(lead_id__in=list(lead_ids), ended_at__isnull=True)


def _assign_rows(
    *,
    pairs: Sequence[tuple[int, int]],
    via: str,
    by: User | None,
    now: datetime,
    settings_row: WorkspaceSettings,
) -> list[Assignment]:
    """Open an assignment per (lead, sdr) whose lead row is already the SDR's (owner written, row locked),
    notify the SDRs, stamp their last assignment and tell the CRM (`lead.assigned`)."""
    if not pairs:
        return []
    due = sla_first_touch_due(assigned_at=now, settings_row=settings_row)
    rows = Assignment.objects.bulk_create(
        [
            Assignment(
                lead_id=lead_id,
                sdr_id=sdr_id,
                via=via,
                by=by if getattr(by, "pk", None) else None,
                assigned_at=now,
                first_touch_due=due,
            )
            for lead_id, sdr_id in pairs
        ]
    )
    for sdr_id in {sdr_id for _lead, sdr_id in pairs}:
        SdrProfile.objects.update_or_create(user_id=sdr_id, defaults={"last_assigned_at": now})
    leads = Lead.objects.in_bulk([lead_id for lead_id, _sdr in pairs])
    notifications_add(
        items=[
            (
                a.sdr_id,
                Notification.Kind.ASSIGNED,
                a,
                _("New hot lead for you: %(lead)s — first follow-up by %(due)s")
                % {"lead": lead_label(leads[a.lead_id]), "due": _local(due, settings_row)},
            )
            for a in rows
        ],
        now=now,
        settings_row=settings_row,
    )
    usernames = dict(
        get_user_model().objects.filter(pk__in={s for _l, s in pairs}).values_list("pk", "username")
    )
    outbox_put(
        type="lead.assigned",
        lead_ids=[lead_id for lead_id, _sdr in pairs],
        occurred_at=now,
        data_by_lead={
            lead_id: {"owner": usernames.get(sdr_id), "via": via, "first_touch_due": due.isoformat()}
            for lead_id, sdr_id in pairs
        },
    )
    return rows


def _end_open(*, lead_ids: Iterable[int], reason: str, now: datetime) -> int:
    return _open(lead_ids).update(ended_at=now, end_reason=reason)


def lead_claim(*, lead: Lead, sdr: User, now: datetime | None = None) -> Assignment:
    """The SDR takes an unassigned hot lead. Two SDRs at once: the first UPDATE wins, the other gets
    ClaimLost naming the winner. An SDR in a penalty period cannot claim."""
    now = now or timezone_now()
    s = workspace_settings_get()
    if sdr.pk in sdrs_penalised(now=now, settings_row=s):
        raise WorkspaceError(
            "sdr", _("You are in a penalty period after repeated SLA breaches: no new leads.")
        )
    with transaction.atomic():
        taken = hot_queue_leads().filter(pk=lead.pk, owner__isnull=True).update(owner=sdr, updated_at=now)
        if not taken:
            owner = get_user_model().objects.filter(owned_leads=lead.pk).first()
            if owner is None:
                raise WorkspaceError("lead", _("This lead is no longer in the hot queue."))
            who = person_name(owner)
            raise ClaimLost("lead", _("Already claimed by %(who)s.") % {"who": who})
        _end_open(lead_ids=[lead.pk], reason=Assignment.End.RELEASED, now=now)
        (assignment,) = _assign_rows(
            pairs=[(lead.pk, sdr.pk)], via=Assignment.Via.CLAIM, by=sdr, now=now, settings_row=s
        )
        _tasks_follow({lead.pk: sdr.pk})
    _leads_dirty([lead.pk], now)
    return assignment


def leads_assign(
    *,
    lead_ids: Iterable[int],
    via: str,
    now: datetime,
    sdr: User | None = None,
    by: User | None = None,
    only_unowned: bool = True,
    exclude_sdrs: Iterable[int] = (),
) -> dict[int, int]:
    """Give leads to `sdr`, or round-robin among the available SDRs out of a penalty period. Leads locked
    by another writer are skipped (the next tick takes them). Returns lead id → SDR id."""
    ids = sorted({int(i) for i in lead_ids})
    if not ids:
        return {}
    s = workspace_settings_get()
    sdrs = [sdr] if sdr is not None else sdrs_for_round_robin(now=now, exclude=exclude_sdrs)
    if not sdrs:
        return {}
    with transaction.atomic():
        rows = Lead.objects.select_for_update(skip_locked=True).filter(pk__in=ids)
        if only_unowned:
            rows = rows.filter(owner__isnull=True)
        locked = list(rows.order_by("pk").values_list("pk", flat=True))
        if not locked:
            return {}
        pairs = [(lead_id, sdrs[i % len(sdrs)].pk) for i, lead_id in enumerate(locked)]
        by_sdr: dict[int, list[int]] = {}
        for lead_id, sdr_id in pairs:
            by_sdr.setdefault(sdr_id, []).append(lead_id)
        for sdr_id, sdr_leads in by_sdr.items():  # one statement per SDR, not per lead
            Lead.objects.filter(pk__in=sdr_leads).update(owner_id=sdr_id, updated_at=now)
        _end_open(lead_ids=locked, reason=Assignment.End.REASSIGNED, now=now)
        _assign_rows(pairs=pairs, via=via, by=by, now=now, settings_row=s)
        _tasks_follow(dict(pairs))
    _leads_dirty(locked, now)
    return dict(pairs)


def _tasks_follow(lead_owners: dict[int, int]) -> None:
    """The open staff and call tasks of the leads go to their new owner."""
    from channels.calls import call_tasks_reassign
    from sequences.services import tasks_reassign

    tasks_reassign(lead_owners=lead_owners)
    call_tasks_reassign(lead_owners=lead_owners)


def leads_reassign(*, lead_ids: Iterable[int], sdr: User, by: User, now: datetime | None = None) -> int:
    """A manager moves leads to another SDR (the previous SDR is told). Penalties do not stop a manager."""
    now = now or timezone_now()
    ids = list(lead_ids)
    previous = dict(_open(ids).exclude(sdr=sdr).values_list("lead_id", "sdr_id"))
    done = leads_assign(lead_ids=ids, via=Assignment.Via.MANAGER, now=now, sdr=sdr, by=by, only_unowned=False)
    _notify_taken_away(previous={k: v for k, v in previous.items() if k in done}, now=now)
    return len(done)


def lead_release(*, lead: Lead, sdr: User, now: datetime | None = None) -> bool:
    """The SDR gives a lead back to the queue (another SDR can claim it)."""
    now = now or timezone_now()
    with transaction.atomic():
        released = Lead.objects.filter(pk=lead.pk, owner=sdr).update(owner=None, updated_at=now)
        if released:
            _end_open(lead_ids=[lead.pk], reason=Assignment.End.RELEASED, now=now)
    if released:
        _leads_dirty([lead.pk], now)
    return bool(released)


def _leads_dirty(lead_ids: list[int], now: datetime) -> None:
    from leads.pools import leads_mark_dirty

    leads_mark_dirty(lead_ids=lead_ids, now=now)


# --- The SDR's actions on a lead.


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


# --- The inbox.


def notifications_add(
    *,
    items: Iterable[tuple[int, str, Assignment | None, str]],
    now: datetime,
    settings_row: WorkspaceSettings | None = None,
) -> int:
    """(user id, kind, assignment, text) into the users' inboxes, once per user, kind and assignment."""
    s = settings_row or workspace_settings_get()
    forward = Notification.Forward.PENDING if s.forward else Notification.Forward.NONE
    rows = [
        Notification(
            user_id=user_id,
            kind=kind,
            assignment=assignment,
            lead_id=assignment.lead_id if assignment is not None else None,
            text=text[:300],
            created_at=now,
            forward_state=forward,
        )
        for user_id, kind, assignment, text in items
    ]
    return len(Notification.objects.bulk_create(rows, ignore_conflicts=True))


def notifications_read(*, user: User, ids: Iterable[int] | None = None, now: datetime | None = None) -> int:
    rows = Notification.objects.filter(user=user, read_at__isnull=True)
    if ids is not None:
        rows = rows.filter(pk__in=list(ids))
    return rows.update(read_at=now or timezone_now())


def _notify_taken_away(*, previous: dict[int, int], now: datetime, after_breach: bool = False) -> None:
    if not previous:
        return
    latest = {
        a.lead_id: a
        for a in Assignment.objects.filter(lead_id__in=list(previous), sdr_id__in=set(previous.values()))
        .order_by("assigned_at")
        .select_related("lead")
    }
    notifications_add(
        items=[
            (
                sdr_id,
                Notification.Kind.REASSIGNED,
                latest[lead_id],
                (
                    _("%(lead)s was taken from you after the SLA breach")
                    if after_breach
                    else _("%(lead)s was given to another SDR")
                )
                % {"lead": lead_label(latest[lead_id].lead)},
            )
            for lead_id, sdr_id in previous.items()
            if lead_id in latest
        ],
        now=now,
    )


def lead_label(lead: Lead) -> str:
    name = lead.name or lead.phone or lead.email or f"#{lead.pk}"
    return f"{name}（{lead.company}）" if lead.company else name


def _local(at: datetime, s: WorkspaceSettings) -> str:
    from zoneinfo import ZoneInfo

    return at.astimezone(ZoneInfo(s.timezone)).strftime("%m-%d %H:%M")


# --- The tick: SLA, escalation, penalties, auto-assignment (set-based).


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


def hot_queue_leads() -> QuerySet[Lead]:
    """The leads of the hot queue, owned or not."""
    return Lead.objects.filter(temperature=Temperature.HOT, do_not_contact=False).exclude(
        stage__in=CLOSED_STAGES
    )


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
