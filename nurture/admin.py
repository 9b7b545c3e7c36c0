from django.contrib import admin

from nurture.models import TickRun


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
