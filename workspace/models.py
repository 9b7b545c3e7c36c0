"""The SDR workspace: who works which lead since when under which SLA (assignments), the team's
settings (working calendar, SLA hours, penalties, auto-assignment), SDR availability, notes on leads
and the in-app inbox."""

from __future__ import annotations

from datetime import time

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _


def _default(name: str, fallback: object) -> object:
    return getattr(settings, name, fallback)


def _sla_hours() -> int:
    return int(_default("NURTURE_SLA_WORKING_HOURS", 4))


def _escalate_hours() -> int:
    return int(_default("NURTURE_SLA_REASSIGN_HOURS", 4))


def _work_start() -> time:
    return time.fromisoformat(str(_default("NURTURE_WORKDAY_START", "09:00")))


def _work_end() -> time:
    return time.fromisoformat(str(_default("NURTURE_WORKDAY_END", "18:00")))


def _weekdays() -> str:
    return str(_default("NURTURE_WORKWEEK", "1,2,3,4,5"))


def _timezone() -> str:
    return str(settings.TIME_ZONE)


class WorkspaceSettings(models.Model):
    """The marketing–sales SLA (one row, editable in the admin; defaults from the environment)."""

    class Forward(models.TextChoices):
        NONE = "", _("in the workspace only")
        WECOM = "wecom", _("also to the SDR's WeCom")

    sla_working_hours = models.PositiveSmallIntegerField(
        _("first follow-up within (working hours)"), default=_sla_hours, validators=[MinValueValidator(1)]
    )
    warn_before_minutes = models.PositiveSmallIntegerField(
        _("warn this many minutes before the deadline"), default=60
    )
    reassign_after_hours = models.PositiveSmallIntegerField(
        _("reassign this many working hours after a breach"),
        default=_escalate_hours,
        validators=[MinValueValidator(1)],
    )
    penalty_breaches = models.PositiveSmallIntegerField(
        _("breaches that stop new assignments"), default=3, validators=[MinValueValidator(1)]
    )
    penalty_window_days = models.PositiveSmallIntegerField(
        _("counting breaches of the last (days)"), default=14, validators=[MinValueValidator(1)]
    )
    work_start = models.TimeField(_("working day starts"), default=_work_start)
    work_end = models.TimeField(_("working day ends"), default=_work_end)
    work_weekdays = models.CharField(
        _("working weekdays"),
        max_length=20,
        default=_weekdays,
        help_text=_("ISO weekdays, 1 = Monday … 7 = Sunday, e.g. 1,2,3,4,5"),
    )
    holidays = models.TextField(
        _("holidays"),
        blank=True,
        default="",
        help_text=_("Days off, one YYYY-MM-DD a line (e.g. 2026-10-01)"),
    )
    extra_workdays = models.TextField(
        _("make-up working days"),
        blank=True,
        default="",
        help_text=_("Weekend days that are working days (调休), one YYYY-MM-DD a line"),
    )
    timezone = models.CharField(_("time zone"), max_length=64, default=_timezone)
    auto_assign_after_minutes = models.PositiveSmallIntegerField(
        _("auto-assign hot leads unclaimed for (minutes)"),
        null=True,
        blank=True,
        default=30,
        help_text=_("Round-robin among available SDRs; empty = never, SDRs claim from the queue"),
    )
    forward = models.CharField(
        _("notifications"), max_length=12, choices=Forward.choices, blank=True, default=Forward.NONE
    )
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("SLA and assignment settings")
        verbose_name_plural = _("SLA and assignment settings")
        constraints = [
            models.CheckConstraint(
                condition=Q(work_end__gt=models.F("work_start")), name="workspace_day_order"
            )
        ]

    def __str__(self) -> str:
        return str(_("SLA and assignment settings"))


class SdrProfile(models.Model):
    """An SDR's availability for auto-assignment and where notifications are forwarded."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="sdr_profile"
    )
    available = models.BooleanField(
        _("available"), default=True, help_text=_("Off (on leave, in training): gets no new leads")
    )
    wecom_userid = models.CharField(_("WeCom UserID"), max_length=64, blank=True, default="")
    last_assigned_at = models.DateTimeField(_("last assigned at"), null=True, blank=True)
    # Written by the tick for display: no new assignments before this (breaches in the window).
    penalty_until = models.DateTimeField(_("no new leads until"), null=True, blank=True)

    class Meta:
        verbose_name = _("SDR profile")
        verbose_name_plural = _("SDR profiles")

    def __str__(self) -> str:
        return str(self.user)


class Assignment(models.Model):
    """One lead in one SDR's hands: from assignment until qualified, returned, reassigned or released.
    The SLA clock runs from `assigned_at` to `first_touch_due`."""

    class Via(models.TextChoices):
        CLAIM = "claim", _("claimed from the queue")
        AUTO = "auto", _("auto-assigned (round-robin)")
        MANAGER = "manager", _("assigned by the manager")
        SLA = "sla", _("reassigned after an SLA breach")
        SEQUENCE = "sequence", _("end of a sequence")

    class End(models.TextChoices):
        SQL = "sql", _("qualified (SQL)")
        RETURNED = "returned", _("returned to nurturing")
        UNREACHABLE = "unreachable", _("unreachable")
        INVALID = "invalid", _("invalid")
        REASSIGNED = "reassigned", _("reassigned")
        SLA = "sla", _("taken away after an SLA breach")
        RELEASED = "released", _("released to the queue")

    lead = models.ForeignKey("leads.Lead", on_delete=models.CASCADE, related_name="assignments")
    sdr = models.ForeignKey(
        settings.AUTH_USER_MODEL, verbose_name=_("SDR"), on_delete=models.CASCADE, related_name="assignments"
    )
    via = models.CharField(_("how"), max_length=12, choices=Via.choices)
    by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("assigned by"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    assigned_at = models.DateTimeField(_("assigned at"))
    first_touch_due = models.DateTimeField(_("first follow-up due"))
    followed_up_at = models.DateTimeField(_("followed up at"), null=True, blank=True)
    warned_at = models.DateTimeField(_("warned at"), null=True, blank=True)
    breached_at = models.DateTimeField(_("SLA breached at"), null=True, blank=True)
    reassign_at = models.DateTimeField(_("reassign at"), null=True, blank=True)
    ended_at = models.DateTimeField(_("ended at"), null=True, blank=True)
    end_reason = models.CharField(_("end"), max_length=12, choices=End.choices, blank=True, default="")

    class Meta:
        verbose_name = _("assignment")
        verbose_name_plural = _("assignments")
        constraints = [
            models.UniqueConstraint(
                fields=["lead"], condition=Q(ended_at__isnull=True), name="assignment_one_open_per_lead"
            )
        ]
        indexes = [
            models.Index(fields=["sdr", "assigned_at"], name="assignment_sdr_at"),
            models.Index(fields=["lead", "assigned_at"], name="assignment_lead_at"),
            # The tick's SLA checks read only the open assignments not yet followed up.
            models.Index(
                fields=["first_touch_due"],
                name="assignment_sla_open",
                condition=Q(ended_at__isnull=True, followed_up_at__isnull=True),
            ),
            models.Index(
                fields=["sdr", "breached_at"],
                name="assignment_breaches",
                condition=Q(breached_at__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"lead {self.lead_id} → {self.sdr_id} ({self.via})"

    @property
    def is_open(self) -> bool:
        return self.ended_at is None


class LeadNote(models.Model):
    lead = models.ForeignKey("leads.Lead", on_delete=models.CASCADE, related_name="notes")
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("author"),
        null=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    text = models.TextField(_("note"))
    created_at = models.DateTimeField(_("created at"))

    class Meta:
        verbose_name = _("note")
        verbose_name_plural = _("notes")
        indexes = [models.Index(fields=["lead", "created_at"], name="leadnote_lead_at")]

    def __str__(self) -> str:
        return self.text[:40]


class Notification(models.Model):
    """An item of a user's in-app inbox; forwarded to the user's WeCom when the settings say so."""

    class Kind(models.TextChoices):
        ASSIGNED = "assigned", _("new hot lead assigned")
        SLA_WARNING = "sla_warning", _("SLA about to be breached")
        SLA_BREACHED = "sla_breached", _("SLA breached")
        ESCALATION = "escalation", _("escalation")
        REASSIGNED = "reassigned", _("lead taken away")

    class Forward(models.TextChoices):
        NONE = "", _("not forwarded")
        PENDING = "pending", _("to forward")
        SENT = "sent", _("forwarded")
        FAILED = "failed", _("forwarding failed")

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications")
    kind = models.CharField(_("kind"), max_length=16, choices=Kind.choices)
    lead = models.ForeignKey("leads.Lead", null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    assignment = models.ForeignKey(
        Assignment, null=True, blank=True, on_delete=models.CASCADE, related_name="notifications"
    )
    text = models.CharField(_("text"), max_length=300)
    created_at = models.DateTimeField(_("created at"))
    read_at = models.DateTimeField(_("read at"), null=True, blank=True)
    forward_state = models.CharField(
        _("forwarding"), max_length=8, choices=Forward.choices, blank=True, default=Forward.NONE
    )
    forward_error = models.CharField(_("forwarding error"), max_length=300, blank=True, default="")

    class Meta:
        verbose_name = _("notification")
        verbose_name_plural = _("notifications")
        constraints = [
            # The tick runs every minute, twice at once sometimes: one notice per user, kind and assignment.
            models.UniqueConstraint(
                fields=["user", "kind", "assignment"],
                condition=Q(assignment__isnull=False),
                name="notification_once",
            )
        ]
        indexes = [
            models.Index(fields=["user", "created_at"], name="notification_user_at"),
            models.Index(fields=["user"], name="notification_unread", condition=Q(read_at__isnull=True)),
            models.Index(
                fields=["created_at"], name="notification_to_forward", condition=Q(forward_state="pending")
            ),
        ]

    def __str__(self) -> str:
        return self.text
