"""Validation of API input into the clean payloads the services take, and the API's output shapes."""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator
from functools import cached_property
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import Prefetch, QuerySet
from django.utils.dateparse import parse_datetime
from django.utils.timezone import now as timezone_now
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.fields import empty

from leads.identity import IdentityError, normalize_identity
from leads.models import IDENTITY_FIELDS, Event, Lead, LeadTag, PoolMembership, Stage, Temperature
from leads.tagging import tag_name_normalize

MAX_BATCH = 1000


def _no_nul(value: Any, path: str = "") -> None:
    """PostgreSQL cannot store NUL characters in text or JSON: refuse them with the path."""
    if isinstance(value, str):
        if "\x00" in value:
            raise serializers.ValidationError(f"{path or 'value'}: NUL characters are not allowed")
    elif isinstance(value, dict):
        for key, item in value.items():
            _no_nul(key, path)
            _no_nul(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _no_nul(item, f"{path}[{index}]")


class PropertiesField(serializers.JSONField):
    """A JSON object of free properties (rules can read its keys)."""

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        value = super().to_internal_value(data)
        if not isinstance(value, dict):
            raise serializers.ValidationError("must be a JSON object")
        _no_nul(value)
        return value


@extend_schema_field(OpenApiTypes.STR)
class IdentityField(serializers.CharField):
    def __init__(self, identity: str, **kwargs: Any) -> None:
        self.identity = identity
        kwargs.setdefault("required", False)
        kwargs.setdefault("allow_null", True)
        kwargs.setdefault("allow_blank", True)
        kwargs.setdefault("max_length", 254 if identity == "email" else 128)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> str | None:
        if isinstance(data, bool) or not isinstance(data, str | int):
            raise serializers.ValidationError("must be a string")
        text = super().to_internal_value(str(data))
        try:
            return normalize_identity(self.identity, text)
        except IdentityError as exc:
            raise serializers.ValidationError(str(exc)) from exc


class BantSerializer(serializers.Serializer):
    budget = serializers.BooleanField(required=False)
    authority = serializers.BooleanField(required=False)
    need = serializers.BooleanField(required=False)
    timeline = serializers.BooleanField(required=False)


@extend_schema_field({"type": "string", "nullable": True, "description": "username of the owning SDR"})
class OwnerField(serializers.Field):
    """The SDR who owns the lead, by username (or user id)."""

    default_error_messages = {"unknown": "no such user: {value}"}

    def to_internal_value(self, data: Any) -> Any:
        if data in (None, ""):
            return None
        users = get_user_model().objects
        if isinstance(data, int) and not isinstance(data, bool):
            user = users.filter(pk=data).first() if 0 < data < 2**63 else None
        elif isinstance(data, str) and "\x00" not in data:
            user = users.filter(username=data).first()
        else:
            user = None
        if user is None:
            self.fail("unknown", value=data)
        return user

    def to_representation(self, value: Any) -> str | None:
        return value.username if value else None


class TagListField(serializers.ListField):
    child = serializers.CharField(max_length=128)

    def to_internal_value(self, data: Any) -> list[str]:
        names = super().to_internal_value(data)
        try:
            return [tag_name_normalize(name) for name in names]
        except ValueError as exc:
            raise serializers.ValidationError(str(exc)) from exc


class LeadWriteSerializer(serializers.Serializer):
    """A lead as the API takes it; `validated_data` is the services' payload."""

    external_id = IdentityField("external_id")
    phone = IdentityField("phone", help_text="Mainland mobile numbers in any usual form; stored as E.164.")
    email = IdentityField("email")
    wecom_external_userid = IdentityField("wecom_external_userid")
    wechat_unionid = IdentityField("wechat_unionid")
    name = serializers.CharField(max_length=128, required=False, allow_blank=True)
    company = serializers.CharField(max_length=200, required=False, allow_blank=True)
    title = serializers.CharField(max_length=128, required=False, allow_blank=True)
    industry = serializers.CharField(max_length=64, required=False, allow_blank=True)
    company_size = serializers.CharField(max_length=32, required=False, allow_blank=True)
    source = serializers.CharField(max_length=64, required=False, allow_blank=True)
    stage = serializers.ChoiceField(choices=Stage.choices, required=False)
    bant = BantSerializer(required=False)
    consent = serializers.BooleanField(required=False)
    consent_version = serializers.CharField(max_length=32, required=False, allow_blank=True)
    do_not_contact = serializers.BooleanField(required=False)
    owner = OwnerField(required=False, allow_null=True)
    properties = PropertiesField(required=False)
    tags = TagListField(required=False, max_length=100, help_text="Tags to add; `group:value` names a group.")

    def __init__(self, *args: Any, require_identity: bool = False, **kwargs: Any) -> None:
        self.require_identity = require_identity
        self._given_keys: Collection[str] | None = None
        super().__init__(*args, **kwargs)

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        self._given_keys = data.keys() if isinstance(data, dict) else None
        try:
            return super().to_internal_value(data)
        finally:
            self._given_keys = None

    @property
    def _writable_fields(self) -> Iterator[serializers.Field]:
        # DRF skips an absent optional field without a default by raising SkipField; with 19 fields
        # that is most of the cost of a sparse item in a bulk call. Leave them out before DRF visits.
        given = self._given_keys
        for item in self.fields.values():
            if item.read_only:
                continue
            if (
                given is not None
                and item.field_name not in given
                and not item.required
                and item.default is empty
            ):
                continue
            yield item

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if self.require_identity and not any(attrs.get(name) for name in IDENTITY_FIELDS):
            raise serializers.ValidationError(
                {"non_field_errors": [f"give at least one identity: {', '.join(IDENTITY_FIELDS)}"]}
            )
        bant = attrs.pop("bant", None) or {}
        for key, value in bant.items():
            attrs[f"bant_{key}"] = value
        if attrs.get("consent") and "consent_at" not in attrs:
            attrs["consent_at"] = timezone_now()
        return attrs

    @staticmethod
    def split(data: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """Separate the tags to add from the lead's fields."""
        data = dict(data)
        return data, data.pop("tags", [])


def lead_queryset() -> QuerySet[Lead]:
    """Leads with what LeadSerializer shows, fetched in a fixed number of queries per page."""
    return Lead.objects.select_related("owner").prefetch_related(
        Prefetch("lead_tags", queryset=LeadTag.objects.select_related("tag")),
        Prefetch(
            "pool_memberships",
            queryset=PoolMembership.objects.filter(left_at__isnull=True).select_related("pool"),
            to_attr="open_memberships",
        ),
    )


class LeadSerializer(serializers.ModelSerializer):
    """A lead as the API shows it."""

    bant = BantSerializer(read_only=True)
    owner = serializers.SerializerMethodField()
    tags = serializers.SerializerMethodField()
    pools = serializers.SerializerMethodField()
    stage = serializers.ChoiceField(choices=Stage.choices, read_only=True)
    temperature = serializers.ChoiceField(choices=Temperature.choices, read_only=True)

    class Meta:
        model = Lead
        fields = [
            "id",
            *IDENTITY_FIELDS,
            "name",
            "company",
            "title",
            "industry",
            "company_size",
            "source",
            "stage",
            "bant",
            "consent",
            "consent_at",
            "do_not_contact",
            "owner",
            "score",
            "temperature",
            "tags",
            "pools",
            "properties",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_owner(self, lead: Lead) -> str | None:
        return lead.owner.username if lead.owner_id and lead.owner else None

    def get_tags(self, lead: Lead) -> list[str]:
        return sorted(lt.tag.name for lt in lead.lead_tags.all())

    def get_pools(self, lead: Lead) -> list[str]:
        memberships = getattr(lead, "open_memberships", None)
        if memberships is None:
            memberships = lead.pool_memberships.filter(left_at__isnull=True).select_related("pool")
        return sorted(m.pool.slug for m in memberships)


class StageWriteSerializer(serializers.Serializer):
    stage = serializers.ChoiceField(choices=[Stage.SQL, Stage.WON, Stage.LOST, Stage.RECYCLED])
    reason = serializers.CharField(max_length=255, required=False, allow_blank=True, default="")
    amount = serializers.DecimalField(
        max_digits=14, decimal_places=2, required=False, allow_null=True, min_value=0, default=None
    )


class StageChangeSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    from_stage = serializers.CharField()
    to_stage = serializers.CharField()
    reason = serializers.CharField()
    amount = serializers.DecimalField(max_digits=14, decimal_places=2, allow_null=True)
    at = serializers.DateTimeField()


class TagsChangeSerializer(serializers.Serializer):
    add = TagListField(required=False, default=list, max_length=100)
    remove = TagListField(required=False, default=list, max_length=100)


@extend_schema_field(
    {
        "oneOf": [{"type": "integer"}, {"type": "object", "additionalProperties": True}],
        "description": "lead id or identities",
    }
)
class LeadRefField(serializers.Field):
    """An event's lead: its id, or an object of identities (unknown identities create the lead)."""

    @cached_property
    def identity_serializer(self) -> LeadWriteSerializer:
        """Built once per field (a list of events reuses it): building a serializer costs more than
        validating with it."""
        return LeadWriteSerializer(require_identity=True)

    def to_internal_value(self, data: Any) -> int | dict[str, Any]:
        if isinstance(data, bool):
            raise serializers.ValidationError("must be a lead id or an object of identities")
        if isinstance(data, int):
            if not 0 < data < 2**63:
                raise serializers.ValidationError("no such lead")
            return data
        if isinstance(data, str) and data.isdigit() and len(data) < 19:
            return int(data)
        if isinstance(data, dict):
            try:
                validated = self.identity_serializer.run_validation(data)
            except serializers.ValidationError as exc:
                raise serializers.ValidationError(exc.detail) from None
            payload, _ = LeadWriteSerializer.split(validated)
            return payload
        raise serializers.ValidationError("must be a lead id or an object of identities")

    def to_representation(self, value: Any) -> Any:
        return value


EVENT_TYPE_PATTERN = r"[A-Za-z0-9_.:\-]{1,64}"
_EVENT_TYPE = re.compile(EVENT_TYPE_PATTERN)
_UNSTORABLE_CHARACTERS = re.compile("[\x00\ud800-\udfff]")  # what DRF's CharField validators refuse


def _plain_text(value: Any, max_length: int) -> str | None:
    """A CharField's value (trimmed) if DRF would take it without question, else None."""
    if type(value) is not str:
        return None
    text = value.strip()
    return text if len(text) <= max_length and not _UNSTORABLE_CHARACTERS.search(text) else None


class EventWriteSerializer(serializers.Serializer):
    event_id = serializers.CharField(max_length=128, required=False, allow_null=True, allow_blank=True)
    lead = LeadRefField()
    type = serializers.RegexField(f"^{EVENT_TYPE_PATTERN}$", max_length=64)
    occurred_at = serializers.DateTimeField(required=False)
    properties = PropertiesField(required=False, default=dict)
    source = serializers.CharField(max_length=64, required=False, allow_blank=True, default="")

    def validated_if_plain(self, data: dict[str, Any]) -> dict[str, Any] | None:
        """What `run_validation(data)` returns, worked out directly, for an event in the plain shape a
        tracking pipeline sends: a lead id, strings within bounds, an ISO 8601 time, an object of
        properties. None for anything else, which then goes through DRF's validation and gets its
        error messages. DRF's field-by-field machinery costs several times as much on these."""
        lead = data.get("lead")
        kind = data.get("type")
        if type(lead) is not int or not 0 < lead < 2**63 or type(kind) is not str:
            return None
        kind = kind.strip()
        if not _EVENT_TYPE.fullmatch(kind):
            return None
        out: dict[str, Any] = {"lead": lead, "type": kind, "properties": {}, "source": ""}
        if "event_id" in data:
            event_id = data["event_id"]
            out["event_id"] = None if event_id is None else _plain_text(event_id, 128)
            if event_id is not None and out["event_id"] is None:
                return None
        if "source" in data:
            out["source"] = _plain_text(data["source"], 64)
            if out["source"] is None:
                return None
        if "occurred_at" in data:
            raw = data["occurred_at"]
            try:
                at = parse_datetime(raw) if type(raw) is str else None
                if at is None:
                    return None
                out["occurred_at"] = self.fields["occurred_at"].enforce_timezone(at)
            except (ValueError, TypeError, serializers.ValidationError):
                return None
        if "properties" in data:
            try:
                out["properties"] = self.fields["properties"].to_internal_value(data["properties"])
            except serializers.ValidationError:
                return None
        return out


class EventSerializer(serializers.ModelSerializer):
    class Meta:
        model = Event
        fields = ["id", "event_id", "lead", "type", "occurred_at", "properties", "source", "created_at"]


class BulkUpsertSerializer(serializers.Serializer):
    leads = serializers.ListField(child=serializers.DictField(), max_length=MAX_BATCH, allow_empty=False)


class BulkItemSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    status = serializers.ChoiceField(choices=["created", "updated", "duplicate", "error"])
    id = serializers.IntegerField(required=False)
    errors = serializers.DictField(required=False)


class BulkResultSerializer(serializers.Serializer):
    created = serializers.IntegerField()
    updated = serializers.IntegerField()
    errors = serializers.IntegerField()
    results = BulkItemSerializer(many=True)


class TimelineItemSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=["event", "stage_change", "touch", "merge"])
    at = serializers.DateTimeField()
    id = serializers.IntegerField()
    type = serializers.CharField()
    summary = serializers.CharField()
    data = serializers.DictField()
