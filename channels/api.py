"""The channels' API (CONTRACT §3): outbound webhook subscriptions and call tasks.

`/webhooks/`: `{"url", "events": [...], "secret"}`; the secret is write-only (never in an answer). A new
subscription starts from now: it gets the messages recorded after it, no backfill.
`/call-tasks/`: the calls to make (`?assignee=&state=`), and `POST {id}/log/` to log a call's outcome.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.db.models import Q, QuerySet
from django.utils.timezone import now as timezone_now
from django_filters import rest_framework as filters
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from channels.calls import CallLogError, call_log
from channels.models import CallTask, WebhookSubscription
from channels.webhooks import WEBHOOK_EVENT_TYPES, webhook_subscription_create, webhook_url_refusal
from leads.api.pagination import KeysetPagination

MAX_ID = 2**63 - 1


class WebhookSubscriptionSerializer(serializers.ModelSerializer):
    url = serializers.URLField(max_length=500, help_text="where the signed POSTs go (http or https)")
    events = serializers.ListField(
        child=serializers.ChoiceField(choices=WEBHOOK_EVENT_TYPES),
        allow_empty=False,
        max_length=len(WEBHOOK_EVENT_TYPES) * 4,
        help_text="outbox message types to receive",
    )
    secret = serializers.CharField(
        write_only=True,
        min_length=16,
        max_length=128,
        trim_whitespace=False,
        help_text="HMAC-SHA256 key of X-Nurture-Signature; write-only, never returned",
    )
    description = serializers.CharField(max_length=200, required=False, allow_blank=True)
    active = serializers.BooleanField(required=False)

    class Meta:
        model = WebhookSubscription
        fields = ["id", "url", "events", "secret", "description", "active", "created_at"]
        read_only_fields = ["id", "created_at"]

    def validate_url(self, value: str) -> str:
        if not value.lower().startswith(("http://", "https://")):
            raise ValidationError("must be an http or https URL")
        if refusal := webhook_url_refusal(value, resolve=False):
            raise ValidationError(f"must be a public address ({refusal})")
        return value

    def validate_secret(self, value: str) -> str:
        if "\x00" in value:
            raise ValidationError("must not contain NUL characters")
        return value

    def validate_events(self, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))


class WebhookSubscriptionViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Outbound webhook subscriptions: list, create, read, edit, delete (reads need `read`, changes
    `write`). The secret is write-only. A new subscription gets the messages recorded after it.

    Each message is POSTed as JSON `{"id", "type", "occurred_at", "data"}` (`id`: the outbox message,
    the same on every retry; `data.lead`: the lead id) with `X-Nurture-Signature: sha256=<hex
    HMAC-SHA256 of the raw body with the secret>`, `X-Nurture-Event`, `X-Nurture-Delivery`,
    `X-Nurture-Timestamp`; any answer but 2xx is retried with backoff for 24 hours."""

    serializer_class = WebhookSubscriptionSerializer
    pagination_class = KeysetPagination
    lookup_value_regex = r"[0-9]{1,18}"
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self) -> QuerySet[WebhookSubscription]:
        return WebhookSubscription.objects.all()

    @extend_schema(responses={201: WebhookSubscriptionSerializer})
    def create(self, request: Request) -> Response:
        serializer = WebhookSubscriptionSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        subscription = webhook_subscription_create(**serializer.validated_data)
        return Response(WebhookSubscriptionSerializer(subscription).data, status=status.HTTP_201_CREATED)


class CallTaskSerializer(serializers.ModelSerializer):
    lead = serializers.IntegerField(source="lead_id", read_only=True)
    touch = serializers.IntegerField(source="touch_id", read_only=True, allow_null=True)
    assignee = serializers.SerializerMethodField()

    class Meta:
        model = CallTask
        fields = [
            "id",
            "lead",
            "touch",
            "assignee",
            "script",
            "due_at",
            "state",
            "outcome",
            "call_back_at",
            "notes",
            "done_at",
            "created_at",
        ]
        read_only_fields = fields

    def get_assignee(self, task: CallTask) -> str | None:
        return task.assignee.username if task.assignee_id and task.assignee else None


class CallLogSerializer(serializers.Serializer):
    outcome = serializers.ChoiceField(choices=CallTask.Outcome.choices)
    notes = serializers.CharField(required=False, allow_blank=True, max_length=5000, default="")
    call_back_at = serializers.DateTimeField(required=False, allow_null=True, default=None)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs["outcome"] == CallTask.Outcome.CALL_BACK and attrs.get("call_back_at") is None:
            raise ValidationError({"call_back_at": ["a call back needs a time"]})
        return attrs


class _IdFilter(filters.Filter):
    field_class = forms.IntegerField


class CallTaskFilter(filters.FilterSet):
    assignee = filters.CharFilter(
        method="filter_assignee", max_length=150, help_text="username or user id; `none`: unassigned"
    )
    state = filters.ChoiceFilter(choices=CallTask.State.choices)
    lead = _IdFilter(field_name="lead_id", min_value=1, max_value=MAX_ID, help_text="lead id")

    class Meta:
        model = CallTask
        fields: list[str] = []

    def filter_assignee(self, queryset: QuerySet[CallTask], name: str, value: str) -> QuerySet[CallTask]:
        if value == "none":
            return queryset.filter(assignee__isnull=True)
        if value.isdigit() and len(value) < 19:
            return queryset.filter(Q(assignee_id=int(value)) | Q(assignee__username=value))
        return queryset.filter(assignee__username=value)


class CallTaskViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Call tasks (from touches on the `call` channel, or call backs), newest first; `log` records a
    call's outcome (`call_logged` on the lead) and closes the task."""

    serializer_class = CallTaskSerializer
    filterset_class = CallTaskFilter
    pagination_class = KeysetPagination
    lookup_value_regex = r"[0-9]{1,18}"

    def get_queryset(self) -> QuerySet[CallTask]:
        return CallTask.objects.select_related("assignee")

    @extend_schema(request=CallLogSerializer, responses={200: CallTaskSerializer})
    @action(detail=True, methods=["post"])
    def log(self, request: Request, pk: str) -> Response:
        """Log the call: outcome, notes, and for `call_back` the time of the next call (a new task)."""
        task = self.get_object()
        serializer = CallLogSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            call_log(
                task=task,
                lead=task.lead,
                outcome=data["outcome"],
                notes=data["notes"],
                call_back_at=data["call_back_at"],
                by=request.user,
                now=timezone_now(),
            )
        except CallLogError as exc:
            if "task" in exc.errors:
                return Response(
                    {"detail": exc.errors["task"], "code": "conflict"}, status=status.HTTP_409_CONFLICT
                )
            raise ValidationError({k: [v] for k, v in exc.errors.items()}) from exc
        return Response(CallTaskSerializer(self.get_queryset().get(pk=task.pk)).data)
