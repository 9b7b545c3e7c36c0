"""The admin's view of the channels: configured or not (and which settings are missing), the circuit
breaker (paused until, failures in a row, last error, "resume now"), and the dead-letter list of failed
touches with "retry now"."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join
from django.utils.timezone import now as timezone_now
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from channels.breaker import channel_resume
from channels.models import ChannelHealth
from channels.registry import channels_status
from sequences.admin import TouchAdmin
from sequences.models import Channel, FailedTouch, TouchState
from sequences.sending import touches_retry_now


@admin.register(ChannelHealth)
class ChannelHealthAdmin(admin.ModelAdmin):
    list_display = [
        "channel_display",
        "configuration",
        "breaker",
        "consecutive_failures",
        "last_failure_at",
        "last_success_at",
        "last_error_display",
    ]
    ordering = ["channel"]
    actions = ["resume_now"]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> Any:
        # Every channel has a row, so that one not configured or never used shows too.
        ChannelHealth.objects.bulk_create(
            [ChannelHealth(channel=value) for value, _ in Channel.choices], ignore_conflicts=True
        )
        self._status = {s.channel: s for s in channels_status([value for value, _ in Channel.choices])}
        self._now = timezone_now()
        return super().changelist_view(request, extra_context)

    @admin.display(description=_("channel"), ordering="channel")
    def channel_display(self, row: ChannelHealth) -> str:
        return (
            f"{Channel(row.channel).label} ({row.channel})" if row.channel in Channel.values else row.channel
        )

    @admin.display(description=_("configuration"))
    def configuration(self, row: ChannelHealth) -> str:
        status = getattr(self, "_status", {}).get(row.channel)
        if status is None or status.configured:
            return format_html('<span style="color:#1a7f37">{}</span>', gettext("configured"))
        if status.missing:
            missing = format_html_join(", ", "<code>{}</code>", ((name,) for name in status.missing))
            return format_html(
                '<span style="color:#b35900">{}</span>: {}', gettext("not configured"), missing
            )
        return format_html(
            '<span style="color:#b35900">{}</span> ({})', gettext("not configured"), status.error
        )

    @admin.display(description=_("circuit breaker"))
    def breaker(self, row: ChannelHealth) -> str:
        now = getattr(self, "_now", None) or timezone_now()
        if row.paused_until and row.paused_until > now:
            return format_html(
                '<strong style="color:#cf222e">{}</strong>',
                gettext("paused until %(time)s") % {"time": row.paused_until.strftime("%Y-%m-%d %H:%M")},
            )
        return gettext("closed (sending)")

    @admin.display(description=_("last error"))
    def last_error_display(self, row: ChannelHealth) -> str:
        return row.last_error[:120] or "-"

    def has_resume_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("nurture_channels.change_channelhealth")

    @admin.action(description=_("Resume the selected channels now"), permissions=["resume"])
    def resume_now(self, request: HttpRequest, queryset: Any) -> None:
        now = timezone_now()
        for row in queryset:
            channel_resume(channel=row.channel, now=now)
        self.message_user(request, gettext("Resumed."), messages.SUCCESS)


@admin.register(FailedTouch)
class FailedTouchAdmin(TouchAdmin):
    list_display = ["id", "lead_display", "sequence", "channel", "attempts", "due_at", "error_display"]
    list_filter = ["sequence"]
    actions = ["retry_now"]

    def get_queryset(self, request: HttpRequest) -> Any:
        return super().get_queryset(request).filter(state=TouchState.FAILED)

    @admin.display(description=_("error"))
    def error_display(self, touch: FailedTouch) -> str:
        return touch.error[:160] or "-"

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("sequences.change_touch")

    @admin.action(description=_("Retry the selected touches now"), permissions=["retry"])
    def retry_now(self, request: HttpRequest, queryset: Any) -> None:
        count = touches_retry_now(touch_ids=list(queryset.values_list("pk", flat=True)), now=timezone_now())
        self.message_user(
            request,
            ngettext(
                "%(count)d touch scheduled again; the next tick sends it.",
                "%(count)d touches scheduled again; the next tick sends them.",
                count,
            )
            % {"count": count},
            messages.SUCCESS,
        )
