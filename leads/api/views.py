"""HTTP views of the lead and event API; they validate, call a service and shape the answer."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.http import Http404
from django.utils.dateparse import parse_datetime
from django.utils.timezone import now as timezone_now
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from leads import services
from leads.api.filters import LeadFilter
from leads.api.pagination import KeysetPagination
from leads.api.serializers import (
    MAX_BATCH,
    BulkResultSerializer,
    BulkUpsertSerializer,
    EventSerializer,
    EventWriteSerializer,
    LeadSerializer,
    LeadWriteSerializer,
    StageWriteSerializer,
    TagsChangeSerializer,
    TimelineItemSerializer,
    lead_queryset,
)
from leads.models import Lead
from leads.selectors import lead_timeline
from scoring.api import ScoreExplanationSerializer, score_explanation_data


def _lead_queryset() -> QuerySet[Lead]:
    return lead_queryset()


def _actor(request: Request) -> str:
    return str(request.user) if request.user else "api"


class LeadViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Leads: create, upsert by identity, bulk upsert, list, read, edit, stage write-back, timeline, tags."""

    serializer_class = LeadSerializer
    filterset_class = LeadFilter
    pagination_class = KeysetPagination
    lookup_value_regex = r"[0-9]{1,18}"

    def get_queryset(self) -> QuerySet[Lead]:
        return _lead_queryset()

    @property
    def sync_order(self) -> bool:
        return "updated_since" in self.request.query_params

    def get_object(self) -> Lead:
        lead = services.lead_resolve(lead_id=int(self.kwargs["pk"]))
        if lead is None:
            raise Http404("No such lead.")
        return _lead_queryset().get(pk=lead.pk)

    def _answer(self, lead: Lead, code: int) -> Response:
        return Response(LeadSerializer(_lead_queryset().get(pk=lead.pk)).data, status=code)

    @extend_schema(
        request=LeadWriteSerializer,
        responses={201: LeadSerializer, 409: OpenApiResponse(description="identity in use")},
    )
    def create(self, request: Request) -> Response:
        serializer = LeadWriteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data, tags = LeadWriteSerializer.split(serializer.validated_data)
        lead = services.lead_create(data=data, tags=tags)
        return self._answer(lead, status.HTTP_201_CREATED)

    @extend_schema(request=LeadWriteSerializer, responses={200: LeadSerializer, 201: LeadSerializer})
    @action(detail=False, methods=["post"])
    def upsert(self, request: Request) -> Response:
        serializer = LeadWriteSerializer(data=request.data, require_identity=True)
        serializer.is_valid(raise_exception=True)
        data, tags = LeadWriteSerializer.split(serializer.validated_data)
        result = services.lead_upsert(data=data, tags=tags)
        return self._answer(result.lead, status.HTTP_201_CREATED if result.created else status.HTTP_200_OK)

    @extend_schema(request=BulkUpsertSerializer, responses={200: BulkResultSerializer})
    @action(detail=False, methods=["post"])
    def bulk_upsert(self, request: Request) -> Response:
        raw = request.data.get("leads") if isinstance(request.data, dict) else request.data
        if not isinstance(raw, list) or not raw:
            raise ValidationError({"leads": ["a non-empty list of leads"]})
        if len(raw) > MAX_BATCH:
            raise ValidationError({"leads": [f"at most {MAX_BATCH} leads in one call"]})
        items: list[dict[str, Any] | None] = []
        tags: list[list[str]] = []
        errors: list[dict[str, Any] | None] = []
        # One serializer validates every item: building one copies all its fields, which costs more
        # than the validation itself.
        serializer = LeadWriteSerializer(require_identity=True)
        for entry in raw:
            try:
                if not isinstance(entry, dict):
                    raise ValidationError({"non_field_errors": ["must be an object"]})
                validated = serializer.run_validation(entry)
            except ValidationError as exc:
                items.append(None)
                tags.append([])
                errors.append(exc.detail)  # type: ignore[arg-type]
                continue
            data, item_tags = LeadWriteSerializer.split(validated)
            items.append(data)
            tags.append(item_tags)
            errors.append(None)
        results = [r.as_dict() for r in services.lead_bulk_upsert(items=items, tags=tags, errors=errors)]
        counts = {
            key: sum(1 for r in results if r["status"] == key) for key in ("created", "updated", "error")
        }
        return Response(
            {
                "created": counts["created"],
                "updated": counts["updated"],
                "errors": counts["error"],
                "results": results,
            }
        )

    @extend_schema(request=LeadWriteSerializer, responses={200: LeadSerializer})
    def partial_update(self, request: Request, pk: str) -> Response:
        lead = self.get_object()
        serializer = LeadWriteSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        data, tags = LeadWriteSerializer.split(serializer.validated_data)
        services.lead_update(lead=lead, data=data)
        if tags:
            services.lead_tags_change(lead=lead, add=tags, now=timezone_now())
        return self._answer(lead, status.HTTP_200_OK)

    @extend_schema(request=StageWriteSerializer, responses={200: LeadSerializer})
    @action(detail=True, methods=["post"])
    def stage(self, request: Request, pk: str) -> Response:
        lead = self.get_object()
        serializer = StageWriteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.lead_stage_set(lead=lead, actor=_actor(request), **serializer.validated_data)
        return self._answer(lead, status.HTTP_200_OK)

    @extend_schema(request=TagsChangeSerializer, responses={200: LeadSerializer})
    @action(detail=True, methods=["post"])
    def tags(self, request: Request, pk: str) -> Response:
        lead = self.get_object()
        serializer = TagsChangeSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.lead_tags_change(lead=lead, source="api", now=timezone_now(), **serializer.validated_data)
        return self._answer(lead, status.HTTP_200_OK)

    @extend_schema(
        parameters=[
            OpenApiParameter("before", str, description="ISO 8601: only items before this instant"),
            OpenApiParameter("limit", int, description="at most this many items (1–500, default 100)"),
        ],
        responses={200: inline_serializer("Timeline", {"results": TimelineItemSerializer(many=True)})},
    )
    @action(detail=True, methods=["get"])
    def timeline(self, request: Request, pk: str) -> Response:
        lead = self.get_object()
        raw_limit = request.query_params.get("limit", "100")
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 500:
            raise ValidationError({"limit": ["an integer from 1 to 500"]})
        before = None
        if "before" in request.query_params:
            try:
                before = parse_datetime(request.query_params["before"])
            except ValueError:
                before = None
            if before is None:
                raise ValidationError({"before": ["an ISO 8601 date-time"]})
        items = lead_timeline(lead=lead, before=before, limit=int(raw_limit))
        return Response({"lead": lead.pk, "results": items})

    @extend_schema(responses={200: ScoreExplanationSerializer})
    @action(detail=True, methods=["get"])
    def score(self, request: Request, pk: str) -> Response:
        """Why the lead scores what it does: each fit rule it meets, each behaviour rule with its points,
        when they were earned and what they are worth after decay, grade and temperature."""
        return Response(score_explanation_data(lead=self.get_object(), now=timezone_now()))


class EventView(APIView):
    """Record one event or a list of up to 1,000; idempotent by `event_id`."""

    @extend_schema(
        request={
            "application/json": {
                "oneOf": [
                    {"$ref": "#/components/schemas/EventWriteRequest"},
                    {
                        "type": "array",
                        "items": {"$ref": "#/components/schemas/EventWriteRequest"},
                        "maxItems": MAX_BATCH,
                    },
                ]
            }
        },
        responses={
            200: inline_serializer(
                "EventBatchResult",
                {
                    "created": serializers.IntegerField(),
                    "duplicates": serializers.IntegerField(),
                    "errors": serializers.IntegerField(),
                    "results": serializers.ListField(child=serializers.DictField()),
                },
            ),
            201: inline_serializer(
                "EventResult", {"status": serializers.CharField(), "lead": serializers.IntegerField()}
            ),
        },
    )
    def post(self, request: Request) -> Response:
        many = isinstance(request.data, list)
        raw = request.data if many else [request.data]
        if many and not raw:
            raise ValidationError({"non_field_errors": ["an empty list"]})
        if len(raw) > MAX_BATCH:
            raise ValidationError({"non_field_errors": [f"at most {MAX_BATCH} events in one call"]})
        now = timezone_now()
        inputs: list[services.EventInput | None] = []
        errors: dict[int, Any] = {}
        serializer = EventWriteSerializer()  # one for the whole list, as in bulk_upsert
        for index, entry in enumerate(raw):
            try:
                if not isinstance(entry, dict):
                    if not many:
                        EventWriteSerializer(data=entry).is_valid(raise_exception=True)
                    raise ValidationError({"non_field_errors": ["must be an object"]})
                data = serializer.validated_if_plain(entry) or serializer.run_validation(entry)
            except ValidationError as exc:
                if not many:
                    raise
                errors[index] = exc.detail
                inputs.append(None)
                continue
            ref = data["lead"]
            inputs.append(
                services.EventInput(
                    type=data["type"],
                    occurred_at=data.get("occurred_at") or now,
                    properties=data.get("properties") or {},
                    event_id=data.get("event_id") or None,
                    lead_id=ref if isinstance(ref, int) else None,
                    identity=ref if isinstance(ref, dict) else None,
                    source=data.get("source") or "api",
                )
            )
        recorded = {r["index"]: r for r in services.event_record_bulk(items=inputs, now=now)}
        results = [
            recorded.get(i) or {"index": i, "status": "error", "errors": errors.get(i, {})}
            for i in range(len(raw))
        ]
        if not many:
            result = results[0]
            if result["status"] == "error":
                raise ValidationError(result["errors"])
            body = {key: value for key, value in result.items() if key != "index"}
            return Response(
                body, status=status.HTTP_201_CREATED if result["status"] == "created" else status.HTTP_200_OK
            )
        counts = {
            key: sum(1 for r in results if r["status"] == key) for key in ("created", "duplicate", "error")
        }
        return Response(
            {
                "created": counts["created"],
                "duplicates": counts["duplicate"],
                "errors": counts["error"],
                "results": results,
            }
        )


__all__ = ["EventSerializer", "EventView", "LeadViewSet"]
