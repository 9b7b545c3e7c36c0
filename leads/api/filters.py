"""Filters of the lead list (CONTRACT §3)."""

from __future__ import annotations

from django.db.models import Exists, OuterRef, Q, QuerySet
from django_filters import rest_framework as filters
from rest_framework.exceptions import ValidationError

from leads.identity import IdentityError, normalize_identity
from leads.models import Lead, LeadTag, Pool, PoolMembership, Stage, Tag, Temperature
from leads.tagging import tag_name_normalize


class LeadFilter(filters.FilterSet):
    stage = filters.ChoiceFilter(choices=Stage.choices)
    temperature = filters.ChoiceFilter(choices=Temperature.choices)
    tag = filters.CharFilter(method="filter_tag", max_length=128, help_text="tag name, `group:value`")
    pool = filters.CharFilter(method="filter_pool", max_length=64, help_text="pool slug")
    owner = filters.CharFilter(method="filter_owner", max_length=150, help_text="username or user id")
    updated_since = filters.IsoDateTimeFilter(
        field_name="updated_at",
        lookup_expr="gte",
        help_text="ISO 8601; results ordered by update time then id",
    )
    q = filters.CharFilter(
        method="filter_text", max_length=100, help_text="text in name, company, phone, email"
    )
    external_id = filters.CharFilter(method="filter_identity", max_length=128)
    phone = filters.CharFilter(method="filter_identity", max_length=40)
    email = filters.CharFilter(method="filter_identity", max_length=254)
    wecom_external_userid = filters.CharFilter(method="filter_identity", max_length=128)
    wechat_unionid = filters.CharFilter(method="filter_identity", max_length=128)

    class Meta:
        model = Lead
        fields: list[str] = []

    def filter_tag(self, queryset: QuerySet[Lead], name: str, value: str) -> QuerySet[Lead]:
        try:
            tag_id = Tag.objects.filter(name=tag_name_normalize(value)).values_list("pk", flat=True).first()
        except ValueError:
            tag_id = None
        if tag_id is None:
            return queryset.none()
        return queryset.filter(Exists(LeadTag.objects.filter(lead=OuterRef("pk"), tag_id=tag_id)))

    def filter_pool(self, queryset: QuerySet[Lead], name: str, value: str) -> QuerySet[Lead]:
        pool_id = Pool.objects.filter(slug=value).values_list("pk", flat=True).first()
        if pool_id is None:
            return queryset.none()
        open_rows = PoolMembership.objects.filter(lead=OuterRef("pk"), pool_id=pool_id, left_at__isnull=True)
        return queryset.filter(Exists(open_rows))

    def filter_owner(self, queryset: QuerySet[Lead], name: str, value: str) -> QuerySet[Lead]:
        if value.isdigit() and len(value) < 19:
            return queryset.filter(Q(owner_id=int(value)) | Q(owner__username=value))
        return queryset.filter(owner__username=value)

    def filter_text(self, queryset: QuerySet[Lead], name: str, value: str) -> QuerySet[Lead]:
        text = value.strip()
        if not text:
            return queryset
        query = Q(name__icontains=text) | Q(company__icontains=text) | Q(email__icontains=text.lower())
        digits = "".join(ch for ch in text if ch.isdigit())
        if digits:
            query |= Q(phone__contains=digits)
        return queryset.filter(query)

    def filter_identity(self, queryset: QuerySet[Lead], name: str, value: str) -> QuerySet[Lead]:
        try:
            normalized = normalize_identity(name, value)
        except IdentityError as exc:
            raise ValidationError({name: [str(exc)]}) from exc
        return queryset.filter(**{name: normalized}) if normalized else queryset
