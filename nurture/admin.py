from django.contrib import admin
from django.utils.translation import gettext_lazy as _

from nurture.models import TickRun

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
