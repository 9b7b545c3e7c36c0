"""Sequences in the admin: the sequence with its steps inline (validated by `sequence_check`, saved by
`sequence_save`), its timeline, live figures and a preview (`sequence_simulate`); status actions with a
confirmation; enrollments and touches read-only, open staff tasks closed by an action."""

from __future__ import annotations

import json
import re
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import construct_change_message
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, IntegerField, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.text import Truncator
from django.utils.timezone import now as timezone_now
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from channels.registry import adapter_for
from sequences.models import (
    Channel,
    Enrollment,
    EnrollmentState,
    Sequence,
    SequenceStatus,
    Step,
    StepMode,
    Touch,
    TouchState,
    TriggerType,
)
from sequences.services import (
    SEQUENCE_FIELDS,
    STEP_FIELDS,
    SequencePlan,
    sequence_enroll,
    sequence_figures,
    sequence_save,
    sequence_status_set,
    task_done,
)
from sequences.simulate import sequence_simulate, step_content_label
from sequences.validation import SequenceError, sequence_check

PREVIEW_DAYS = 30
PREVIEW_SAMPLE = 10
SENT_STATES = ("sent", "delivered", "task_done")
_STEP_PATH = re.compile(r"^steps\[(\d+)\]\.(\w+)")


def _json_widget(rows: int = 3, cols: int = 60) -> forms.Textarea:
    return forms.Textarea(attrs={"rows": rows, "cols": cols, "class": "vLargeTextField nurture-json"})


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def _lead_link(lead_id: int, label: object) -> str:
    return format_html('<a href="{}">{}</a>', reverse("admin:leads_lead_change", args=[lead_id]), label)


# --- The sequence form and its steps.


class JsonField(forms.JSONField):
    """JSON typed in a textarea; an empty value shows as an empty box, not `null`."""

    def prepare_value(self, value: Any) -> Any:
        return "" if value is None else super().prepare_value(value)


class SequenceForm(forms.ModelForm):
    trigger = JsonField(
        label=_("trigger"),
        required=False,
        widget=_json_widget(),
        help_text=_(
            '{"type": "manual"}, {"type": "pool_entered", "pool": "value-high"}, {"type": "wecom_added"}, '
            '{"type": "silent", "days": 14}, {"type": "tag_added", "tag": "need:*"}, '
            '{"type": "event", "event": "webinar_registered"}, {"type": "stage_changed", "stage": "mql"}.'
        ),
    )
    entry_rule = JsonField(
        label=_("entry rule"),
        required=False,
        widget=_json_widget(4),
        help_text=_("The rule language, like a pool's rule; empty: every lead the trigger names."),
    )
    exit_rule = JsonField(
        label=_("exit rule"),
        required=False,
        widget=_json_widget(4),
        help_text=_("A lead that meets it leaves the sequence; empty: none."),
    )
    exit_stages = JsonField(
        label=_("exit stages"), required=False, widget=_json_widget(1), help_text='["sql", "won", "lost"]'
    )
    reentry = JsonField(
        label=_("re-entry"), widget=_json_widget(1), help_text='"never", "always" or {"after_days": 90}'
    )
    quiet_hours = JsonField(
        label=_("quiet hours"),
        required=False,
        widget=_json_widget(1),
        help_text=_('{"start": "21:00", "end": "08:00"} in the sequence\'s time zone; empty: none.'),
    )
    caps = JsonField(
        label=_("frequency caps"),
        required=False,
        widget=_json_widget(1),
        help_text=_('Touches per lead per local day and channel, e.g. {"wecom": 1}; empty: the default.'),
    )
    on_complete = JsonField(
        label=_("on completion"),
        required=False,
        widget=_json_widget(3),
        help_text=_(
            'By temperature: {"hot": {"action": "assign_sdr"}, "warm": {"action": "enroll", "sequence": 2}, '
            '"cold": {"action": "tag", "tag": "value:low"}}.'
        ),
    )

    class Meta:
        model = Sequence
        fields = list(SEQUENCE_FIELDS)

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        for name in ("trigger", "caps", "on_complete"):
            if name in data and data[name] is None:
                data[name] = {}
        if self.errors:
            return data  # a field that does not parse: say that first
        try:
            sequence_check(data=data, steps=[])
        except SequenceError as exc:
            for error_path, message in exc.errors.items():
                name = re.split(r"[.\[]", error_path, maxsplit=1)[0]
                self.add_error(name if name in self.fields else None, f"{error_path}: {message}")
        return data


class StepForm(forms.ModelForm):
    position = forms.IntegerField(
        label=_("position"),
        required=False,
        min_value=0,
        widget=forms.NumberInput(attrs={"style": "width: 4em"}),
    )
    day = forms.IntegerField(
        label=_("day"), min_value=0, widget=forms.NumberInput(attrs={"style": "width: 4em"})
    )
    send_time = forms.TimeField(
        label=_("send time"),
        required=False,
        initial="10:00",
        widget=forms.TimeInput(format="%H:%M", attrs={"size": 5}),
        help_text=_("Empty: at once on day 0, the enrollment's time of day later."),
    )
    text = forms.CharField(label=_("message template"), required=False, widget=_json_widget(3, 24))
    condition = JsonField(label=_("condition"), required=False, widget=_json_widget(3, 24))
    wait_for = JsonField(
        label=_("wait for"),
        required=False,
        widget=_json_widget(3, 24),
        help_text='{"event": "content_viewed", "within_days": 3, "then": 4, "else": 5}',
    )
    else_channel = forms.ChoiceField(
        label=_("fallback channel"), required=False, choices=[("", "---------"), *Channel.choices]
    )

    class Meta:
        model = Step
        fields = ["position", *(f if f != "content_id" else "content" for f in STEP_FIELDS)]

    def validate_unique(self) -> None:
        """Positions are checked across the whole set by `sequence_check` (steps are replaced as one)."""


def step_rows(formset: forms.BaseInlineFormSet) -> list[tuple[forms.Form, dict[str, Any]]]:
    """The kept step forms with their plain values, by position (a blank position goes after the rest)."""
    kept = []
    for form in formset.forms:
        if not hasattr(form, "cleaned_data") or (form.instance.pk is None and not form.has_changed()):
            continue
        if formset.can_delete and formset._should_delete_form(form):
            continue
        data = form.cleaned_data
        row = {name: data.get(name) for name in STEP_FIELDS if name != "content_id"}
        row["content_id"] = data["content"].pk if data.get("content") else None
        row["text"] = row.get("text") or ""
        row["else_channel"] = row.get("else_channel") or ""
        row["position"] = data.get("position")
        kept.append((form, row))
    top = max((row["position"] for _, row in kept if row["position"] is not None), default=-1)
    for _form, row in kept:
        if row["position"] is None:
            top += 1
            row["position"] = top
    return sorted(kept, key=lambda pair: pair[1]["position"])


class StepFormSet(forms.BaseInlineFormSet):
    def clean(self) -> None:
        """The steps with the sequence, through `sequence_check`; each error shown on its step's field."""
        if any(self.errors):
            return
        rows = step_rows(self)
        data = {name: getattr(self.instance, name) for name in SEQUENCE_FIELDS}
        try:
            sequence_check(data=data, steps=[row for _, row in rows])
        except SequenceError as exc:
            general = []
            for error_path, message in exc.errors.items():
                match = _STEP_PATH.match(error_path)
                if match:
                    form = rows[int(match.group(1))][0]
                    name = {"content_id": "content"}.get(match.group(2), match.group(2))
                    where = error_path[error_path.index("].") + 2 :]
                    form.add_error(name if name in form.fields else None, f"{where}: {message}")
                elif error_path == "steps":
                    general.append(f"{error_path}: {message}")
            if general:
                raise ValidationError(general) from exc


class StepInline(admin.TabularInline):
    model = Step
    form = StepForm
    formset = StepFormSet
    ordering = ["position"]
    extra = 1
    raw_id_fields = ["content"]
    verbose_name = _("step")
    verbose_name_plural = _("steps (day N after the anchor, in the sequence's time zone)")


# --- The sequence.


class TriggerTypeFilter(admin.SimpleListFilter):
    title = _("trigger")
    parameter_name = "trigger"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, Any]]:
        return list(TriggerType.choices)

    def queryset(self, request: HttpRequest, queryset: QuerySet[Sequence]) -> QuerySet[Sequence]:
        return queryset.filter(trigger__type=self.value()) if self.value() else queryset


def _count_of(model: Any, **filters: Any) -> Coalesce:
    rows = (
        model.objects.filter(sequence=OuterRef("pk"), **filters)
        .order_by()
        .values("sequence")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return Coalesce(Subquery(rows, output_field=IntegerField()), 0)


def trigger_label(sequence: Sequence) -> str:
    trigger = sequence.trigger or {}
    kind = sequence.trigger_type
    label = str(TriggerType(kind).label) if kind in TriggerType.values else kind
    detail = {
        TriggerType.POOL_ENTERED: trigger.get("pool"),
        TriggerType.SILENT: trigger.get("days"),
        TriggerType.TAG_ADDED: trigger.get("tag"),
        TriggerType.EVENT: trigger.get("event"),
        TriggerType.STAGE_CHANGED: trigger.get("stage"),
    }.get(kind)
    return f"{label}: {detail}" if detail not in (None, "") else label


def step_timeline(plan: SequencePlan) -> list[dict[str, Any]]:
    """The steps as the change page draws them: day → time → channel → content → branches."""
    items = []
    for step in plan.steps:
        if step.send_time is not None:
            when = f"{step.send_time:%H:%M}"
        else:
            when = gettext("at once") if step.day == 0 else gettext("at the enrollment's time of day")
        if step.else_position is not None:
            otherwise = gettext("else → step #%(position)s") % {"position": step.else_position}
        else:
            otherwise = gettext("else: skip this step")
        wait = step.wait_for or {}
        items.append(
            {
                "step": step,
                "when": when,
                "channel": step.get_channel_display(),
                # Its touches would be skipped `not_configured`: the marketer sees it before enabling.
                "not_configured": step.mode == StepMode.AUTO and adapter_for(step.channel) is None,
                "mode": step.get_mode_display(),
                "content": step_content_label(step),
                "condition": _compact(step.condition) if step.condition else "",
                "else": otherwise if step.condition else "",
                "wait_for": (
                    gettext("wait for %(event)s within %(days)s days: then %(then)s, else %(else)s")
                    % {
                        "event": wait.get("event"),
                        "days": wait.get("within_days") or 1,
                        "then": f"#{wait['then']}" if wait.get("then") is not None else gettext("this step"),
                        "else": f"#{wait['else']}" if wait.get("else") is not None else gettext("skip"),
                    }
                    if wait
                    else ""
                ),
            }
        )
    return items


def figures_context(sequence: Sequence) -> dict[str, Any]:
    figures = sequence_figures(sequence=sequence)
    states = sorted({row["state"] for row in figures["touches"]})
    by_channel: dict[str, dict[str, int]] = {}
    for row in figures["touches"]:
        by_channel.setdefault(row["channel"], {})[row["state"]] = row["n"]
    labels = dict(TouchState.choices)
    return {
        **figures,
        "active": figures["by_state"].get(EnrollmentState.ACTIVE, 0),
        "paused": figures["by_state"].get(EnrollmentState.PAUSED, 0),
        "completed": figures["by_state"].get(EnrollmentState.COMPLETED, 0),
        "exited": figures["by_state"].get(EnrollmentState.EXITED, 0),
        "exits": sorted(figures["exited_by_reason"].items(), key=lambda kv: -kv[1]),
        "touch_states": [labels.get(state, state) for state in states],
        "touch_rows": [
            (channel, [counts.get(state, 0) for state in states], sum(counts.values()))
            for channel, counts in sorted(by_channel.items())
        ],
    }


STATUS_ACTIONS = {
    SequenceStatus.ACTIVE: "activate_sequences",
    SequenceStatus.PAUSED: "pause_sequences",
    SequenceStatus.ARCHIVED: "archive_sequences",
}


@admin.register(Sequence)
class SequenceAdmin(admin.ModelAdmin):
    form = SequenceForm
    inlines = [StepInline]
    change_form_template = "admin/sequences/sequence/change_form.html"
    list_display = ["name", "status", "trigger_display", "active_enrollments", "touches_sent", "updated_at"]
    list_filter = ["status", TriggerTypeFilter]
    search_fields = ["name", "goal"]
    ordering = ["-id"]
    actions = ["activate_sequences", "pause_sequences", "archive_sequences"]
    fieldsets = [
        (None, {"fields": ["name", "goal", "status"]}),
        (
            _("Who enters and leaves"),
            {"fields": ["trigger", "entry_rule", "exit_rule", "exit_stages", "reentry"]},
        ),
        (_("Timing"), {"fields": ["timezone", "quiet_hours", "max_lateness_minutes", "caps"]}),
        (_("On completion"), {"fields": ["on_complete"]}),
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Sequence]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                active_count=_count_of(Enrollment, state=EnrollmentState.ACTIVE),
                paused_count=_count_of(Enrollment, state=EnrollmentState.PAUSED),
                sent_count=_count_of(Touch, state__in=SENT_STATES),
            )
        )

    @admin.display(description=_("trigger"))
    def trigger_display(self, sequence: Sequence) -> str:
        return trigger_label(sequence)

    @admin.display(description=_("active enrollments"), ordering="active_count")
    def active_enrollments(self, sequence: Sequence) -> str:
        url = (
            reverse("admin:sequences_enrollment_changelist")
            + f"?sequence__id__exact={sequence.pk}&state=active"
        )
        return format_html('<a href="{}">{}</a>', url, sequence.active_count)

    @admin.display(description=_("touches sent"), ordering="sent_count")
    def touches_sent(self, sequence: Sequence) -> int:
        return sequence.sent_count

    # Saving: the sequence and its steps go through `sequence_save` (validated by `sequence_check`), and a
    # status change through `sequence_status_set` (so pausing pauses its enrollments).

    def save_model(self, request: HttpRequest, obj: Sequence, form: forms.ModelForm, change: bool) -> None:
        """Saved with its steps in `save_related`."""

    def save_related(self, request: HttpRequest, form: forms.ModelForm, formsets: Any, change: bool) -> None:
        sequence: Sequence = form.instance
        status = sequence.status
        steps = next(fs for fs in formsets if fs.model is Step)
        rows = [row for _, row in step_rows(steps)] if not change or steps.has_changed() else None
        data = {name: getattr(sequence, name) for name in SEQUENCE_FIELDS}
        previous = form.initial.get("status", status) if change else status
        data["status"] = previous
        sequence_save(data=data, steps=rows, sequence=sequence)
        if status != previous:
            affected = sequence_status_set(sequence=sequence, status=status)
            sequence.status = status
            self.message_user(request, self._status_message(status, affected), messages.INFO)

    def construct_change_message(
        self, request: HttpRequest, form: forms.ModelForm, formsets: Any, add: bool = False
    ) -> list[dict[str, Any]]:
        message = construct_change_message(form, [], add)
        if not add and any(fs.has_changed() for fs in formsets):
            message.append({"changed": {"fields": ["steps"]}})
        return message

    # --- The change page: timeline, figures, preview.

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        extra_context = dict(extra_context or {})
        sequence = self.get_object(request, object_id)
        if sequence is not None:
            plan = SequencePlan.of(sequence, Step.objects.filter(sequence=sequence).select_related("content"))
            extra_context.update(
                timeline=step_timeline(plan),
                figures=figures_context(sequence),
                preview_url=reverse("admin:sequences_sequence_preview", args=[sequence.pk]),
            )
        return super().change_view(request, object_id, form_url, extra_context)

    def get_urls(self) -> list[Any]:
        return [
            path(
                "<path:object_id>/preview/",
                self.admin_site.admin_view(self.preview_view),
                name="sequences_sequence_preview",
            ),
            *super().get_urls(),
        ]

    def preview_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """What the sequence would send to 10 current leads over 30 days, and why; nothing is saved."""
        sequence = self.get_object(request, object_id)
        if sequence is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_view_or_change_permission(request, sequence):
            raise PermissionDenied
        now = timezone_now()
        results = sequence_simulate(sequence=sequence, days=PREVIEW_DAYS, now=now, sample=PREVIEW_SAMPLE)
        context = {
            **self.admin_site.each_context(request),
            "title": gettext("Preview of %(name)s") % {"name": sequence.name},
            "opts": self.opts,
            "original": sequence,
            "results": results,
            "days": PREVIEW_DAYS,
            "sample": PREVIEW_SAMPLE,
            "now": now,
        }
        return TemplateResponse(request, "admin/sequences/sequence/preview.html", context)

    # --- Status actions, each with a confirmation page.

    @staticmethod
    def _status_message(status: str, count: int) -> str:
        if status == SequenceStatus.PAUSED:
            text = ngettext("%(count)d enrollment paused.", "%(count)d enrollments paused.", count)
        elif status == SequenceStatus.ACTIVE:
            text = ngettext("%(count)d enrollment resumed.", "%(count)d enrollments resumed.", count)
        else:
            text = ngettext("%(count)d enrollment ended.", "%(count)d enrollments ended.", count)
        return text % {"count": count}

    @staticmethod
    def _affected(sequence: Sequence, status: str) -> int:
        """How many enrollments `sequence_status_set` would pause, resume or end."""
        if status == SequenceStatus.PAUSED:
            return sequence.active_count if sequence.status == SequenceStatus.ACTIVE else 0
        if status == SequenceStatus.ACTIVE:
            return sequence.paused_count if sequence.status != SequenceStatus.ACTIVE else 0
        return sequence.active_count + sequence.paused_count

    def _status_action(self, request: HttpRequest, queryset: QuerySet[Sequence], status: str) -> Any:
        sequences = list(queryset.order_by("pk"))
        if request.POST.get("post") == "yes":
            affected = sum(sequence_status_set(sequence=s, status=status) for s in sequences)
            label = SequenceStatus(status).label
            self.message_user(
                request,
                ngettext(
                    "%(count)d sequence set to %(status)s.",
                    "%(count)d sequences set to %(status)s.",
                    len(sequences),
                )
                % {"count": len(sequences), "status": label}
                + " "
                + self._status_message(status, affected),
                messages.SUCCESS,
            )
            return None
        rows = [(s, s.active_count, s.paused_count, self._affected(s, status)) for s in sequences]
        return TemplateResponse(
            request,
            "admin/sequences/sequence/status_confirm.html",
            {
                **self.admin_site.each_context(request),
                "title": {
                    SequenceStatus.ACTIVE: _("Activate sequences"),
                    SequenceStatus.PAUSED: _("Pause sequences"),
                    SequenceStatus.ARCHIVED: _("Archive sequences"),
                }[status],
                "opts": self.opts,
                "status": status,
                "rows": rows,
                "active_total": sum(r[1] for r in rows),
                "affected_total": sum(r[3] for r in rows),
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
                "action_name": STATUS_ACTIONS[status],
            },
        )

    @admin.action(description=_("Activate the selected sequences"), permissions=["change"])
    def activate_sequences(self, request: HttpRequest, queryset: QuerySet[Sequence]) -> Any:
        return self._status_action(request, queryset, SequenceStatus.ACTIVE)

    @admin.action(description=_("Pause the selected sequences"), permissions=["change"])
    def pause_sequences(self, request: HttpRequest, queryset: QuerySet[Sequence]) -> Any:
        return self._status_action(request, queryset, SequenceStatus.PAUSED)

    @admin.action(description=_("Archive the selected sequences"), permissions=["change"])
    def archive_sequences(self, request: HttpRequest, queryset: QuerySet[Sequence]) -> Any:
        return self._status_action(request, queryset, SequenceStatus.ARCHIVED)


# --- Enrollments and touches: written by the engine, read here.


class ReadOnlyAdmin(admin.ModelAdmin):
    show_full_result_count = False  # one COUNT instead of two on a large table

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        """`#123` or `123` finds lead 123; other terms search the lead's name, company and phone."""
        term = search_term.strip().lstrip("#")
        if term.isdigit() and len(term) < 12:
            return queryset.filter(lead_id=int(term)), False
        return super().get_search_results(request, queryset, search_term)

    @admin.display(description=_("lead"), ordering="lead")
    def lead_display(self, row: Any) -> str:
        return _lead_link(row.lead_id, f"#{row.lead_id} {row.lead.name}")


@admin.register(Enrollment)
class EnrollmentAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "lead_display",
        "sequence",
        "state",
        "position",
        "next_due_at",
        "anchor_at",
        "trigger",
        "entered_at",
        "ended_at",
        "end_reason",
    ]
    list_filter = ["state", "sequence"]
    list_select_related = ["lead", "sequence"]
    search_fields = ["lead__name", "lead__company", "lead__phone"]
    search_help_text = _("A lead's id (#123), name, company or phone.")
    ordering = ["-entered_at", "-id"]
    raw_id_fields = ["lead"]


class ChannelFilter(admin.SimpleListFilter):
    """The known channels, without a `SELECT DISTINCT` over the whole touch table."""

    title = _("channel")
    parameter_name = "channel"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, Any]]:
        return list(Channel.choices)

    def queryset(self, request: HttpRequest, queryset: QuerySet[Touch]) -> QuerySet[Touch]:
        return queryset.filter(channel=self.value()) if self.value() else queryset


@admin.register(Touch)
class TouchAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "lead_display",
        "sequence",
        "step_display",
        "channel",
        "mode",
        "state",
        "due_at",
        "sent_at",
        "skip_reason",
        "rendered_display",
    ]
    list_filter = ["state", ChannelFilter, "sequence"]
    list_select_related = ["lead", "sequence", "step"]
    search_fields = ["lead__name", "lead__company", "lead__phone"]
    search_help_text = _("A lead's id (#123), name, company or phone.")
    ordering = ["-due_at", "-id"]
    raw_id_fields = ["lead", "enrollment"]
    actions = ["mark_task_done"]

    @admin.display(description=_("step"), ordering="step__position")
    def step_display(self, touch: Touch) -> str:
        if touch.step is None:
            return "-"
        return gettext("#%(position)s day %(day)s") % {"position": touch.step.position, "day": touch.step.day}

    @admin.display(description=_("rendered content"))
    def rendered_display(self, touch: Touch) -> str:
        return Truncator(touch.rendered).chars(60) or "-"

    def has_task_done_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("sequences.change_touch")

    @admin.action(description=_("Mark the selected open tasks done"), permissions=["task_done"])
    def mark_task_done(self, request: HttpRequest, queryset: QuerySet[Touch]) -> None:
        now = timezone_now()
        open_tasks = list(queryset.filter(state=TouchState.TASK_OPEN))
        done = sum(task_done(touch=touch, by=request.user, now=now) for touch in open_tasks)
        skipped = queryset.count() - done
        self.message_user(
            request,
            ngettext("%(count)d task marked done.", "%(count)d tasks marked done.", done) % {"count": done},
            messages.SUCCESS,
        )
        if skipped:
            self.message_user(
                request,
                ngettext(
                    "%(count)d selected touch was not an open task.",
                    "%(count)d selected touches were not open tasks.",
                    skipped,
                )
                % {"count": skipped},
                messages.WARNING,
            )


# --- The lead list's action: enroll the selected leads in a sequence (the manual trigger).

ENROLL_LIMIT = 10_000


class EnrollForm(forms.Form):
    sequence = forms.ModelChoiceField(
        queryset=Sequence.objects.exclude(status=SequenceStatus.ARCHIVED).order_by("name"),
        label=_("sequence"),
    )
    anchor_at = forms.DateTimeField(
        label=_("day 0"),
        required=False,
        help_text=_("Empty: now. Day N of the sequence is counted from this instant's local date."),
    )


@admin.action(description=_("Enroll the selected leads in a sequence"))
def enroll_in_sequence(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet
) -> HttpResponse | None:
    """Selected leads → a page choosing the sequence and day 0 → `sequence_enroll`, with what was refused."""
    ids = list(queryset.order_by("pk").values_list("pk", flat=True)[: ENROLL_LIMIT + 1])
    if len(ids) > ENROLL_LIMIT:
        modeladmin.message_user(
            request, gettext("Select at most %(n)s leads at once.") % {"n": ENROLL_LIMIT}, messages.ERROR
        )
        return None
    form = EnrollForm(request.POST if request.POST.get("post") == "yes" else None)
    if form.is_bound and form.is_valid():
        sequence = form.cleaned_data["sequence"]
        result = sequence_enroll(
            sequence=sequence, lead_ids=ids, anchor_at=form.cleaned_data["anchor_at"], now=timezone_now()
        )
        modeladmin.message_user(
            request,
            gettext(
                "%(enrolled)s lead(s) enrolled in %(sequence)s; %(refused)s refused (already in it, "
                "an exit condition, the re-entry policy or opted out)."
            )
            % {
                "enrolled": len(result["enrolled"]),
                "sequence": sequence.name,
                "refused": len(result["refused"]),
            },
            messages.SUCCESS if result["enrolled"] else messages.WARNING,
        )
        return None
    return TemplateResponse(
        request,
        "admin/sequences/enroll_confirm.html",
        {
            **modeladmin.admin_site.each_context(request),
            "title": _("Enroll leads in a sequence"),
            "opts": modeladmin.opts,
            "form": form,
            "ids": ids,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        },
    )


def _lead_admin_enroll_action() -> None:
    from leads.models import Lead

    lead_admin = admin.site._registry.get(Lead)
    if lead_admin is not None and enroll_in_sequence not in (lead_admin.actions or []):
        lead_admin.actions = [*(lead_admin.actions or []), enroll_in_sequence]


_lead_admin_enroll_action()
