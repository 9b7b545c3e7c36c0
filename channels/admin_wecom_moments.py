"""WeCom moments in the admin: read-only (the adapter creates and advances them)."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from channels.models import MomentTask


@admin.register(MomentTask)
class MomentTaskAdmin(admin.ModelAdmin):
    list_display = ("tag_name", "step_id", "local_date", "part", "state", "leads", "tagged", "created_at")
    list_filter = ("state", "local_date")
    search_fields = ("tag_name", "jobid", "moment_id")
    readonly_fields = [f.name for f in MomentTask._meta.fields] + ["leads", "tagged"]
    exclude = ("touch_ids", "marked_ids")

    @admin.display(description=_("leads"))
    def leads(self, obj: MomentTask) -> int:
        return len(obj.touch_ids)

    @admin.display(description=_("tagged"))
    def tagged(self, obj: MomentTask) -> int:
        return len(obj.marked_ids)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: MomentTask | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: MomentTask | None = None) -> bool:
        return False
