"""Shared by the workspace's services: settings and the working calendar, who the SDRs are, the
errors, the inbox."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import Count, Exists, F, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.utils.timezone import now as timezone_now

from leads.models import Lead, Stage, Temperature
from workspace.calendar import WorkCalendar, calendar_build
from workspace.models import Assignment, Notification, SdrProfile, WorkspaceSettings

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


def _open(lead_ids: Iterable[int]) -> QuerySet[Assignment]:
    return Assignment.objects.filter(lead_id__in=list(lead_ids), ended_at__isnull=True)


def _end_open(*, lead_ids: Iterable[int], reason: str, now: datetime) -> int:
    return _open(lead_ids).update(ended_at=now, end_reason=reason)


def _leads_dirty(lead_ids: list[int], now: datetime) -> None:
    from leads.pools import leads_mark_dirty

    leads_mark_dirty(lead_ids=lead_ids, now=now)


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


def lead_label(lead: Lead) -> str:
    name = lead.name or lead.phone or lead.email or f"#{lead.pk}"
    return f"{name}（{lead.company}）" if lead.company else name


def _local(at: datetime, s: WorkspaceSettings) -> str:
    from zoneinfo import ZoneInfo

    return at.astimezone(ZoneInfo(s.timezone)).strftime("%m-%d %H:%M")


def hot_queue_leads(temperature: str = Temperature.HOT) -> QuerySet[Lead]:
    """The leads SDRs work, owned or not: hot (or warm, or "any" of both), contactable, not qualified or
    closed. The queue page and the claim read this one definition."""
    rows = Lead.objects.filter(do_not_contact=False).exclude(stage__in=CLOSED_STAGES)
    if temperature == "any":
        return rows.filter(temperature__in=(Temperature.HOT, Temperature.WARM))
    return rows.filter(temperature=temperature)
