"""The content library in the admin: assets with their analytics, analytics per tag (sortable, CSV),
message templates checked on save, tracked links (revocable), consent texts."""

from __future__ import annotations

import csv
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.widgets import AdminFileWidget
from django.core.exceptions import PermissionDenied
from django.db import models
from django.db.models import F, QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.text import format_lazy
from django.utils.timezone import localdate
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from content.models import ConsentText, ContentAsset, MessageTemplate, TrackedLink
from content.selectors import content_asset_stats, content_tag_stats
from content.services import link_path, links_revoke, message_template_save
from content.templating import VARIABLES

# Columns of the analytics tables: (key, label); both tables sort by any of them.
METRIC_COLUMNS = [
    ("sent", _("sent")),
    ("opened", _("opened")),
    ("open_rate", _("open rate")),
    ("views", _("views")),
    ("unique_viewers", _("unique viewers")),
    ("mql_after", _("became MQL within 30 days")),
    ("sql_after", _("became SQL within 30 days")),
]
ASSET_COLUMNS = [("title", _("asset")), ("form", _("form")), *METRIC_COLUMNS]
TAG_COLUMNS = [("name", _("tag")), ("assets_count", _("assets")), *METRIC_COLUMNS]


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


class AssetFileWidget(AdminFileWidget):
    """The current file by name, not as a link: asset files have no URL (`url` raises ValueError)."""

    template_name = "content/widgets/asset_file_input.html"  # the form renderer reads app templates only

    def is_initial(self, value: Any) -> bool:
        return bool(value)


@admin.register(ContentAsset)
class ContentAssetAdmin(admin.ModelAdmin):
    formfield_overrides = {models.FileField: {"widget": AssetFileWidget}}
    list_display = [
        "title",
        "form",
        "awareness",
        "funnel",
        "friction",
        "value_proximity",
        "gated",
        "active",
        "sent_display",
        "opened_display",
        "open_rate_display",
        "unique_viewers",
        "views",
        "mql_after_display",
    ]
    list_filter = ["form", "awareness", "funnel", "gated", "active", "tags__group"]
    search_fields = ["title", "slug", "summary"]
    prepopulated_fields = {"slug": ["title"]}
    filter_horizontal = ["tags"]
    readonly_fields = ["views", "unique_viewers", "links_display"]
    change_list_template = "admin/content/contentasset/change_list.html"
    fieldsets = [
        (None, {"fields": ["title", "slug", "form", "summary", "tags", "active"]}),
        (_("Journey"), {"fields": ["awareness", "funnel", "friction", "value_proximity", "call_to_action"]}),
        (_("Where it leads"), {"fields": ["target_url", "file", "gated", "links_display"]}),
        (_("Views"), {"fields": ["views", "unique_viewers"]}),
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[ContentAsset]:
        return content_asset_stats()

    @admin.display(description=_("sent"), ordering="sent")
    def sent_display(self, asset: ContentAsset) -> int:
        return asset.sent

    @admin.display(description=_("opened"), ordering="opened")
    def opened_display(self, asset: ContentAsset) -> int:
        return asset.opened

    @admin.display(description=_("open rate"), ordering="open_rate")
    def open_rate_display(self, asset: ContentAsset) -> str:
        return _rate(asset.open_rate)

    @admin.display(description=_("MQL within 30 days"), ordering="mql_after")
    def mql_after_display(self, asset: ContentAsset) -> int:
        return asset.mql_after

    @admin.display(description=_("landing page"))
    def links_display(self, asset: ContentAsset) -> str:
        if not asset.pk:
            return "-"
        url = reverse("content-landing", args=[asset.slug])
        return format_html('<a href="{}" target="_blank">{}</a>', url, url)

    def get_urls(self) -> list[Any]:
        return [
            path(
                "analytics/",
                self.admin_site.admin_view(self.analytics_view),
                name="content_contentasset_analytics",
            ),
            *super().get_urls(),
        ]

    def analytics_view(self, request: HttpRequest) -> HttpResponse:
        """Per asset and per tag: sent, opened, open rate, views, unique viewers, conversions; sortable
        by any column (`o=-views`), as CSV with `format=csv`."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        by = "tag" if request.GET.get("by") == "tag" else "asset"
        columns = TAG_COLUMNS if by == "tag" else ASSET_COLUMNS
        keys = [key for key, _ in columns]
        order = request.GET.get("o", "-unique_viewers")
        if order.lstrip("-") not in keys:
            order = "-unique_viewers"
        rows = content_tag_stats() if by == "tag" else content_asset_stats()
        field = order.lstrip("-")
        expression = F(field)
        rows = rows.order_by(
            expression.desc(nulls_last=True) if order.startswith("-") else expression.asc(nulls_last=True),
            "pk",
        )
        table = [[self._cell(row, key) for key in keys] for row in rows]
        if request.GET.get("format") == "csv":
            response = HttpResponse(content_type="text/csv; charset=utf-8")
            response["Content-Disposition"] = (
                f'attachment; filename="content-analytics-{by}-{localdate()}.csv"'
            )
            response.write("\ufeff")  # a BOM, so Excel reads the Chinese titles
            writer = csv.writer(response)
            writer.writerow([str(label) for _, label in columns])
            writer.writerows(table)
            return response
        headers = [
            {
                "key": key,
                "label": label,
                "order": f"-{key}" if order != f"-{key}" else key,
                "sorted": "desc" if order == f"-{key}" else "asc" if order == key else "",
            }
            for key, label in columns
        ]
        context = {
            **self.admin_site.each_context(request),
            "title": gettext("Content analytics"),
            "opts": self.model._meta,
            "by": by,
            "order": order,
            "headers": headers,
            "table": table,
        }
        return TemplateResponse(request, "admin/content/analytics.html", context)

    @staticmethod
    def _cell(row: Any, key: str) -> Any:
        value = getattr(row, key)
        if key == "open_rate":
            return _rate(value)
        if key == "form":
            return row.get_form_display()
        return value


class MessageTemplateForm(forms.ModelForm):
    """The body is checked by the model's `clean()`: a refused template shows its error on the field."""

    class Meta:
        model = MessageTemplate
        fields = ["name", "body"]
        help_texts = {
            "body": format_lazy(
                "{} {}",
                _("Only “if” blocks and a few filters (default, upper, truncatechars …). Merge fields:"),
                ", ".join(f"{{{{ {name} }}}}" for name in sorted(VARIABLES)),
            )
        }


@admin.register(MessageTemplate)
class MessageTemplateAdmin(admin.ModelAdmin):
    form = MessageTemplateForm
    list_display = ["name", "updated_at"]
    search_fields = ["name", "body"]

    def save_model(
        self, request: HttpRequest, obj: MessageTemplate, form: forms.ModelForm, change: bool
    ) -> None:
        message_template_save(template=obj)


@admin.register(TrackedLink)
class TrackedLinkAdmin(admin.ModelAdmin):
    list_display = [
        "path_display",
        "asset",
        "lead",
        "touch_id",
        "created_at",
        "opens",
        "last_opened_at",
        "revoked_at",
    ]
    list_filter = ["revoked_at", "asset"]
    search_fields = ["token", "lead__name", "lead__phone"]
    list_select_related = ["asset", "lead"]
    raw_id_fields = ["lead", "asset"]
    actions = ["revoke"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description=_("link"))
    def path_display(self, link: TrackedLink) -> str:
        return link_path(link)

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("content.change_trackedlink")

    @admin.action(description=_("Revoke the selected links"), permissions=["revoke"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[TrackedLink]) -> None:
        count = links_revoke(links=queryset)
        self.message_user(request, gettext("%(count)d link(s) revoked.") % {"count": count}, messages.SUCCESS)


@admin.register(ConsentText)
class ConsentTextAdmin(admin.ModelAdmin):
    list_display = ["version", "active", "created_at"]
    list_filter = ["active"]
