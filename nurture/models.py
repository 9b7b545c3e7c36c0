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
