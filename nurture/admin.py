from django.contrib import admin
from django.utils.translation import gettext_lazy as _

from nurture.models import OutboxMessage, TickRun

admin.site.site_header = _("nurture · marketing console")
admin.site.site_title = _("nurture")
admin.site.index_title = _("Lead nurturing")


@admin.register(TickRun)
class TickRunAdmin(admin.ModelAdmin):
    """When the engine last ran: a stale list means beat or the worker is down."""

    list_display = ["started_at", "now", "seconds", "steps", "error"]
    readonly_fields = ["started_at", "now", "seconds", "steps", "error"]
    date_hierarchy = "started_at"

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(OutboxMessage)
class OutboxMessageAdmin(admin.ModelAdmin):
    """What the product announced, newest first (delivered to webhook subscribers by a later issue)."""

    list_display = ["id", "type", "lead_id", "occurred_at", "data"]
    list_filter = ["type"]
    search_fields = ["=lead_id"]
    readonly_fields = ["type", "lead_id", "data", "occurred_at", "created_at"]
    ordering = ["-id"]
    show_full_result_count = False

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
