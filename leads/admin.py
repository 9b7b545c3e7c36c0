from django.contrib import admin

from leads.models import ApiKey, Event, KeywordTagRule, Lead, LeadMerge, LeadTag, StageChange, Tag


@admin.register(Lead)
class LeadAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "name",
        "company",
        "phone",
        "email",
        "stage",
        "source",
        "owner",
        "score",
        "updated_at",
    ]
    search_fields = ["name", "company", "phone", "email"]
    list_filter = ["stage", "source", "owner"]


admin.site.register([Tag, LeadTag, Event, StageChange, LeadMerge, ApiKey, KeywordTagRule])
