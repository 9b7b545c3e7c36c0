"""Template helpers of the workspace: SLA countdowns and durations in words."""

from __future__ import annotations

from datetime import datetime, timedelta

from django import template
from django.utils.translation import gettext as _

register = template.Library()


def _span(delta: timedelta) -> str:
    minutes = int(abs(delta.total_seconds()) // 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    if days:
        return _("%(d)sd %(h)sh") % {"d": days, "h": hours}
    if hours:
        return _("%(h)sh %(m)smin") % {"h": hours, "m": mins}
    return _("%(m)smin") % {"m": mins}


@register.simple_tag
def sla_left(due: datetime | None, now: datetime) -> str:
    """ "2h 15min left" before the deadline, "overdue 30min" after."""
    if due is None:
        return ""
    delta = due - now
    if delta.total_seconds() >= 0:
        return _("%(span)s left") % {"span": _span(delta)}
    return _("overdue %(span)s") % {"span": _span(delta)}


@register.simple_tag
def since(at: datetime | None, now: datetime) -> str:
    """How long ago: "3h 5min"."""
    if at is None:
        return "—"
    return _span(now - at)
