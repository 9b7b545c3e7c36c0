"""The pool API: list, create, read, edit a pool, and its current members."""

from __future__ import annotations

from typing import Any

from django.db.models import Count, Exists, OuterRef, Q, QuerySet
from django.utils.timezone import now as timezone_now
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from leads.api.pagination import KeysetPagination
from leads.api.serializers import LeadSerializer, lead_queryset
from leads.models import Pool, PoolMembership
from leads.pools import pool_check
from leads.rules import RuleError


class PoolSerializer(serializers.ModelSerializer):
    size = serializers.IntegerField(read_only=True)
    rule = serializers.JSONField(help_text="DESIGN.md's rule language")

    class Meta:
        model = Pool
        fields = [
            "slug",
            "name",
            "rule",
            "goal",
            "description",
            "active",
            "family",
            "priority",
            "size",
            "updated_at",
        ]
        read_only_fields = ["size", "updated_at"]

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        slug = attrs.get("slug") or (self.instance.slug if self.instance else "")
        rule = attrs.get("rule", self.instance.rule if self.instance else None)
        try:
            pool_check(slug=slug, rule=rule)
        except RuleError as exc:
            raise serializers.ValidationError({"rule": [str(exc)]}) from exc
        if "rule" in attrs and (self.instance is None or attrs["rule"] != self.instance.rule):
            attrs["rule_changed_at"] = timezone_now()
        return attrs


class PoolViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    """Pools with their rule and current size; `members` pages through the leads in the pool."""

    serializer_class = PoolSerializer
    lookup_field = "slug"
    lookup_value_regex = r"[a-z0-9][a-z0-9_-]{0,63}"
    http_method_names = ["get", "post", "patch", "head", "options"]

    def get_queryset(self) -> QuerySet[Pool]:
        return Pool.objects.annotate(size=Count("memberships", filter=Q(memberships__left_at__isnull=True)))

    @extend_schema(responses={200: LeadSerializer(many=True)})
    @action(detail=True, methods=["get"], pagination_class=KeysetPagination)
    def members(self, request: Request, slug: str) -> Response:
        pool = self.get_object()
        leads = lead_queryset().filter(
            Exists(PoolMembership.objects.filter(lead=OuterRef("pk"), pool=pool, left_at__isnull=True))
        )
        page = self.paginate_queryset(leads)
        return self.get_paginated_response(LeadSerializer(page, many=True).data)
