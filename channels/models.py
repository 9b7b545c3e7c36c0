"""Channels: their health (circuit breaker), inbound payloads, WeCom staff, channel QR codes and moments,
call tasks, outbound webhooks and auto-tag rules."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _


class ChannelHealth(models.Model):
    """One row per channel: consecutive failures and, when the breaker is open, until when it waits."""

    channel = models.CharField(_("channel"), max_length=32, unique=True)
    consecutive_failures = models.PositiveIntegerField(_("failures in a row"), default=0)
    paused_until = models.DateTimeField(_("paused until"), null=True, blank=True)
    # When the breaker last closed again: lateness of touches that waited for it counts from here.
    resumed_at = models.DateTimeField(_("resumed at"), null=True, blank=True)
    last_error = models.TextField(_("last error"), blank=True, default="")
    last_failure_at = models.DateTimeField(_("last failure at"), null=True, blank=True)
    last_success_at = models.DateTimeField(_("last success at"), null=True, blank=True)

    class Meta:
        verbose_name = _("channel health")
        verbose_name_plural = _("channel health")
        ordering = ["channel"]

    def __str__(self) -> str:
        return self.channel


class InboundPayload(models.Model):
    """Every inbound callback, stored (decrypted) before anything acts on it; the dedupe key makes a
    replay a no-op."""

    class Source(models.TextChoices):
        WECOM = "wecom", _("WeCom")
        WECHAT_OA = "wechat_oa", _("WeChat official account")
        SMS_ALIYUN = "sms_aliyun", _("Aliyun SMS receipt")
        SMS_TENCENT = "sms_tencent", _("Tencent Cloud SMS receipt")
        EMAIL = "email", _("Email bounce")

    source = models.CharField(_("source"), max_length=16, choices=Source.choices)
    kind = models.CharField(_("kind"), max_length=64, blank=True, default="")
    dedupe_key = models.CharField(_("dedupe key"), max_length=255, unique=True)
    received_at = models.DateTimeField(_("received at"))
    body = models.JSONField(_("body"), default=dict)
    raw = models.TextField(_("raw payload"), blank=True, default="")
    processed_at = models.DateTimeField(_("processed at"), null=True, blank=True)
    attempts = models.PositiveIntegerField(_("attempts"), default=0)
    error = models.TextField(_("error"), blank=True, default="")

    class Meta:
        verbose_name = _("inbound payload")
        verbose_name_plural = _("inbound payloads")
        ordering = ["-received_at"]
        indexes = [
            models.Index(
                fields=["received_at"],
                name="inbound_unprocessed",
                condition=models.Q(processed_at__isnull=True),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.source} {self.kind} {self.dedupe_key}"


class WecomMember(models.Model):
    """A WeCom staff member (UserID) who follows up customers, and the user account they are here."""

    userid = models.CharField(_("WeCom UserID"), max_length=64, unique=True)
    name = models.CharField(_("name"), max_length=100, blank=True, default="")
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        verbose_name=_("user"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="wecom_member",
    )

    class Meta:
        verbose_name = _("WeCom staff member")
        verbose_name_plural = _("WeCom staff members")
        ordering = ["userid"]

    def __str__(self) -> str:
        return self.name or self.userid


class ContactWay(models.Model):
    """A channel QR code (渠道活码, `add_contact_way`): customers who add staff through it carry its
    `state`, which names the acquisition channel or campaign."""

    name = models.CharField(_("name"), max_length=100)
    state = models.CharField(
        _("state"), max_length=30, unique=True, help_text=_("Sent back by WeCom with every add (≤ 30 chars)")
    )
    source = models.CharField(_("source written to the lead"), max_length=64)
    campaign = models.CharField(_("campaign"), max_length=100, blank=True, default="")
    user_ids = models.JSONField(_("staff UserIDs"), default=list)
    skip_verify = models.BooleanField(_("add without verification"), default=True)
    tags = models.JSONField(_("tags given to leads added through it"), default=list, blank=True)
    welcome_text = models.TextField(_("welcome message"), blank=True, default="")
    config_id = models.CharField(_("WeCom config id"), max_length=64, blank=True, default="")
    qr_code = models.URLField(_("QR code"), max_length=500, blank=True, default="")
    error = models.TextField(_("last error"), blank=True, default="")
    active = models.BooleanField(_("active"), default=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    synced_at = models.DateTimeField(_("synced with WeCom at"), null=True, blank=True)

    class Meta:
        verbose_name = _("channel QR code")
        verbose_name_plural = _("channel QR codes")
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.state})"


class MomentTask(models.Model):
    """One WeCom moment for the leads whose touch of one step fell due on one local date: they are
    tagged with a per-step-and-date corp tag and the moment is visible to that tag only."""

    class State(models.TextChoices):
        TAGGING = "tagging", _("Tagging the leads")
        POSTING = "posting", _("Posting")  # add_moment_task called, its answer not recorded yet
        POSTED = "posted", _("Posted (task created)")
        PUBLISHED = "published", _("Published by staff")
        FAILED = "failed", _("Failed")

    step_id = models.BigIntegerField(_("step"))
    local_date = models.DateField(_("local date"))
    # A later batch of the same step and date, after the first moment was posted, is a new part.
    part = models.PositiveSmallIntegerField(_("part"), default=1)
    # The touches this moment is for, and those whose lead has been given the tag (resume after a crash).
    touch_ids = models.JSONField(_("touches"), default=list, blank=True)
    marked_ids = models.JSONField(_("touches tagged"), default=list, blank=True)
    senders = models.JSONField(_("staff UserIDs"), default=list, blank=True)
    tag_name = models.CharField(_("corp tag"), max_length=64)
    tag_id = models.CharField(_("corp tag id"), max_length=64, blank=True, default="")
    jobid = models.CharField(_("job id"), max_length=128, blank=True, default="")
    moment_id = models.CharField(_("moment id"), max_length=128, blank=True, default="")
    state = models.CharField(_("state"), max_length=16, choices=State.choices, default=State.TAGGING)
    error = models.TextField(_("error"), blank=True, default="")
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("WeCom moment")
        verbose_name_plural = _("WeCom moments")
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["step_id", "local_date", "part"], name="moment_step_date_part"),
        ]

    def __str__(self) -> str:
        return f"moment {self.tag_name}"


class CallTask(models.Model):
    """A phone call an SDR or owner is to make: from a touch on the `call` channel, or added by hand."""

    class State(models.TextChoices):
        OPEN = "open", _("Open")
        DONE = "done", _("Done")
        CANCELLED = "cancelled", _("Cancelled")

    class Outcome(models.TextChoices):
        CONNECTED = "connected", _("Connected")
        NO_ANSWER = "no_answer", _("No answer")
        WRONG_NUMBER = "wrong_number", _("Wrong number")
        CALL_BACK = "call_back", _("Call back later")

    lead = models.ForeignKey("leads.Lead", on_delete=models.CASCADE, related_name="call_tasks")
    touch = models.OneToOneField(
        "sequences.Touch", null=True, blank=True, on_delete=models.SET_NULL, related_name="call_task"
    )
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("assignee"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="call_tasks",
    )
    script = models.TextField(_("talking points"), blank=True, default="")
    due_at = models.DateTimeField(_("due at"))
    state = models.CharField(_("state"), max_length=12, choices=State.choices, default=State.OPEN)
    outcome = models.CharField(_("outcome"), max_length=16, choices=Outcome.choices, blank=True, default="")
    call_back_at = models.DateTimeField(_("call back at"), null=True, blank=True)
    notes = models.TextField(_("notes"), blank=True, default="")
    done_at = models.DateTimeField(_("done at"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        verbose_name = _("call task")
        verbose_name_plural = _("call tasks")
        ordering = ["due_at", "pk"]
        indexes = [
            models.Index(fields=["assignee", "state", "due_at"], name="calltask_assignee_open"),
            models.Index(fields=["lead", "state"], name="calltask_lead_state"),
        ]

    def __str__(self) -> str:
        return f"call #{self.lead_id} {self.state}"


class WebhookSubscription(models.Model):
    """A CRM's endpoint for outbox messages of some types, signed with its secret (CONTRACT §3)."""

    url = models.URLField(_("URL"), max_length=500)
    events = models.JSONField(_("event types"), default=list)
    secret = models.CharField(_("secret"), max_length=128)
    description = models.CharField(_("description"), max_length=200, blank=True, default="")
    active = models.BooleanField(_("active"), default=True)
    # The last outbox message fanned out to this subscription (a new one starts from its creation).
    outbox_cursor = models.BigIntegerField(_("outbox cursor"), default=0)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        verbose_name = _("webhook subscription")
        verbose_name_plural = _("webhook subscriptions")
        ordering = ["pk"]

    def __str__(self) -> str:
        return self.url


class WebhookDelivery(models.Model):
    """One outbox message to one subscription: attempts with backoff for 24 hours, then given up."""

    class State(models.TextChoices):
        PENDING = "pending", _("Pending")
        SENDING = "sending", _("Sending")
        DELIVERED = "delivered", _("Delivered")
        FAILED = "failed", _("Given up")

    subscription = models.ForeignKey(WebhookSubscription, on_delete=models.CASCADE, related_name="deliveries")
    message = models.ForeignKey("nurture.OutboxMessage", on_delete=models.CASCADE, related_name="deliveries")
    state = models.CharField(_("state"), max_length=12, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(_("attempts"), default=0)
    next_attempt_at = models.DateTimeField(_("next attempt at"))
    claimed_at = models.DateTimeField(_("claimed at"), null=True, blank=True)
    last_status = models.IntegerField(_("last HTTP status"), null=True, blank=True)
    last_error = models.TextField(_("last error"), blank=True, default="")
    last_response = models.TextField(_("last response (start)"), blank=True, default="")
    delivered_at = models.DateTimeField(_("delivered at"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"))

    class Meta:
        verbose_name = _("webhook delivery")
        verbose_name_plural = _("webhook deliveries")
        ordering = ["-pk"]
        constraints = [
            models.UniqueConstraint(fields=["subscription", "message"], name="delivery_subscription_message"),
        ]
        indexes = [models.Index(fields=["state", "next_attempt_at"], name="delivery_state_next")]

    def __str__(self) -> str:
        return f"delivery {self.pk} {self.state}"


class AutoTagRule(models.Model):
    """A tag given automatically by behaviour, evaluated set-based in the tick for dirty leads."""

    class Kind(models.TextChoices):
        MESSAGE_COUNT = "message_count", _("Sent ≥ N messages within D days")
        KEYWORD = "keyword", _("A message contains a keyword")
        NO_REPLY = "no_reply", _("No reply after ≥ N touches")
        CONTENT_TAG = "content_tag", _("Opened content with a tag")

    name = models.CharField(_("name"), max_length=100)
    kind = models.CharField(_("kind"), max_length=16, choices=Kind.choices)
    count = models.PositiveIntegerField(_("N"), null=True, blank=True)
    within_days = models.PositiveIntegerField(_("within D days"), null=True, blank=True)
    keywords = models.TextField(_("keywords"), blank=True, default="", help_text=_("One per line or comma"))
    content_tag = models.CharField(_("content tag"), max_length=128, blank=True, default="")
    tag_name = models.CharField(_("tag to add"), max_length=128, help_text=_("group:value"))
    active = models.BooleanField(_("active"), default=True)
    last_applied_at = models.DateTimeField(_("last applied at"), null=True, blank=True)
    last_applied_count = models.IntegerField(_("leads tagged last time"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        verbose_name = _("auto-tag rule")
        verbose_name_plural = _("auto-tag rules")
        ordering = ["pk"]

    def __str__(self) -> str:
        return self.name
