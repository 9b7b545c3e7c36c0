"""Views of the sequence API (CONTRACT §3): sequences as JSON ("SOP as code": GET one, POST it
elsewhere and it is recreated), enrolling leads by hand, and the touches the engine made.

Bad input of any shape is a 400 whose body maps a field path (`steps[2].day`, `trigger.pool`) to its
messages, from the serializers' type checks and from `sequence_check` alike."""

from __future__ import annotations

from typing import Any

from django import forms
from django.db import transaction
from django.db.models import QuerySet
from django_filters import rest_framework as filters
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from leads.api.pagination import KeysetPagination
from leads.services import lead_resolve
from sequences.api.fields import MAX_ID, error_paths
from sequences.api.serializers import (
    EnrollResultSerializer,
    EnrollSerializer,
    SequenceDetailSerializer,
    SequenceSerializer,
    TouchSerializer,
)
from sequences.models import Channel, Sequence, SequenceStatus, StepMode, Touch, TouchState
from sequences.selectors import lead_ids_resolve, sequence_list, touch_list
from sequences.services import sequence_enroll, sequence_save, sequence_status_set
from sequences.validation import SequenceError


def _validated(serializer: serializers.Serializer) -> dict[str, Any]:
    if not serializer.is_valid():
        raise ValidationError(error_paths(serializer.errors))
    return dict(serializer.validated_data)


# What an omitted step field means. `sequence_save` updates a step in place by position, so a step given
# without, say, a condition must say "no condition" to replace the one there (send_time: its own rule).
STEP_DEFAULTS: dict[str, Any] = {
    "channel": Channel.CONSOLE,
    "mode": StepMode.AUTO,
    "text": "",
    "content_id": None,
    "recommended": False,
    "condition": None,
    "else_position": None,
    "wait_for": None,
    "else_channel": "",
}


def _split(validated: dict[str, Any], current: str | None) -> tuple[dict, list[dict] | None, str | None]:
    """The services' payload: sequence fields, steps (None: keep them) and the status to set, if any."""
    data = dict(validated)
    steps = data.pop("steps", None)
    active = data.pop("active", None)
    wanted = data.pop("status", None)
    if wanted is not None and active is not None and active != (wanted == SequenceStatus.ACTIVE):
        raise ValidationError({"active": [f"contradicts status {wanted!r}"]})
    if wanted is None and active is not None and active != (current == SequenceStatus.ACTIVE):
        wanted = SequenceStatus.ACTIVE if active else SequenceStatus.PAUSED
    return data, [{**STEP_DEFAULTS, **step} for step in steps] if steps is not None else None, wanted


def _refused(exc: SequenceError) -> ValidationError:
    return ValidationError({path: [message] for path, message in exc.errors.items()})


class SequenceViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Sequences with their steps; `enroll` puts leads in one by hand."""

    serializer_class = SequenceSerializer
    pagination_class = KeysetPagination
    lookup_value_regex = r"[0-9]{1,18}"
    http_method_names = ["get", "post", "patch", "head", "options"]

    def get_queryset(self) -> QuerySet[Sequence]:
        return sequence_list()

    def get_serializer_class(self) -> type[serializers.Serializer]:
        return SequenceDetailSerializer if self.action == "retrieve" else SequenceSerializer

    def _answer(self, sequence: Sequence, code: int) -> Response:
        return Response(SequenceSerializer(sequence_list().get(pk=sequence.pk)).data, status=code)

    @extend_schema(responses={201: SequenceSerializer})
    def create(self, request: Request) -> Response:
        data, steps, wanted = _split(_validated(SequenceSerializer(data=request.data)), None)
        if wanted is not None:
            data["status"] = wanted  # a new sequence has no enrollments to pause or resume
        try:
            sequence = sequence_save(data=data, steps=steps or [])
        except SequenceError as exc:
            raise _refused(exc) from exc
        return self._answer(sequence, status.HTTP_201_CREATED)

    @extend_schema(request=SequenceSerializer, responses={200: SequenceSerializer})
    def partial_update(self, request: Request, pk: str) -> Response:
        sequence = self.get_object()
        validated = _validated(SequenceSerializer(data=request.data, partial=True))
        data, steps, wanted = _split(validated, sequence.status)
        with transaction.atomic():
            # Locked: a tick moving the trigger cursor meanwhile is not overwritten by the save.
            locked = Sequence.objects.select_for_update().get(pk=sequence.pk)
            try:
                sequence_save(data=data, steps=steps, sequence=locked)
            except SequenceError as exc:
                raise _refused(exc) from exc
            if wanted is not None and wanted != locked.status:
                sequence_status_set(sequence=locked, status=wanted)
        return self._answer(sequence, status.HTTP_200_OK)

    @extend_schema(request=EnrollSerializer, responses={200: EnrollResultSerializer})
    @action(detail=True, methods=["post"])
    def enroll(self, request: Request, pk: str) -> Response:
        """Enroll leads by hand, day 0 at `anchor_at` (default now); refused ids say who did not enter."""
        sequence = self.get_object()
        validated = _validated(EnrollSerializer(data=request.data))
        if sequence.status == SequenceStatus.ARCHIVED:
            raise ValidationError({"sequence": ["is archived: no lead can enter it"]})
        given = list(dict.fromkeys(validated["lead_ids"]))
        resolved = lead_ids_resolve(lead_ids=given)
        result = sequence_enroll(
            sequence=sequence, lead_ids=sorted(set(resolved.values())), anchor_at=validated.get("anchor_at")
        )
        enrolled = set(result["enrolled"])
        return Response(
            {
                "enrolled": result["enrolled"],
                "refused": [pk for pk in given if resolved.get(pk) not in enrolled],
                "merged": {str(pk): survivor for pk, survivor in resolved.items() if pk != survivor},
            }
        )


class IdFilter(filters.Filter):
    field_class = forms.IntegerField


class TouchFilter(filters.FilterSet):
    lead = IdFilter(
        method="filter_lead", min_value=1, max_value=MAX_ID, help_text="lead id (a merged id: its survivor)"
    )
    sequence = IdFilter(field_name="sequence_id", min_value=1, max_value=MAX_ID, help_text="sequence id")
    state = filters.ChoiceFilter(choices=TouchState.choices)
    channel = filters.ChoiceFilter(choices=Channel.choices)

    class Meta:
        model = Touch
        fields: list[str] = []

    def filter_lead(self, queryset: QuerySet[Touch], name: str, value: int) -> QuerySet[Touch]:
        lead = lead_resolve(lead_id=value)
        return queryset.filter(lead_id=lead.pk if lead else value)


class TouchViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """Touches the engine scheduled, sent, skipped or made staff tasks of, newest first."""

    serializer_class = TouchSerializer
    filterset_class = TouchFilter
    pagination_class = KeysetPagination

    def get_queryset(self) -> QuerySet[Touch]:
        return touch_list()
