"""Call tasks in the admin: the calls to make (by state, assignee, due date); an open task's page logs
the outcome (and a call back opens the next task), and list actions log quick outcomes or cancel."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.timezone import now as timezone_now
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from channels.calls import CallLogError, call_log, call_task_cancel
from channels.models import CallTask


class CallTaskForm(forms.ModelForm):
    class Meta:
        model = CallTask
        fields = ["lead", "assignee", "script", "due_at", "outcome", "notes", "call_back_at"]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("outcome") == CallTask.Outcome.CALL_BACK and not data.get("call_back_at"):
            self.add_error("call_back_at", gettext("A call back needs a time."))
        return data


@admin.register(CallTask)
class CallTaskAdmin(admin.ModelAdmin):
    form = CallTaskForm
    list_display = ["pk", "lead", "assignee", "due_at", "state", "outcome", "touch", "done_at"]
    list_filter = ["state", "assignee", ("due_at", admin.DateFieldListFilter), "outcome"]
    list_select_related = ["lead", "assignee"]
    search_fields = ["lead__name", "lead__phone", "lead__company", "notes"]
    raw_id_fields = ["lead"]
    date_hierarchy = "due_at"
    actions = ["log_connected", "log_no_answer", "log_wrong_number", "cancel"]

    def get_readonly_fields(self, request: HttpRequest, obj: CallTask | None = None) -> list[str]:
        if obj is None:
            return ["state"]
        closed = ["lead", "touch", "state", "done_at", "created_at"]
        if obj.state != CallTask.State.OPEN:
            return [*closed, "assignee", "script", "due_at", "outcome", "notes", "call_back_at"]
        return closed

    def get_fields(self, request: HttpRequest, obj: CallTask | None = None) -> list[str]:
        if obj is None:
            return ["lead", "assignee", "script", "due_at"]
        return [
            "lead",
            "touch",
            "state",
            "assignee",
            "script",
            "due_at",
            "outcome",
            "notes",
            "call_back_at",
            "done_at",
        ]

    def save_model(self, request: HttpRequest, obj: CallTask, form: Any, change: bool) -> None:
        outcome = form.cleaned_data.get("outcome") if change else ""
        if not outcome:
            super().save_model(request, obj, form, change)
            return
        # An outcome on an open task logs the call: the other edits first, then call_log closes it.
        CallTask.objects.filter(pk=obj.pk, state=CallTask.State.OPEN).update(
            assignee=obj.assignee, script=obj.script, due_at=obj.due_at
        )
        try:
            follow_up = call_log(
                task=CallTask.objects.get(pk=obj.pk),
                lead=obj.lead,
                outcome=outcome,
                notes=form.cleaned_data.get("notes") or "",
                call_back_at=form.cleaned_data.get("call_back_at"),
                by=request.user,
                now=timezone_now(),
            )
        except CallLogError as exc:
            self.message_user(request, gettext("The call was not logged: %s") % exc, messages.ERROR)
            return
        if follow_up is not None:
            self.message_user(request, gettext("A call back is due at %s.") % follow_up.due_at, messages.INFO)

    def _log(self, request: HttpRequest, queryset: QuerySet[CallTask], outcome: str) -> None:
        now = timezone_now()
        logged = 0
        for task in queryset.filter(state=CallTask.State.OPEN).select_related("lead"):
            try:
                call_log(task=task, lead=task.lead, outcome=outcome, by=request.user, now=now)
            except CallLogError:
                continue  # closed meanwhile
            logged += 1
        self.message_user(
            request,
            ngettext("%(count)d call logged.", "%(count)d calls logged.", logged) % {"count": logged},
            messages.SUCCESS,
        )

    @admin.action(description=_("Log: connected"), permissions=["change"])
    def log_connected(self, request: HttpRequest, queryset: QuerySet[CallTask]) -> None:
        self._log(request, queryset, CallTask.Outcome.CONNECTED)

    @admin.action(description=_("Log: no answer"), permissions=["change"])
    def log_no_answer(self, request: HttpRequest, queryset: QuerySet[CallTask]) -> None:
        self._log(request, queryset, CallTask.Outcome.NO_ANSWER)

    @admin.action(description=_("Log: wrong number"), permissions=["change"])
    def log_wrong_number(self, request: HttpRequest, queryset: QuerySet[CallTask]) -> None:
        self._log(request, queryset, CallTask.Outcome.WRONG_NUMBER)

    @admin.action(description=_("Cancel the call"), permissions=["change"])
    def cancel(self, request: HttpRequest, queryset: QuerySet[CallTask]) -> None:
        count = call_task_cancel(task_ids=queryset.values_list("pk", flat=True), now=timezone_now())
        self.message_user(
            request,
            ngettext("%(count)d call cancelled.", "%(count)d calls cancelled.", count) % {"count": count},
            messages.SUCCESS,
        )
