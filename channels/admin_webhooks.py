"""Outbound webhooks in the admin: subscriptions (the secret is shown once, when it is made, then only
masked) and the delivery log with "retry now"."""

from __future__ import annotations

import json
import secrets
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.timezone import now as timezone_now
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from channels.models import WebhookDelivery, WebhookSubscription
from channels.webhooks import (
    WEBHOOK_EVENT_TYPES,
    webhook_outbox_head,
    webhook_payload,
    webhook_url_refusal,
    webhooks_retry_now,
)


def _masked(secret: str) -> str:
    return f"••••••{secret[-4:]}" if len(secret) >= 8 else "••••••"


class WebhookSubscriptionForm(forms.ModelForm):
    url = forms.URLField(label=_("URL"), max_length=500, assume_scheme="https")
    events = forms.MultipleChoiceField(
        label=_("event types"),
        choices=[(name, name) for name in WEBHOOK_EVENT_TYPES],
        widget=forms.CheckboxSelectMultiple,
    )
    new_secret = forms.CharField(
        label=_("secret"),
        required=False,
        min_length=16,
        max_length=128,
        strip=False,
        widget=forms.PasswordInput(render_value=False),
        help_text=_(
            "Leave empty: a new subscription gets a generated secret (shown once); a saved one keeps its own."
        ),
    )

    class Meta:
        model = WebhookSubscription
        fields = ["url", "events", "description", "active"]

    def clean_url(self) -> str:
        url = self.cleaned_data["url"]
        if not url.lower().startswith(("http://", "https://")):
            raise forms.ValidationError(gettext("Must be an http or https URL."))
        if refusal := webhook_url_refusal(url, resolve=False):
            raise forms.ValidationError(gettext("Must be a public address (%(why)s).") % {"why": refusal})
        return url


@admin.register(WebhookSubscription)
class WebhookSubscriptionAdmin(admin.ModelAdmin):
    form = WebhookSubscriptionForm
    list_display = ["url", "event_list", "active", "secret_masked", "description", "created_at"]
    list_filter = ["active"]
    search_fields = ["url", "description"]
    readonly_fields = ["secret_masked", "outbox_cursor", "created_at"]
    fields = [
        "url",
        "events",
        "new_secret",
        "secret_masked",
        "description",
        "active",
        "outbox_cursor",
        "created_at",
    ]

    @admin.display(description=_("event types"))
    def event_list(self, obj: WebhookSubscription) -> str:
        return ", ".join(obj.events or [])

    @admin.display(description=_("secret"))
    def secret_masked(self, obj: WebhookSubscription) -> str:
        return _masked(obj.secret) if obj.pk else "—"

    def save_model(self, request: HttpRequest, obj: WebhookSubscription, form: Any, change: bool) -> None:
        given = form.cleaned_data.get("new_secret") or ""
        generated = ""
        if given:
            obj.secret = given
        elif not change:
            obj.secret = generated = secrets.token_urlsafe(32)
        if not change:
            obj.outbox_cursor = webhook_outbox_head()  # it gets what happens from now on, no backfill
        super().save_model(request, obj, form, change)
        if generated:
            self.message_user(
                request,
                format_html(
                    "{} <code>{}</code>",
                    gettext("The subscription's secret (shown this once; copy it to the receiver):"),
                    generated,
                ),
                messages.WARNING,
            )


class DeliveryTypeFilter(admin.SimpleListFilter):
    """The known message types, without a `SELECT DISTINCT` over the outbox."""

    title = _("type")
    parameter_name = "type"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [(name, name) for name in WEBHOOK_EVENT_TYPES]

    def queryset(
        self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]
    ) -> QuerySet[WebhookDelivery]:
        return queryset.filter(message__type=self.value()) if self.value() else queryset


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = [
        "pk",
        "subscription",
        "message_type",
        "lead",
        "state",
        "attempts",
        "next_attempt_at",
        "last_status",
        "short_error",
        "delivered_at",
    ]
    list_filter = ["state", DeliveryTypeFilter, "subscription"]
    list_select_related = ["subscription", "message"]
    search_fields = ["=message__lead_id", "=message__id"]
    actions = ["retry_now"]
    readonly_fields = [
        "subscription",
        "message_type",
        "lead",
        "payload",
        "state",
        "attempts",
        "created_at",
        "next_attempt_at",
        "claimed_at",
        "last_status",
        "last_error",
        "last_response",
        "delivered_at",
    ]
    fields = readonly_fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # The change page shows the delivery; the list's action needs the change permission.
        return super().has_change_permission(request, obj) if obj is None else False

    @admin.display(description=_("type"), ordering="message__type")
    def message_type(self, obj: WebhookDelivery) -> str:
        return obj.message.type

    @admin.display(description=_("lead"))
    def lead(self, obj: WebhookDelivery) -> int | None:
        return obj.message.lead_id

    @admin.display(description=_("last error"))
    def short_error(self, obj: WebhookDelivery) -> str:
        return obj.last_error[:80]

    @admin.display(description=_("payload"))
    def payload(self, obj: WebhookDelivery) -> str:
        return format_html(
            "<pre>{}</pre>", json.dumps(webhook_payload(obj.message), ensure_ascii=False, indent=2)
        )

    @admin.action(description=_("Retry now"), permissions=["change"])
    def retry_now(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> None:
        count = webhooks_retry_now(delivery_ids=queryset.values_list("pk", flat=True), now=timezone_now())
        self.message_user(
            request,
            ngettext(
                "%(count)d delivery will be attempted at the next tick.",
                "%(count)d deliveries will be attempted at the next tick.",
                count,
            )
            % {"count": count},
            messages.SUCCESS,
        )
