"""The auto-tag rule editor: kind, N / D / keywords / content tag, the tag to add; a preview of how
many leads it would tag now, and when it last ran over every lead with how many it tagged."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.timezone import now as timezone_now
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from channels.autotags import (
    AutoTagRuleError,
    autotag_keywords,
    autotag_rule_apply_full,
    autotag_rule_check,
    autotag_rule_preview,
)
from channels.models import AutoTagRule
from leads.tagging import tag_name_normalize

# Fields whose change makes the next tick run the rule over every lead.
CRITERIA = ("kind", "count", "within_days", "keywords", "content_tag", "tag_name", "active")


class AutoTagRuleForm(forms.ModelForm):
    class Meta:
        model = AutoTagRule
        fields = ["name", "kind", "count", "within_days", "keywords", "content_tag", "tag_name", "active"]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        rule = AutoTagRule(**{k: v for k, v in data.items() if k in self.Meta.fields})
        rule.keywords = rule.keywords or ""
        rule.content_tag = rule.content_tag or ""
        rule.tag_name = rule.tag_name or ""
        try:
            autotag_rule_check(rule=rule)
        except AutoTagRuleError as exc:
            raise forms.ValidationError(str(exc)) from exc
        data["tag_name"] = tag_name_normalize(rule.tag_name)
        if rule.kind == AutoTagRule.Kind.CONTENT_TAG:
            data["content_tag"] = tag_name_normalize(rule.content_tag)
        return data


@admin.register(AutoTagRule)
class AutoTagRuleAdmin(admin.ModelAdmin):
    form = AutoTagRuleForm
    list_display = ["name", "kind", "criteria", "tag_name", "active", "last_applied_at", "last_applied_count"]
    list_filter = ["kind", "active"]
    search_fields = ["name", "tag_name", "keywords", "content_tag"]
    readonly_fields = ["preview", "last_applied_at", "last_applied_count"]
    fieldsets = [
        (None, {"fields": ["name", "kind", "tag_name", "active"]}),
        (
            _("Criteria (by kind)"),
            {
                "fields": ["count", "within_days", "keywords", "content_tag"],
                "description": _(
                    "Sent ≥ N messages: N and D. Keyword: keywords (and D to look back only D days). "
                    "No reply: N touches since the last message. Opened content: the content tag."
                ),
            },
        ),
        (_("Runs"), {"fields": ["preview", "last_applied_at", "last_applied_count"]}),
    ]
    actions = ["preview_rules", "apply_rules"]

    @admin.display(description=_("criteria"))
    def criteria(self, rule: AutoTagRule) -> str:
        if rule.kind == AutoTagRule.Kind.KEYWORD:
            return ", ".join(autotag_keywords(rule=rule))
        if rule.kind == AutoTagRule.Kind.CONTENT_TAG:
            return rule.content_tag
        if rule.kind == AutoTagRule.Kind.MESSAGE_COUNT:
            return gettext("≥ %(n)s in %(d)s days") % {"n": rule.count, "d": rule.within_days}
        return gettext("≥ %(n)s touches") % {"n": rule.count}

    @admin.display(description=_("preview"))
    def preview(self, rule: AutoTagRule) -> str:
        if not rule.pk:
            return gettext("Save the rule to see how many leads it would tag.")
        counts = autotag_rule_preview(rule=rule, now=timezone_now())
        return gettext("Would tag %(untagged)s leads now (%(matching)s meet the rule).") % {
            "untagged": counts.untagged,
            "matching": counts.matching,
        }

    def save_model(self, request: HttpRequest, obj: AutoTagRule, form: forms.ModelForm, change: bool) -> None:
        if not change or any(name in form.changed_data for name in CRITERIA):
            obj.last_applied_at = None  # the next tick runs it over every lead
            obj.last_applied_count = None
        super().save_model(request, obj, form, change)

    @admin.action(
        description=_("Preview: count the leads the selected rules would tag"), permissions=["view"]
    )
    def preview_rules(self, request: HttpRequest, queryset: QuerySet[AutoTagRule]) -> None:
        now = timezone_now()
        for rule in queryset.order_by("pk"):
            counts = autotag_rule_preview(rule=rule, now=now)
            self.message_user(
                request,
                gettext("%(rule)s: would tag %(untagged)s leads now (%(matching)s meet the rule).")
                % {"rule": rule.name, "untagged": counts.untagged, "matching": counts.matching},
                messages.INFO,
            )

    @admin.action(description=_("Apply the selected rules to every lead now"), permissions=["change"])
    def apply_rules(self, request: HttpRequest, queryset: QuerySet[AutoTagRule]) -> None:
        now = timezone_now()
        for rule in queryset.order_by("pk"):
            tagged = autotag_rule_apply_full(rule=rule, now=now)
            self.message_user(
                request,
                gettext("%(rule)s: %(count)s leads tagged %(tag)s.")
                % {"rule": rule.name, "count": tagged, "tag": rule.tag_name},
                messages.SUCCESS,
            )
