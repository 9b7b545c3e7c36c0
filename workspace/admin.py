"""The workspace in the admin: the SLA and assignment settings (one row), SDR availability, the record
of assignments and notifications."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.translation import gettext_lazy as _

from workspace.calendar import dates_check, weekdays_parse
from workspace.models import Assignment, Notification, SdrProfile, WorkspaceSettings
from workspace.services import workspace_settings_get


class WorkspaceSettingsForm(forms.ModelForm):
    class Meta:
        model = WorkspaceSettings
        fields = [
            "sla_working_hours",
            "warn_before_minutes",
            "reassign_after_hours",
            "penalty_breaches",
            "penalty_window_days",
            "timezone",
            "work_start",
            "work_end",
            "work_weekdays",
            "holidays",
            "extra_workdays",
            "auto_assign_after_minutes",
            "forward",
        ]

    def clean_work_weekdays(self) -> str:
        value = self.cleaned_data["work_weekdays"]
        try:
            days = weekdays_parse(value)
        except ValueError as exc:
            raise forms.ValidationError(
                _("Weekdays are numbers 1 (Monday) to 7 (Sunday), comma-separated.")
            ) from exc
        return ",".join(str(d) for d in sorted(days))

    def _dates(self, name: str) -> str:
        value = self.cleaned_data[name]
        bad = dates_check(value)
        if bad is not None:
            raise forms.ValidationError(_("Not a date (YYYY-MM-DD): %(line)s") % {"line": bad})
        return value

    def clean_holidays(self) -> str:
        return self._dates("holidays")

    def clean_extra_workdays(self) -> str:
        return self._dates("extra_workdays")

    def clean_timezone(self) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        value = self.cleaned_data["timezone"]
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise forms.ValidationError(_("Unknown time zone")) from exc
        return value

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        start, end = data.get("work_start"), data.get("work_end")
        if start and end and end <= start:
            self.add_error("work_end", _("The working day ends after it starts."))
        return data


@admin.register(WorkspaceSettings)
class WorkspaceSettingsAdmin(admin.ModelAdmin):
    form = WorkspaceSettingsForm
    fieldsets = [
        (_("SLA"), {"fields": ["sla_working_hours", "warn_before_minutes", "reassign_after_hours"]}),
        (_("Penalty"), {"fields": ["penalty_breaches", "penalty_window_days"]}),
        (
            _("Working calendar"),
            {"fields": ["timezone", "work_start", "work_end", "work_weekdays", "holidays", "extra_workdays"]},
        ),
        (_("Assignment and notifications"), {"fields": ["auto_assign_after_minutes", "forward"]}),
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        row = workspace_settings_get()  # one row: the list is its edit page
        return HttpResponseRedirect(reverse("admin:workspace_workspacesettings_change", args=[row.pk]))


@admin.register(SdrProfile)
class SdrProfileAdmin(admin.ModelAdmin):
    list_display = ["user", "available", "wecom_userid", "last_assigned_at", "penalty_until"]
    list_editable = ["available", "wecom_userid"]
    readonly_fields = ["last_assigned_at", "penalty_until"]
    search_fields = ["user__username", "user__first_name", "user__last_name", "wecom_userid"]
    autocomplete_fields = ["user"]


@admin.register(Assignment)
class AssignmentAdmin(admin.ModelAdmin):
    list_display = [
        "lead",
        "sdr",
        "via",
        "assigned_at",
        "first_touch_due",
        "followed_up_at",
        "breached_at",
        "ended_at",
        "end_reason",
    ]
    list_filter = ["via", "end_reason", ("breached_at", admin.EmptyFieldListFilter), "sdr"]
    list_select_related = ["lead", "sdr"]
    date_hierarchy = "assigned_at"
    raw_id_fields = ["lead"]
    search_fields = ["lead__name", "lead__company", "sdr__username"]
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # assignments are made in the workspace

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = ["created_at", "user", "kind", "text", "read_at", "forward_state", "forward_error"]
    list_filter = ["kind", "forward_state"]
    list_select_related = ["user"]
    raw_id_fields = ["lead", "assignment"]
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
