"""The marketers' console for leads: the lead list and page (tags, timeline), manual merge, the import
of stock leads from CSV/XLSX, bulk keyword tagging, and the audit tables (events, stage changes,
merges) and API keys."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any
from uuid import uuid4

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db.models import Count, Exists, OuterRef, Prefetch, Q, QuerySet, Sum
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.timezone import localtime
from django.utils.timezone import now as timezone_now
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _
from import_export.admin import ExportMixin
from import_export.formats import base_formats

from content.selectors import content_recommend
from leads.auth import api_key_create
from leads.identity import IdentityError, normalize_identity, normalize_phone
from leads.imports import (
    FORMATS,
    ImportFileError,
    ImportReport,
    LeadResource,
    lead_import,
    lead_import_template,
)
from leads.keyword_tagging import keyword_rule_apply, keyword_rule_counts
from leads.models import (
    IDENTITY_FIELDS,
    ApiKey,
    Event,
    KeywordTagRule,
    Lead,
    LeadMerge,
    LeadTag,
    StageChange,
    Tag,
)
from leads.selectors import lead_timeline
from leads.services import lead_merge, lead_resolve, lead_stage_set, lead_tags_change
from leads.tagging import tag_name_normalize, tag_split
from scoring.selectors import score_explain

MERGE_WHY = "merged by hand in the admin"
STAGE_EDIT_REASON = "edited in the admin"
TIMELINE_LIMIT = 100
# A search term made only of digits and phone punctuation is a phone number (or a part of one).
_PHONE_LIKE = re.compile(r"^\+?[\d\s\-().]{3,}$")
_NON_DIGITS = re.compile(r"\D")


def _lead_link(lead_id: int | None, label: object = None) -> str:
    if lead_id is None:
        return "-"
    url = reverse("admin:leads_lead_change", args=[lead_id])
    return format_html('<a href="{}">{}</a>', url, label if label is not None else f"#{lead_id}")


# --- Leads.


class TagListFilter(admin.SimpleListFilter):
    """Leads that carry a tag (one query for the choices, an EXISTS per filtered list)."""

    title = _("tag")
    parameter_name = "tag"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [
            (str(pk), name) for pk, name in Tag.objects.order_by("group", "label").values_list("pk", "name")
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Lead]) -> QuerySet[Lead]:
        value = self.value()
        if not value or not value.isdigit():
            return queryset
        return queryset.filter(Exists(LeadTag.objects.filter(lead=OuterRef("pk"), tag_id=int(value))))


class LeadTagInline(admin.TabularInline):
    """The lead's tags with how often each was stamped; counts are written by services, not by hand."""

    model = LeadTag
    extra = 0
    fields = ["tag", "count", "first_at", "last_at", "source"]
    readonly_fields = fields
    ordering = ["-last_at", "-id"]
    verbose_name = _("tag")
    verbose_name_plural = _("tags (with how often each was stamped)")

    def get_queryset(self, request: HttpRequest) -> QuerySet[LeadTag]:
        return super().get_queryset(request).select_related("tag")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # tags are added with the "add tags" field of the lead, through the tagging service


class LeadAdminForm(forms.ModelForm):
    """Identities typed in the admin are normalised like the API's (`138 0013 8000` → E.164)."""

    tags_add = forms.CharField(
        label=_("add tags"),
        required=False,
        help_text=_("group:value names separated by commas, e.g. industry:制造, need:全渠道获客"),
    )

    class Meta:
        model = Lead
        fields = [
            "name",
            "company",
            "title",
            "industry",
            "company_size",
            "source",
            *IDENTITY_FIELDS,
            "stage",
            "owner",
            "bant_budget",
            "bant_authority",
            "bant_need",
            "bant_timeline",
            "consent",
            "consent_at",
            "consent_version",
            "do_not_contact",
            "properties",
        ]

    def _clean_identity(self, name: str) -> str | None:
        try:
            return normalize_identity(name, self.cleaned_data.get(name))
        except IdentityError as exc:
            raise forms.ValidationError(str(exc)) from exc

    def clean_external_id(self) -> str | None:
        return self._clean_identity("external_id")

    def clean_phone(self) -> str | None:
        return self._clean_identity("phone")

    def clean_email(self) -> str | None:
        return self._clean_identity("email")

    def clean_wecom_external_userid(self) -> str | None:
        return self._clean_identity("wecom_external_userid")

    def clean_wechat_unionid(self) -> str | None:
        return self._clean_identity("wechat_unionid")

    def clean_tags_add(self) -> list[str]:
        raw = self.cleaned_data.get("tags_add") or ""
        try:
            return [tag_name_normalize(name) for name in re.split(r"[,，;；、]", raw) if name.strip()]
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from exc


class LeadImportForm(forms.Form):
    file = forms.FileField(
        label=_("file"),
        help_text=_("A .csv (UTF-8 or GBK) or .xlsx file with a header row."),
    )


class LeadImportConfirmForm(forms.Form):
    stored_name = forms.RegexField(regex=r"^[0-9a-f]{32}\.(csv|xlsx)$", widget=forms.HiddenInput)
    original_name = forms.CharField(max_length=255, widget=forms.HiddenInput)


IMPORT_FOLDER = "lead-imports"
IMPORT_ROWS_LISTED = 500  # good rows listed on the report page; rows with errors are always all listed
IMPORT_FILE_TTL = timedelta(days=1)


def _import_file_store(content: bytes, extension: str) -> str:
    """Keep an uploaded file between the preview and the confirmation; return its name."""
    _import_files_prune()
    name = f"{uuid4().hex}.{extension}"
    default_storage.save(f"{IMPORT_FOLDER}/{name}", ContentFile(content))
    return name


def _import_files_prune() -> None:
    """Forget files whose preview was never confirmed."""
    try:
        _, files = default_storage.listdir(IMPORT_FOLDER)
    except FileNotFoundError:
        return
    cutoff = timezone_now() - IMPORT_FILE_TTL
    for name in files:
        path_name = f"{IMPORT_FOLDER}/{name}"
        try:
            if default_storage.get_modified_time(path_name) < cutoff:
                default_storage.delete(path_name)
        except (FileNotFoundError, NotImplementedError):
            continue


def _report_context(report: ImportReport) -> dict[str, Any]:
    listed = [
        row for index, row in enumerate(report.rows) if row.status == "error" or index < IMPORT_ROWS_LISTED
    ]
    return {"report": report, "rows_shown": listed, "rows_hidden": len(report.rows) - len(listed)}


@admin.register(Lead)
class LeadAdmin(ExportMixin, admin.ModelAdmin):
    form = LeadAdminForm
    resource_classes = [LeadResource]
    export_formats = [base_formats.CSV, base_formats.XLSX]
    to_encoding = "utf-8-sig"  # a BOM, so that Excel opens an exported CSV with Chinese text correctly
    change_list_template = "admin/leads/lead/change_list.html"
    list_display = [
        "id",
        "name",
        "company",
        "phone",
        "email",
        "stage",
        "score",
        "temperature",
        "tags_display",
        "owner",
        "source",
        "updated_at",
    ]
    list_display_links = ["id", "name"]
    list_select_related = ["owner"]
    list_filter = ["stage", "temperature", TagListFilter, "owner", "source"]
    search_fields = ["name", "company", "phone", "email"]
    search_help_text = _("Name, company, email, or a phone number typed any usual way (138 0013 8000).")
    show_full_result_count = False  # one COUNT instead of two on a large table
    ordering = ["-id"]
    list_per_page = 50
    inlines = [LeadTagInline]
    readonly_fields = [
        "score",
        "temperature",
        "last_inbound_at",
        "last_event_at",
        "created_at",
        "updated_at",
        "timeline",
        "pools_display",
        "score_explanation",
        "next_content",
    ]
    actions = ["merge_leads"]

    def get_fieldsets(
        self, request: HttpRequest, obj: Lead | None = None
    ) -> list[tuple[Any, dict[str, Any]]]:
        fieldsets: list[tuple[Any, dict[str, Any]]] = [
            (None, {"fields": ["name", "company", "title", "industry", "company_size", "source"]}),
            (_("Identities"), {"fields": list(IDENTITY_FIELDS)}),
            (
                _("Funnel"),
                {
                    "fields": [
                        "stage",
                        "owner",
                        ("bant_budget", "bant_authority", "bant_need", "bant_timeline"),
                        "score",
                        "temperature",
                        "pools_display",
                    ]
                },
            ),
            (_("Consent"), {"fields": ["consent", "consent_at", "consent_version", "do_not_contact"]}),
            (_("Tags and properties"), {"fields": ["tags_add", "properties"]}),
        ]
        if obj is not None:
            fieldsets += [
                (_("Score"), {"fields": ["score_explanation"]}),
                (_("Next best content"), {"fields": ["next_content"]}),
                (_("Timeline"), {"fields": ["timeline"]}),
                (
                    _("Dates"),
                    {
                        "fields": ["last_inbound_at", "last_event_at", "created_at", "updated_at"],
                        "classes": ["collapse"],
                    },
                ),
            ]
        return fieldsets

    def get_queryset(self, request: HttpRequest) -> QuerySet[Lead]:
        tags = LeadTag.objects.select_related("tag").order_by("-count", "tag__name")
        return super().get_queryset(request).prefetch_related(Prefetch("lead_tags", queryset=tags))

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Lead], search_term: str
    ) -> tuple[QuerySet[Lead], bool]:
        """A phone typed any usual way finds the lead's E.164 number; other terms search as usual."""
        term = search_term.strip()
        if _PHONE_LIKE.match(term) and len(_NON_DIGITS.sub("", term)) >= 3:
            try:
                return queryset.filter(phone=normalize_phone(term)), False
            except IdentityError:
                # A part of a number: match the digits anywhere in the stored number.
                return queryset.filter(phone__contains=_NON_DIGITS.sub("", term)), False
        if term.startswith("#") and term[1:].isdigit() and len(term) < 19:
            return queryset.filter(pk=int(term[1:])), False
        return super().get_search_results(request, queryset, search_term)

    @admin.display(description=_("tags"))
    def tags_display(self, lead: Lead) -> str:
        lead_tags = list(lead.lead_tags.all())
        shown = format_html_join(
            " ",
            '<span class="nurture-tag">{}{}</span>',
            ((lt.tag.name, f" ×{lt.count}" if lt.count > 1 else "") for lt in lead_tags[:5]),
        )
        more = f" +{len(lead_tags) - 5}" if len(lead_tags) > 5 else ""
        return format_html("{}{}", shown, more)

    @admin.display(description=_("pools (since)"))
    def pools_display(self, lead: Lead) -> SafeString:
        if not lead.pk:
            return SafeString("-")
        rows = lead.pool_memberships.filter(left_at__isnull=True).select_related("pool").order_by("joined_at")
        return format_html_join(
            " ",
            '<a class="nurture-tag" href="{}">{}</a> <span class="quiet">{}</span>',
            (
                (
                    reverse("admin:leads_pool_change", args=[m.pool_id]),
                    m.pool.name,
                    localtime(m.joined_at).date(),
                )
                for m in rows
            ),
        ) or SafeString("-")

    @admin.display(description=_("why this score"))
    def score_explanation(self, lead: Lead) -> SafeString:
        explanation = score_explain(lead=lead, now=timezone_now())
        return render_to_string("admin/scoring/score_explanation.html", {"e": explanation})

    @admin.display(description=_("recommended next"))
    def next_content(self, lead: Lead) -> SafeString:
        pick = content_recommend(lead=lead, now=timezone_now())
        if pick.asset is None:
            return format_html("{}<br><span class='quiet'>{}</span>", "-", " · ".join(pick.signals))
        return format_html(
            '<a href="{}">{}</a> ({})<br><span class="quiet">{}</span>',
            reverse("admin:content_contentasset_change", args=[pick.asset.pk]),
            pick.asset.title,
            pick.asset.get_form_display(),
            " · ".join(pick.signals),
        )

    @admin.display(description=_("timeline (newest first)"))
    def timeline(self, lead: Lead) -> SafeString:
        items = lead_timeline(lead=lead, limit=TIMELINE_LIMIT)
        return render_to_string(
            "admin/leads/lead/timeline.html", {"items": items, "limit": TIMELINE_LIMIT, "lead": lead}
        )

    def save_model(self, request: HttpRequest, obj: Lead, form: forms.ModelForm, change: bool) -> None:
        """A stage edited here is recorded as a stage change (by this user), like a CRM write-back."""
        if change and "stage" in form.changed_data:
            new_stage = obj.stage
            obj.stage = form.initial["stage"]
            super().save_model(request, obj, form, change)
            lead_stage_set(lead=obj, stage=new_stage, reason=STAGE_EDIT_REASON, by=request.user)
            obj.stage = new_stage
        else:
            super().save_model(request, obj, form, change)

    def save_related(self, request: HttpRequest, form: forms.ModelForm, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        names = form.cleaned_data.get("tags_add") or []
        if names:
            lead_tags_change(lead=form.instance, add=names, source="admin", now=timezone_now())

    # --- Manual merge.

    @admin.action(description=_("Merge the two selected leads"), permissions=["change", "delete"])
    def merge_leads(self, request: HttpRequest, queryset: QuerySet[Lead]) -> HttpResponse | None:
        """Two leads → a confirmation page (both side by side, the older survives) → `lead_merge`."""
        leads = list(queryset.select_related("owner").order_by("created_at", "id")[:3])
        if len(leads) != 2:
            self.message_user(request, gettext("Select exactly two leads to merge."), messages.ERROR)
            return None
        survivor, merged = leads
        merged_id = merged.pk  # the merge deletes the lead
        if request.POST.get("post") == "yes":
            try:
                lead_merge(survivor=survivor, merged=merged, why=MERGE_WHY, by=request.user)
            except (Lead.DoesNotExist, ValueError) as exc:
                self.message_user(request, gettext("The leads were not merged: %s") % exc, messages.ERROR)
                return None
            self.message_user(
                request,
                gettext("Lead #%(merged)s was merged into #%(survivor)s.")
                % {"merged": merged_id, "survivor": survivor.pk},
                messages.SUCCESS,
            )
            return HttpResponseRedirect(reverse("admin:leads_lead_change", args=[survivor.pk]))
        return TemplateResponse(
            request,
            "admin/leads/lead/merge_confirm.html",
            {
                **self.admin_site.each_context(request),
                "title": _("Merge two leads"),
                "opts": self.opts,
                "survivor": survivor,
                "merged": merged,
                "rows": self._merge_comparison(survivor, merged),
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
                "action_name": "merge_leads",
            },
        )

    def _merge_comparison(self, survivor: Lead, merged: Lead) -> list[tuple[str, Any, Any]]:
        """Rows of (field, survivor's value, merged lead's value) for the confirmation page."""
        ids = [survivor.pk, merged.pk]
        tags = dict(
            LeadTag.objects.filter(lead__in=ids)
            .values("lead")
            .annotate(n=Count("id"))
            .values_list("lead", "n")
        )
        events = dict(
            Event.objects.filter(lead__in=ids).values("lead").annotate(n=Count("id")).values_list("lead", "n")
        )
        names = [
            "name",
            "company",
            "title",
            "industry",
            "company_size",
            *IDENTITY_FIELDS,
            "source",
            "stage",
            "owner",
            "score",
            "created_at",
        ]
        rows: list[tuple[str, Any, Any]] = []
        for name in names:
            field = Lead._meta.get_field(name)
            if field.choices:
                values = [getattr(lead, f"get_{name}_display")() for lead in (survivor, merged)]
            else:
                values = [getattr(lead, name) for lead in (survivor, merged)]
            rows.append((str(field.verbose_name), *("" if value is None else value for value in values)))
        rows.append((gettext("tags"), tags.get(survivor.pk, 0), tags.get(merged.pk, 0)))
        rows.append((gettext("events"), events.get(survivor.pk, 0), events.get(merged.pk, 0)))
        return rows

    # --- Import of stock leads.

    def get_urls(self) -> list[Any]:
        extra = [
            path("import/", self.admin_site.admin_view(self.import_view), name="leads_lead_import"),
            path(
                "import/template.<str:file_format>",
                self.admin_site.admin_view(self.import_template_view),
                name="leads_lead_import_template",
            ),
        ]
        return extra + super().get_urls()

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        """A merged lead's old page leads to the survivor (links in CRMs and messages keep working)."""
        if object_id.isdigit() and len(object_id) < 19 and not Lead.objects.filter(pk=object_id).exists():
            survivor = lead_resolve(lead_id=int(object_id))
            if survivor is not None:
                self.message_user(
                    request,
                    gettext("Lead #%(merged)s was merged into #%(survivor)s.")
                    % {"merged": object_id, "survivor": survivor.pk},
                    messages.INFO,
                )
                return HttpResponseRedirect(reverse("admin:leads_lead_change", args=[survivor.pk]))
        return super().change_view(request, object_id, form_url, extra_context)

    def has_import_permission(self, request: HttpRequest) -> bool:
        return self.has_add_permission(request) and self.has_change_permission(request)

    def _check_import_permission(self, request: HttpRequest) -> None:
        if not self.has_import_permission(request):
            raise PermissionDenied

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        extra_context = {
            **(extra_context or {}),
            "has_import_permission": self.has_import_permission(request),
        }
        return super().changelist_view(request, extra_context)

    def import_template_view(self, request: HttpRequest, file_format: str) -> HttpResponse:
        self._check_import_permission(request)
        if file_format not in FORMATS:
            raise PermissionDenied
        response = HttpResponse(
            lead_import_template(file_format=file_format),
            content_type=FORMATS[file_format]().get_content_type(),
        )
        response["Content-Disposition"] = f'attachment; filename="leads-template.{file_format}"'
        return response

    def import_view(self, request: HttpRequest) -> HttpResponse:
        """Upload → preview (a dry run: per-row created/updated/error) → confirm → the import's report."""
        self._check_import_permission(request)
        context: dict[str, Any] = {
            **self.admin_site.each_context(request),
            "title": _("Import leads"),
            "opts": self.opts,
            "formats": sorted(FORMATS),
        }
        form = LeadImportForm()
        if request.method == "POST" and "confirm" in request.POST:
            confirm = LeadImportConfirmForm(request.POST)
            stored = confirm.cleaned_data["stored_name"] if confirm.is_valid() else None
            path_name = f"{IMPORT_FOLDER}/{stored}"
            if stored is None or not default_storage.exists(path_name):
                self.message_user(
                    request, gettext("The uploaded file has expired; upload it again."), messages.ERROR
                )
                return HttpResponseRedirect(reverse("admin:leads_lead_import"))
            with default_storage.open(path_name, "rb") as handle:
                content = handle.read()
            report = lead_import(content=content, file_name=stored, dry_run=False)
            default_storage.delete(path_name)
            self.message_user(
                request,
                gettext("Imported %(name)s: %(created)s created, %(updated)s updated, %(failed)s failed.")
                % {
                    "name": confirm.cleaned_data["original_name"],
                    "created": report.created,
                    "updated": report.updated,
                    "failed": report.failed,
                },
                messages.WARNING if report.failed else messages.SUCCESS,
            )
            context.update(_report_context(report), original_name=confirm.cleaned_data["original_name"])
        elif request.method == "POST":
            form = LeadImportForm(request.POST, request.FILES)
            if form.is_valid():
                upload = form.cleaned_data["file"]
                content = upload.read()
                try:
                    report = lead_import(content=content, file_name=upload.name, dry_run=True)
                except ImportFileError as exc:
                    form.add_error("file", str(exc))
                else:
                    extension = upload.name.rsplit(".", 1)[-1].lower()
                    context.update(
                        _report_context(report),
                        original_name=upload.name,
                        confirm_form=LeadImportConfirmForm(
                            initial={
                                "stored_name": _import_file_store(content, extension),
                                "original_name": upload.name,
                            }
                        ),
                    )
        context["form"] = form
        return TemplateResponse(request, "admin/leads/lead/import.html", context)


# --- Tags.


@admin.register(Tag)
class TagAdmin(admin.ModelAdmin):
    list_display = ["name", "group", "label", "lead_count", "stamp_count", "created_at"]
    list_filter = ["group"]
    search_fields = ["name", "label"]
    fields = ["name", "group", "label", "created_at"]
    readonly_fields = ["group", "label", "created_at"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Tag]:
        return (
            super()
            .get_queryset(request)
            .annotate(lead_count=Count("lead_tags"), stamp_count=Sum("lead_tags__count"))
        )

    @admin.display(description=_("leads"), ordering="lead_count")
    def lead_count(self, tag: Tag) -> str:
        url = reverse("admin:leads_lead_changelist") + f"?tag={tag.pk}"
        return format_html('<a href="{}">{}</a>', url, tag.lead_count)

    @admin.display(description=_("times stamped"), ordering="stamp_count")
    def stamp_count(self, tag: Tag) -> int:
        return tag.stamp_count or 0

    def save_model(self, request: HttpRequest, obj: Tag, form: forms.ModelForm, change: bool) -> None:
        obj.name = tag_name_normalize(obj.name)
        obj.group, obj.label = tag_split(obj.name)
        super().save_model(request, obj, form, change)


# --- Audit tables: written by services, read here.


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


# The event types of the contract (CONTRACT.md §3); other types are found with the search box.
EVENT_TYPES = (
    "registered",
    "form_submitted",
    "wecom_added",
    "wecom_deleted",
    "message_in",
    "message_out",
    "content_viewed",
    "link_clicked",
    "webinar_registered",
    "webinar_attended",
    "trial_started",
    "call_logged",
    "email_opened",
    "email_bounced",
    "unsubscribed",
)


class EventTypeFilter(admin.SimpleListFilter):
    """The known event types, without a `SELECT DISTINCT` over the whole (large) event table."""

    title = _("type")
    parameter_name = "type"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [(name, name) for name in EVENT_TYPES]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Event]) -> QuerySet[Event]:
        return queryset.filter(type=self.value()) if self.value() else queryset


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    list_display = ["id", "type", "lead_display", "occurred_at", "source", "event_id", "created_at"]
    list_filter = [EventTypeFilter]
    list_select_related = ["lead"]
    search_fields = ["event_id", "type"]
    raw_id_fields = ["lead"]
    ordering = ["-occurred_at", "-id"]
    show_full_result_count = False

    @admin.display(description=_("lead"), ordering="lead")
    def lead_display(self, event: Event) -> str:
        return _lead_link(event.lead_id, event.lead)


@admin.register(StageChange)
class StageChangeAdmin(ReadOnlyAdmin):
    list_display = ["id", "lead_display", "from_stage", "to_stage", "reason", "amount", "by", "actor", "at"]
    list_filter = ["to_stage", "from_stage"]
    list_select_related = ["lead", "by"]
    search_fields = ["reason", "actor", "lead__name", "lead__company"]
    raw_id_fields = ["lead"]
    ordering = ["-at", "-id"]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description=_("lead"), ordering="lead")
    def lead_display(self, change: StageChange) -> str:
        return _lead_link(change.lead_id, change.lead)


@admin.register(LeadMerge)
class LeadMergeAdmin(ReadOnlyAdmin):
    list_display = ["id", "survivor_display", "merged_id", "identities_display", "why", "by", "at"]
    list_select_related = ["survivor", "by"]
    search_fields = ["why"]
    fields = ["survivor", "merged_id", "identities", "snapshot", "why", "by", "at"]
    ordering = ["-at", "-id"]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[LeadMerge], search_term: str
    ) -> tuple[QuerySet[LeadMerge], bool]:
        term = search_term.strip().lstrip("#")
        if term.isdigit() and len(term) < 19:
            return queryset.filter(Q(merged_id=int(term)) | Q(survivor_id=int(term))), False
        return super().get_search_results(request, queryset, search_term)

    @admin.display(description=_("survivor"), ordering="survivor")
    def survivor_display(self, merge: LeadMerge) -> str:
        return _lead_link(merge.survivor_id, merge.survivor)

    @admin.display(description=_("identities of the merged lead"))
    def identities_display(self, merge: LeadMerge) -> str:
        return format_html_join(", ", "{}: {}", sorted((merge.identities or {}).items()))


# --- API keys.


class ApiKeyAddForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        label=_("scopes"),
        choices=ApiKey.Scope.choices,
        widget=forms.CheckboxSelectMultiple,
        initial=[ApiKey.Scope.READ],
    )

    class Meta:
        model = ApiKey
        fields = ["name"]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "prefix",
        "scopes_display",
        "is_active",
        "created_at",
        "last_used_at",
        "revoked_at",
    ]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "prefix"]
    ordering = ["-created_at"]
    actions = ["revoke_keys"]
    # The digest is never shown; the key itself is shown once, when it is added.
    fields = ["name", "prefix", "scopes", "created_at", "last_used_at", "revoked_at"]

    def get_form(
        self, request: HttpRequest, obj: ApiKey | None = None, **kwargs: Any
    ) -> type[forms.ModelForm]:
        if obj is None:
            kwargs["form"] = ApiKeyAddForm
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> list[str]:
        return ["name", "scopes"] if obj is None else self.fields

    def get_readonly_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> list[str]:
        return [] if obj is None else self.fields

    def save_model(self, request: HttpRequest, obj: ApiKey, form: forms.ModelForm, change: bool) -> None:
        """A new key is made by `api_key_create` (only the digest is stored); its plain key is shown once."""
        if change:
            return
        key, plain = api_key_create(name=form.cleaned_data["name"], scopes=list(form.cleaned_data["scopes"]))
        for name in ("pk", "prefix", "digest", "scopes", "created_at"):
            setattr(obj, name, getattr(key, name))
        obj._state.adding = False
        obj._state.db = key._state.db
        self.message_user(
            request,
            format_html(
                '{} <code class="nurture-api-key">{}</code>',
                gettext("Copy the new API key now; it is not shown again:"),
                plain,
            ),
            messages.WARNING,
        )

    @admin.display(description=_("scopes"))
    def scopes_display(self, key: ApiKey) -> str:
        return ", ".join(key.scopes or [])

    @admin.display(description=_("active"), boolean=True)
    def is_active(self, key: ApiKey) -> bool:
        return key.revoked_at is None

    @admin.action(description=_("Revoke the selected API keys"), permissions=["change"])
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        revoked = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone_now())
        self.message_user(
            request,
            ngettext("%(count)d API key revoked.", "%(count)d API keys revoked.", revoked)
            % {"count": revoked},
            messages.SUCCESS,
        )


# --- Bulk keyword tagging.


class KeywordTagRuleForm(forms.ModelForm):
    class Meta:
        model = KeywordTagRule
        fields = ["name", "field", "property_key", "keywords", "tag_name"]

    def clean_tag_name(self) -> str:
        try:
            return tag_name_normalize(self.cleaned_data["tag_name"])
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from exc

    def clean_keywords(self) -> str:
        keywords = self.cleaned_data["keywords"]
        if not KeywordTagRule(keywords=keywords).keyword_list():
            raise forms.ValidationError(_("Give at least one keyword."))
        return keywords

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if (
            data.get("field") == KeywordTagRule.Field.PROPERTY
            and not (data.get("property_key") or "").strip()
        ):
            self.add_error("property_key", _("Name the property whose value the keywords are looked for in."))
        return data


@admin.register(KeywordTagRule)
class KeywordTagRuleAdmin(admin.ModelAdmin):
    form = KeywordTagRuleForm
    change_form_template = "admin/leads/keywordtagrule/change_form.html"
    list_display = [
        "name",
        "field",
        "property_key",
        "keywords_display",
        "tag_name",
        "last_applied_at",
        "last_applied_count",
    ]
    list_filter = ["field"]
    search_fields = ["name", "keywords", "tag_name"]
    readonly_fields = ["last_applied_at", "last_applied_count"]
    fields = [
        "name",
        "field",
        "property_key",
        "keywords",
        "tag_name",
        "last_applied_at",
        "last_applied_count",
    ]
    actions = ["preview_rules", "apply_rules"]

    @admin.display(description=_("keywords"))
    def keywords_display(self, rule: KeywordTagRule) -> str:
        return ", ".join(rule.keyword_list())

    def get_urls(self) -> list[Any]:
        extra = [
            path(
                "<int:rule_id>/preview/",
                self.admin_site.admin_view(self.preview_view),
                name="leads_keywordtagrule_preview",
            ),
            path(
                "<int:rule_id>/apply/",
                self.admin_site.admin_view(self.apply_view),
                name="leads_keywordtagrule_apply",
            ),
        ]
        return extra + super().get_urls()

    def _preview_message(self, request: HttpRequest, rule: KeywordTagRule) -> None:
        counts = keyword_rule_counts(rule=rule)
        self.message_user(
            request,
            gettext(
                "%(rule)s: %(untagged)s leads would get the tag %(tag)s (%(matching)s leads match, "
                "%(tagged)s of them have it already)."
            )
            % {
                "rule": rule.name,
                "untagged": counts.untagged,
                "tag": rule.tag_name,
                "matching": counts.matching,
                "tagged": counts.matching - counts.untagged,
            },
            messages.INFO,
        )

    def _apply(self, request: HttpRequest, rule: KeywordTagRule) -> None:
        tagged = keyword_rule_apply(rule=rule, now=timezone_now())
        self.message_user(
            request,
            gettext("%(rule)s: %(count)s leads tagged %(tag)s.")
            % {"rule": rule.name, "count": tagged, "tag": rule.tag_name},
            messages.SUCCESS,
        )

    @admin.action(
        description=_("Preview: count the leads the selected rules would tag"), permissions=["view"]
    )
    def preview_rules(self, request: HttpRequest, queryset: QuerySet[KeywordTagRule]) -> None:
        for rule in queryset.order_by("pk"):
            self._preview_message(request, rule)

    @admin.action(description=_("Apply the selected rules: tag all matching leads"), permissions=["change"])
    def apply_rules(self, request: HttpRequest, queryset: QuerySet[KeywordTagRule]) -> None:
        for rule in queryset.order_by("pk"):
            self._apply(request, rule)

    def _rule_from_post(self, request: HttpRequest, rule_id: int, *, change: bool) -> KeywordTagRule:
        if request.method != "POST":
            raise PermissionDenied
        rule = get_object_or_404(KeywordTagRule, pk=rule_id)
        allowed = (
            self.has_change_permission(request, rule) if change else self.has_view_permission(request, rule)
        )
        if not allowed:
            raise PermissionDenied
        return rule

    def preview_view(self, request: HttpRequest, rule_id: int) -> HttpResponse:
        rule = self._rule_from_post(request, rule_id, change=False)
        self._preview_message(request, rule)
        return HttpResponseRedirect(reverse("admin:leads_keywordtagrule_change", args=[rule.pk]))

    def apply_view(self, request: HttpRequest, rule_id: int) -> HttpResponse:
        rule = self._rule_from_post(request, rule_id, change=True)
        self._apply(request, rule)
        return HttpResponseRedirect(reverse("admin:leads_keywordtagrule_change", args=[rule.pk]))


from leads import admin_pools  # noqa: E402, F401  (the pool editor lives in its own module)
