"""Admin of WeCom: channel QR codes (渠道活码) synced with WeCom on save, staff members, and the inbound
payloads of every channel (read-only, with "process again")."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from channels.adapters.base import RetryableError
from channels.inbound import inbound_payloads_requeue
from channels.models import ContactWay, InboundPayload, WecomMember
from channels.wecom.client import WecomError
from channels.wecom.contact_ways import (
    NotConfigured,
    contact_way_delete,
    contact_way_sync,
    contact_ways_with_leads,
)
from channels.wecom.inbound import wecom_configured
from content.templating import TemplateRefused, template_check

# Fields whose change must reach WeCom.
_SYNCED_FIELDS = {"name", "campaign", "state", "user_ids_text", "skip_verify", "active"}


def _split(text: str) -> list[str]:
    parts = text.replace("，", ",").replace("\n", ",").split(",")
    return list(dict.fromkeys(part.strip() for part in parts if part.strip()))


class ContactWayForm(forms.ModelForm):
    user_ids_text = forms.CharField(
        label=_("staff UserIDs"),
        help_text=_(
            "WeCom UserIDs, separated by commas: one makes a single-member code, several a multi-member code"
        ),
    )
    tags_text = forms.CharField(
        label=_("tags"),
        required=False,
        help_text=_("Tags given to leads added through this code, separated by commas (group:value)"),
    )

    class Meta:
        model = ContactWay
        fields = ["name", "state", "source", "campaign", "skip_verify", "welcome_text", "active"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["welcome_text"].help_text = _(
            "Sent to the customer right after the add; may use {{ lead.name }} and {{ sender.name }}. "
            "Empty: the default welcome text (WECOM_WELCOME_TEXT)."
        )
        if self.instance.pk:
            self.fields["user_ids_text"].initial = ", ".join(self.instance.user_ids or [])
            self.fields["tags_text"].initial = ", ".join(self.instance.tags or [])

    def clean_state(self) -> str:
        state = self.cleaned_data["state"].strip()
        if not state:
            raise forms.ValidationError(_("The state names the channel; it cannot be blank."))
        return state

    def clean_user_ids_text(self) -> list[str]:
        users = _split(self.cleaned_data["user_ids_text"])
        if not users:
            raise forms.ValidationError(_("At least one staff UserID."))
        if len(users) > 100:
            raise forms.ValidationError(_("At most 100 staff members per code."))
        return users

    def clean_tags_text(self) -> list[str]:
        return _split(self.cleaned_data.get("tags_text") or "")

    def clean_welcome_text(self) -> str:
        text = self.cleaned_data.get("welcome_text") or ""
        if text.strip():
            try:
                template_check(text)
            except TemplateRefused as exc:
                raise forms.ValidationError(str(exc)) from exc
        return text

    def save(self, commit: bool = True) -> ContactWay:
        self.instance.user_ids = self.cleaned_data["user_ids_text"]
        self.instance.tags = self.cleaned_data["tags_text"]
        return super().save(commit=commit)


def _sync_message(request: HttpRequest, contact_way: ContactWay) -> bool:
    """Sync one code with WeCom and say how it went; False when it did not reach WeCom."""
    try:
        contact_way_sync(contact_way=contact_way)
    except NotConfigured:
        messages.warning(
            request,
            gettext(
                "WeCom is not configured (WECOM_CORP_ID, WECOM_SECRET): “%(name)s” is saved here only; "
                "save it again once WeCom is configured."
            )
            % {"name": contact_way.name},
        )
        return False
    except (WecomError, RetryableError, ValueError) as exc:
        messages.error(
            request, gettext("WeCom refused “%(name)s”: %(error)s") % {"name": contact_way.name, "error": exc}
        )
        return False
    return True


@admin.register(ContactWay)
class ContactWayAdmin(admin.ModelAdmin):
    form = ContactWayForm
    list_display = ["name", "state", "source", "campaign", "staff", "qr", "leads", "status", "active"]
    list_filter = ["active", "source"]
    search_fields = ["name", "state", "source", "campaign"]
    readonly_fields = ["qr_preview", "config_id", "synced_at", "error"]
    actions = ["sync_selected"]
    fieldsets = [
        (None, {"fields": ["name", "state", "source", "campaign", "active"]}),
        (_("WeCom"), {"fields": ["user_ids_text", "skip_verify", "tags_text", "welcome_text"]}),
        (_("In WeCom"), {"fields": ["qr_preview", "config_id", "synced_at", "error"]}),
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[ContactWay]:
        return contact_ways_with_leads(super().get_queryset(request))

    @admin.display(description=_("staff"))
    def staff(self, obj: ContactWay) -> str:
        return ", ".join(obj.user_ids or [])

    @admin.display(description=_("QR code"))
    def qr(self, obj: ContactWay) -> str:
        if not obj.qr_code:
            return "-"
        return format_html(
            '<a href="{}" target="_blank" rel="noopener"><img src="{}" alt="{}" width="64" height="64"></a>',
            obj.qr_code,
            obj.qr_code,
            obj.state,
        )

    @admin.display(description=_("QR code"))
    def qr_preview(self, obj: ContactWay) -> str:
        if not obj.qr_code:
            return gettext("not created in WeCom yet")
        return format_html('<img src="{}" alt="{}" width="200" height="200">', obj.qr_code, obj.state)

    @admin.display(description=_("leads acquired"), ordering="leads_acquired")
    def leads(self, obj: ContactWay) -> int:
        return getattr(obj, "leads_acquired", 0)

    @admin.display(description=_("WeCom"))
    def status(self, obj: ContactWay) -> str:
        if obj.error:
            return format_html('<span title="{}">{}</span>', obj.error, gettext("error"))
        if obj.config_id:
            return gettext("synced")
        if not wecom_configured():
            return gettext("not configured")
        return gettext("not created") if obj.active else gettext("inactive")

    def save_model(self, request: HttpRequest, obj: ContactWay, form: forms.ModelForm, change: bool) -> None:
        super().save_model(request, obj, form, change)
        needs_sync = (
            not change
            or bool(_SYNCED_FIELDS & set(form.changed_data))
            or (obj.active and not obj.config_id)
            or (not obj.active and bool(obj.config_id))
        )
        if needs_sync:
            _sync_message(request, obj)

    def delete_model(self, request: HttpRequest, obj: ContactWay) -> None:
        warning = contact_way_delete(contact_way=obj)
        if warning:
            messages.warning(request, gettext("The QR code may still work in WeCom: %(w)s") % {"w": warning})

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[ContactWay]) -> None:
        for obj in queryset:
            self.delete_model(request, obj)

    @admin.action(description=_("Sync the selected QR codes with WeCom"))
    def sync_selected(self, request: HttpRequest, queryset: QuerySet[ContactWay]) -> None:
        synced = sum(_sync_message(request, obj) for obj in queryset)
        if synced:
            messages.success(
                request, ngettext("%(n)d QR code synced.", "%(n)d QR codes synced.", synced) % {"n": synced}
            )


@admin.register(WecomMember)
class WecomMemberAdmin(admin.ModelAdmin):
    list_display = ["userid", "name", "user"]
    search_fields = ["userid", "name", "user__username"]
    raw_id_fields = ["user"]


class ProcessedFilter(admin.SimpleListFilter):
    title = _("processed")
    parameter_name = "processed"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, Any]]:
        return [("yes", _("Yes")), ("no", _("No"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet[InboundPayload]) -> QuerySet[InboundPayload]:
        if self.value() == "yes":
            return queryset.filter(processed_at__isnull=False)
        if self.value() == "no":
            return queryset.filter(processed_at__isnull=True)
        return queryset


@admin.register(InboundPayload)
class InboundPayloadAdmin(admin.ModelAdmin):
    list_display = ["received_at", "source", "kind", "processed", "attempts", "short_error"]
    list_filter = ["source", "kind", ProcessedFilter]
    search_fields = ["dedupe_key", "kind"]
    date_hierarchy = "received_at"
    fields = [
        "source",
        "kind",
        "dedupe_key",
        "received_at",
        "processed_at",
        "attempts",
        "error",
        "pretty_body",
        "raw",
    ]
    readonly_fields = fields
    actions = ["process_again"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: InboundPayload | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: InboundPayload | None = None) -> bool:
        return False

    def has_process_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("nurture_channels.change_inboundpayload")

    @admin.display(description=_("processed"), boolean=True, ordering="processed_at")
    def processed(self, obj: InboundPayload) -> bool:
        return obj.processed_at is not None

    @admin.display(description=_("error"))
    def short_error(self, obj: InboundPayload) -> str:
        return obj.error[:80]

    @admin.display(description=_("body"))
    def pretty_body(self, obj: InboundPayload) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.body, ensure_ascii=False, indent=2))

    @admin.action(description=_("Process again"), permissions=["process"])
    def process_again(self, request: HttpRequest, queryset: QuerySet[InboundPayload]) -> None:
        ids = list(queryset.values_list("pk", flat=True))
        done = inbound_payloads_requeue(payload_ids=ids)
        messages.success(
            request,
            ngettext("%(n)d payload queued again.", "%(n)d payloads queued again.", done) % {"n": done},
        )
        if done < len(ids):
            messages.warning(
                request,
                gettext("%(n)d payloads of other sources were left as they are (only WeCom payloads here).")
                % {"n": len(ids) - done},
            )
