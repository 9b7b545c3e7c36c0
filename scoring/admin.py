"""The scoring model in the admin: rules (validated on save), thresholds (one row), computations."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.translation import gettext_lazy as _

from leads.rules import RuleError
from scoring.models import ScoreRun, ScoringRule, ScoringSettings
from scoring.services import scoring_rule_check, scoring_rule_save, scoring_rules_delete, scoring_settings_get


class ScoringRuleForm(forms.ModelForm):
    rule = forms.JSONField(
        label=_("predicate"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 8, "cols": 90, "class": "vLargeTextField"}),
        help_text=_(
            'Fit rules: the rule language, e.g. {"field": "industry", "op": "in", "value": ["制造"]}, '
            '{"field": "title", "op": "contains", "value": "总监"}, {"tag": "need:*"}, {"bant_gte": 2}.'
        ),
    )
    where = forms.JSONField(
        label=_("event properties"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 90, "class": "vLargeTextField"}),
        help_text=_('Behaviour rules: only events with these properties, e.g. {"form": "whitepaper"}.'),
    )

    class Meta:
        model = ScoringRule
        fields = [
            "name",
            "kind",
            "points",
            "rule",
            "event_type",
            "where",
            "cap_per_day",
            "cap_total",
            "half_life_days",
            "description",
            "active",
            "position",
        ]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("where") is None:
            data["where"] = {}
        kind = data.get("kind")
        if kind:
            try:
                scoring_rule_check(
                    kind=kind,
                    rule=data.get("rule"),
                    event_type=data.get("event_type") or "",
                    where=data["where"],
                )
            except RuleError as exc:
                field = (
                    "event_type"
                    if exc.path == "event_type"
                    else "where"
                    if exc.path.startswith("where")
                    else "rule"
                )
                self.add_error(field, str(exc))
        return data


@admin.register(ScoringRule)
class ScoringRuleAdmin(admin.ModelAdmin):
    form = ScoringRuleForm
    list_display = [
        "name",
        "kind",
        "points",
        "event_type",
        "cap_per_day",
        "cap_total",
        "half_life_days",
        "active",
        "position",
    ]
    list_display_links = ["name"]
    list_filter = ["kind", "active"]
    search_fields = ["name", "event_type", "description"]
    ordering = ["kind", "position", "id"]
    fieldsets = [
        (None, {"fields": ["name", "kind", "points", "description", "active", "position"]}),
        (_("Fit: who the lead is"), {"fields": ["rule"]}),
        (
            _("Behaviour: what the lead does"),
            {"fields": ["event_type", "where", ("cap_per_day", "cap_total"), "half_life_days"]},
        ),
    ]

    def save_model(self, request: HttpRequest, obj: ScoringRule, form: forms.ModelForm, change: bool) -> None:
        scoring_rule_save(rule=obj)

    def delete_model(self, request: HttpRequest, obj: ScoringRule) -> None:
        scoring_rules_delete(rules=ScoringRule.objects.filter(pk=obj.pk))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[ScoringRule]) -> None:
        scoring_rules_delete(rules=queryset)


@admin.register(ScoringSettings)
class ScoringSettingsAdmin(admin.ModelAdmin):
    fieldsets = [
        (_("Temperature (from the score)"), {"fields": ["hot_score", "hot_min_engagement", "warm_score"]}),
        (_("Grade (from fit)"), {"fields": ["grade_a", "grade_b", "grade_c"]}),
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        # One row: the list is its edit page.
        row = scoring_settings_get()
        return HttpResponseRedirect(reverse("admin:scoring_scoringsettings_change", args=[row.pk]))


@admin.register(ScoreRun)
class ScoreRunAdmin(admin.ModelAdmin):
    list_display = [
        "started_at",
        "kind",
        "now",
        "seconds",
        "leads",
        "changed",
        "became_hot",
        "ledger_rebuilt",
    ]
    list_filter = ["kind", "ledger_rebuilt"]
    date_hierarchy = "started_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
