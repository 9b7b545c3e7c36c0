"""The content API: `GET /api/v1/content/` (assets with their tags and stats), newest first, by cursor."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.urls import reverse
from django_filters import rest_framework as filters
from drf_spectacular.utils import extend_schema_field
from rest_framework import mixins, serializers, viewsets

from content.models import Awareness, ContentAsset, Form, Funnel
from content.selectors import content_asset_stats
from leads.api.pagination import KeysetPagination


class ContentStatsSerializer(serializers.Serializer):
    sent = serializers.IntegerField(help_text="tracked links created for leads")
    opened = serializers.IntegerField(help_text="links opened at least once")
    open_rate = serializers.FloatField(allow_null=True, help_text="opened ÷ sent")
    views = serializers.IntegerField()
    unique_viewers = serializers.IntegerField()
    mql_after = serializers.IntegerField(help_text="viewers that became MQL within 30 days of viewing")
    sql_after = serializers.IntegerField(help_text="viewers that became SQL within 30 days of viewing")


class ContentAssetSerializer(serializers.ModelSerializer):
    tags = serializers.SerializerMethodField()
    landing_url = serializers.SerializerMethodField()
    stats = serializers.SerializerMethodField()

    class Meta:
        model = ContentAsset
        fields = [
            "id",
            "slug",
            "title",
            "form",
            "awareness",
            "funnel",
            "friction",
            "value_proximity",
            "call_to_action",
            "target_url",
            "gated",
            "landing_url",
            "summary",
            "tags",
            "active",
            "stats",
            "created_at",
            "updated_at",
        ]

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_tags(self, asset: ContentAsset) -> list[str]:
        return sorted(tag.name for tag in asset.tags.all())

    @extend_schema_field(serializers.CharField())
    def get_landing_url(self, asset: ContentAsset) -> str:
        return reverse("content-landing", args=[asset.slug])

    @extend_schema_field(ContentStatsSerializer)
    def get_stats(self, asset: ContentAsset) -> dict[str, Any]:
        return {
            "sent": asset.sent,
            "opened": asset.opened,
            "open_rate": round(asset.open_rate, 4) if asset.open_rate is not None else None,
            "views": asset.views,
            "unique_viewers": asset.unique_viewers,
            "mql_after": asset.mql_after,
            "sql_after": asset.sql_after,
        }


class ContentFilter(filters.FilterSet):
    form = filters.ChoiceFilter(choices=Form.choices)
    awareness = filters.ChoiceFilter(choices=Awareness.choices)
    funnel = filters.ChoiceFilter(choices=Funnel.choices)
    tag = filters.CharFilter(field_name="tags__name", help_text="assets with this tag (group:value)")
    active = filters.BooleanFilter()

    class Meta:
        model = ContentAsset
        fields = ["form", "awareness", "funnel", "tag", "active"]


class ContentAssetViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Content assets with their tags and stats (sent, opened, views, unique viewers, conversions)."""

    serializer_class = ContentAssetSerializer
    filterset_class = ContentFilter
    pagination_class = KeysetPagination
    lookup_value_regex = r"[0-9]{1,18}"

    def get_queryset(self) -> QuerySet[ContentAsset]:
        return content_asset_stats()
