from django.db import models
from django.utils.translation import gettext_lazy as _


class TickRun(models.Model):
    """One engine cycle: when it ran, for which instant, how long it took and what each step did."""

    now = models.DateTimeField(_("as of"))
    started_at = models.DateTimeField(_("started at"), db_index=True)
    seconds = models.FloatField(_("duration (s)"))
    steps = models.JSONField(_("steps"), default=dict)
    error = models.TextField(_("error"), blank=True, default="")

    class Meta:
        verbose_name = _("engine tick")
        verbose_name_plural = _("engine ticks")
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"tick {self.now:%Y-%m-%d %H:%M:%S}"


class OutboxMessage(models.Model):
    """A transition the product announces (`lead.mql`, `lead.stage_changed`, `pool.joined` …).

    Written in the same transaction as the change it describes, so nothing is announced that did not
    happen and nothing that happened is lost; the webhooks issue delivers them to subscribers.
    """

    type = models.CharField(_("type"), max_length=64)
    lead_id = models.BigIntegerField(_("lead"), null=True, blank=True)
    data = models.JSONField(_("data"), default=dict)
    occurred_at = models.DateTimeField(_("occurred at"))
    created_at = models.DateTimeField(_("recorded at"), auto_now_add=True)

    class Meta:
        verbose_name = _("outbox message")
        verbose_name_plural = _("outbox messages")
        indexes = [
            models.Index(fields=["type", "id"], name="outbox_type_id"),
            models.Index(fields=["lead_id", "id"], name="outbox_lead_id"),
        ]

    def __str__(self) -> str:
        return f"{self.type} #{self.lead_id}"
