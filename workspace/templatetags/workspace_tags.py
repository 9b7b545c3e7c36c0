"""Template helpers of the workspace: SLA countdowns and durations in words."""

from __future__ import annotations

from datetime import datetime, timedelta

from django import template
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

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


# What the timeline calls the event types the engine knows (CONTRACT §3); others show as they are.
EVENT_LABELS = {
    "registered": gettext_lazy("registered"),
    "form_submitted": gettext_lazy("form submitted"),
    "wecom_added": gettext_lazy("added on WeCom"),
    "wecom_deleted": gettext_lazy("deleted on WeCom"),
    "message_in": gettext_lazy("message received"),
    "message_out": gettext_lazy("message sent"),
    "content_viewed": gettext_lazy("content viewed"),
    "link_clicked": gettext_lazy("link clicked"),
    "webinar_registered": gettext_lazy("webinar registration"),
    "webinar_attended": gettext_lazy("webinar attended"),
    "trial_started": gettext_lazy("trial started"),
    "call_logged": gettext_lazy("call"),
    "email_opened": gettext_lazy("email opened"),
    "email_bounced": gettext_lazy("email bounced"),
    "unsubscribed": gettext_lazy("unsubscribed"),
}


@register.filter
def event_label(event_type: str) -> str:
    return str(EVENT_LABELS.get(event_type, event_type))


@register.filter
def event_detail(summary: str, event_type: str) -> str:
    """The timeline summary without its leading "type: " (the type is shown beside it)."""
    prefix = f"{event_type}: "
    if summary == event_type:
        return ""
    return summary[len(prefix) :] if summary.startswith(prefix) else summary


@register.filter
def call_outcome(value: str) -> str:
    from channels.models import CallTask

    try:
        return str(CallTask.Outcome(value).label)
    except ValueError:
        return value


@register.filter
def person(user: object) -> str:
    from workspace.people import person_name

    return person_name(user)


@register.filter
def stage_label(value: str) -> str:
    from leads.models import Stage

    try:
        return str(Stage(value).label)
    except ValueError:
        return value or "—"
