"""SOP sequences on a relative-day timeline: the sequence and its steps, each lead's enrollment, and
every touch the engine schedules, sends or skips (CONTRACT §5)."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from leads.models import Lead


class TriggerType(models.TextChoices):
    MANUAL = "manual", _("Manual (API, admin, SDR)")
    POOL_ENTERED = "pool_entered", _("Entered a pool")
    WECOM_ADDED = "wecom_added", _("Added on WeCom")
    SILENT = "silent", _("Silent for N days")
    TAG_ADDED = "tag_added", _("Tag added")
    EVENT = "event", _("Event")
    STAGE_CHANGED = "stage_changed", _("Stage changed")


class SequenceStatus(models.TextChoices):
    ACTIVE = "active", _("Active")
    PAUSED = "paused", _("Paused")
    ARCHIVED = "archived", _("Archived")


class Channel(models.TextChoices):
    CONSOLE = "console", _("Console (records the send)")
    WECOM = "wecom", _("WeCom private message")
    WECOM_MOMENT = "wecom_moment", _("WeCom moments")
    WECHAT_OA = "wechat_oa", _("WeChat official account")
    SMS = "sms", _("SMS")
    EMAIL = "email", _("Email")
    CALL = "call", _("Phone call task")
    WEBHOOK = "webhook", _("Webhook")


def default_exit_stages() -> list[str]:
    return ["sql", "won", "lost"]


def default_reentry() -> str:
    return "never"


def default_quiet_hours() -> dict[str, str]:
    return {"start": "21:00", "end": "08:00"}


class Sequence(models.Model):
    name = models.CharField(_("name"), max_length=200)
    goal = models.TextField(_("goal"), blank=True, default="")
    status = models.CharField(
        _("status"), max_length=16, choices=SequenceStatus.choices, default=SequenceStatus.PAUSED
    )
    trigger = models.JSONField(
        _("trigger"), default=dict, help_text=_('e.g. {"type": "pool_entered", "pool": "value-high"}')
    )
    entry_rule = models.JSONField(_("entry rule"), null=True, blank=True)
    exit_rule = models.JSONField(_("exit rule"), null=True, blank=True)
    exit_stages = models.JSONField(_("exit stages"), default=default_exit_stages, blank=True)
    # "never" | "always" | {"after_days": N}
    reentry = models.JSONField(_("re-entry"), default=default_reentry)
    timezone = models.CharField(_("time zone"), max_length=64, default=settings.TIME_ZONE)
    quiet_hours = models.JSONField(_("quiet hours"), null=True, blank=True, default=default_quiet_hours)
    max_lateness_minutes = models.PositiveIntegerField(_("max lateness (minutes)"), default=24 * 60)
    # {"<channel>": touches per local day}; empty = the settings' default for every channel.
    caps = models.JSONField(_("frequency caps"), default=dict, blank=True)
    # {"hot": {"action": "assign_sdr"}, "warm": {"action": "enroll", "sequence": id},
    #  "cold": {"action": "tag", "tag": "value:low"}}
    on_complete = models.JSONField(_("on completion"), default=dict, blank=True)
    # Highest id of the trigger's source rows (memberships, events, tags, stage changes) already read;
    # null: start from the newest row when the sequence first runs (no backfill), 0: read them all.
    trigger_cursor = models.BigIntegerField(_("trigger cursor"), null=True, blank=True)
    # The silent trigger: the instant it last looked (leads whose silence began since then are new).
    trigger_checked_at = models.DateTimeField(_("trigger last checked at"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("sequence")
        verbose_name_plural = _("sequences")
        ordering = ["id"]

    def __str__(self) -> str:
        return self.name

    @property
    def trigger_type(self) -> str:
        return str((self.trigger or {}).get("type", TriggerType.MANUAL))


class StepMode(models.TextChoices):
    AUTO = "auto", _("Sent automatically")
    TASK = "task", _("Staff task")


class Step(models.Model):
    sequence = models.ForeignKey(Sequence, on_delete=models.CASCADE, related_name="steps")
    position = models.PositiveIntegerField(_("position"))
    day = models.PositiveIntegerField(_("day"))
    send_time = models.TimeField(_("send time"), null=True, blank=True)
    channel = models.CharField(_("channel"), max_length=32, choices=Channel.choices, default=Channel.CONSOLE)
    mode = models.CharField(_("mode"), max_length=8, choices=StepMode.choices, default=StepMode.AUTO)
    text = models.TextField(_("message template"), blank=True, default="")
    content = models.ForeignKey(
        "content.ContentAsset",
        verbose_name=_("content"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    recommended = models.BooleanField(_("recommended content"), default=False)
    condition = models.JSONField(_("condition"), null=True, blank=True)
    # The position to go to when the condition is false; null = skip this step.
    else_position = models.PositiveIntegerField(_("else: go to step"), null=True, blank=True)
    # {"event": type, "where": {}, "within_days": N, "then": position|null, "else": position|null}
    wait_for = models.JSONField(_("wait for"), null=True, blank=True)
    # Channel to use instead when this one's policy refuses (e.g. outside WeChat's 48-hour window).
    else_channel = models.CharField(_("fallback channel"), max_length=32, blank=True, default="")

    class Meta:
        verbose_name = _("step")
        verbose_name_plural = _("steps")
        ordering = ["sequence", "position"]
        constraints = [models.UniqueConstraint(fields=["sequence", "position"], name="step_position_unique")]

    def __str__(self) -> str:
        return f"#{self.position} day {self.day} {self.channel}"


class EnrollmentState(models.TextChoices):
    ACTIVE = "active", _("Active")
    PAUSED = "paused", _("Paused")
    COMPLETED = "completed", _("Completed")
    EXITED = "exited", _("Exited")


class Enrollment(models.Model):
    lead = models.ForeignKey(Lead, on_delete=models.CASCADE, related_name="enrollments")
    sequence = models.ForeignKey(Sequence, on_delete=models.CASCADE, related_name="enrollments")
    anchor_at = models.DateTimeField(_("anchor (day 0)"))
    state = models.CharField(
        _("state"), max_length=16, choices=EnrollmentState.choices, default=EnrollmentState.ACTIVE
    )
    # The position of the next step to fall due; past the last step: waiting for completion.
    position = models.PositiveIntegerField(_("next step position"), default=0)
    next_due_at = models.DateTimeField(_("next step due at"), null=True, blank=True)
    trigger = models.CharField(_("trigger"), max_length=64, blank=True, default="")
    entered_at = models.DateTimeField(_("entered at"))
    ended_at = models.DateTimeField(_("ended at"), null=True, blank=True)
    end_reason = models.CharField(_("end reason"), max_length=64, blank=True, default="")
    paused_at = models.DateTimeField(_("paused at"), null=True, blank=True)

    class Meta:
        verbose_name = _("enrollment")
        verbose_name_plural = _("enrollments")
        constraints = [
            models.UniqueConstraint(
                fields=["lead", "sequence"],
                condition=Q(state__in=["active", "paused"]),
                name="enrollment_one_active",
            )
        ]
        indexes = [
            models.Index(fields=["state", "next_due_at"], name="enrollment_due"),
            models.Index(fields=["sequence", "state"], name="enrollment_sequence_state"),
            models.Index(fields=["lead", "sequence", "entered_at"], name="enrollment_lead_seq_at"),
        ]

    def __str__(self) -> str:
        return f"{self.lead_id} in {self.sequence_id} ({self.state})"


class TouchState(models.TextChoices):
    SCHEDULED = "scheduled", _("Scheduled")
    SENDING = "sending", _("Sending")
    AWAITING_CONFIRM = "awaiting_confirm", _("Awaiting the staff member's confirmation")
    SENT = "sent", _("Sent")
    DELIVERED = "delivered", _("Delivered")
    FAILED = "failed", _("Failed")
    SKIPPED = "skipped", _("Skipped")
    TASK_OPEN = "task_open", _("Task open")
    TASK_DONE = "task_done", _("Task done")


# States after which nothing more happens to a touch (a task open or awaiting confirmation still may).
FINAL_STATES = ("sent", "delivered", "failed", "skipped", "task_done")
PENDING_STATES = ("scheduled", "sending")


class Touch(models.Model):
    enrollment = models.ForeignKey(Enrollment, on_delete=models.CASCADE, related_name="touches")
    step = models.ForeignKey(Step, null=True, on_delete=models.SET_NULL, related_name="touches")
    sequence = models.ForeignKey(Sequence, on_delete=models.CASCADE, related_name="touches")
    lead = models.ForeignKey(Lead, on_delete=models.CASCADE, related_name="touches")
    channel = models.CharField(_("channel"), max_length=32)
    mode = models.CharField(_("mode"), max_length=8, choices=StepMode.choices, default=StepMode.AUTO)
    due_at = models.DateTimeField(_("due at"))
    state = models.CharField(
        _("state"), max_length=20, choices=TouchState.choices, default=TouchState.SCHEDULED
    )
    attempts = models.PositiveIntegerField(_("attempts"), default=0)
    idempotency_key = models.CharField(_("idempotency key"), max_length=64, unique=True)
    provider_ref = models.CharField(_("provider reference"), max_length=128, blank=True, default="")
    # Handed to a dispatch task at (a touch whose task was lost is handed out again after a while).
    queued_at = models.DateTimeField(_("queued at"), null=True, blank=True)
    claimed_at = models.DateTimeField(_("claimed at"), null=True, blank=True)
    # Last asked what became of it (a touch awaiting a person's confirmation is polled every few minutes).
    checked_at = models.DateTimeField(_("checked at"), null=True, blank=True)
    sent_at = models.DateTimeField(_("sent at"), null=True, blank=True)
    error = models.TextField(_("error"), blank=True, default="")
    skip_reason = models.CharField(_("skip reason"), max_length=64, blank=True, default="")
    content_id = models.BigIntegerField(_("content asset"), null=True, blank=True)
    rendered = models.TextField(_("rendered content"), blank=True, default="")
    # Staff tasks: for whom, until when, escalated when.
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="touch_tasks"
    )
    task_deadline = models.DateTimeField(_("task deadline"), null=True, blank=True)
    escalated_at = models.DateTimeField(_("escalated at"), null=True, blank=True)
    done_at = models.DateTimeField(_("done at"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        verbose_name = _("touch")
        verbose_name_plural = _("touches")
        indexes = [
            models.Index(fields=["state", "due_at"], name="touch_state_due"),
            models.Index(fields=["lead", "channel", "due_at"], name="touch_lead_channel_due"),
            models.Index(fields=["enrollment", "state"], name="touch_enrollment_state"),
            models.Index(fields=["sequence", "state"], name="touch_sequence_state"),
            # Receipts and bounces find their touch by the provider's reference (SMS ids, message ids).
            models.Index(
                fields=["provider_ref"], name="touch_provider_ref", condition=~models.Q(provider_ref="")
            ),
        ]

    def __str__(self) -> str:
        return f"touch {self.pk} {self.channel} {self.state}"


class FailedTouch(Touch):
    """The dead-letter list: touches that failed (retries exhausted or refused), to look at and retry."""

    class Meta:
        proxy = True
        verbose_name = _("failed touch (dead letter)")
        verbose_name_plural = _("failed touches (dead letters)")
