"""The pool editor of the admin: the rule as JSON validated on save, a live preview, runs and size history."""

from __future__ import annotations

import json
from datetime import datetime, time, timedelta
from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Max, Q, QuerySet
from django.http import HttpRequest, JsonResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe
from django.utils.timezone import localdate, make_aware
from django.utils.timezone import now as timezone_now
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from leads.models import Lead, Pool, PoolMembership, PoolRun, RecycleReason
from leads.pools import pool_check, pool_target
from leads.rules import RuleError

PREVIEW_SAMPLE = 20
RUNS_SHOWN = 20
HISTORY_DAYS = 30


class PoolForm(forms.ModelForm):
    rule = forms.JSONField(
        label=_("rule"),
        widget=forms.Textarea(attrs={"rows": 14, "cols": 90, "class": "vLargeTextField pool-rule"}),
        help_text=_(
            'The rule language: {"all": […]}, {"any": […]}, {"not": …}, '
            '{"field": "industry", "op": "in", "value": […]}, {"tag": "need:*"}, '
            '{"event": "content_viewed", "within_days": 30}, {"days_since": "last_inbound_at", "gte": 14}, '
            '{"score_gte": 60}, {"bant_gte": 3}, {"pool": "mql"}.'
        ),
    )

    class Meta:
        model = Pool
        fields = ["name", "slug", "rule", "goal", "description", "active", "family", "priority"]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if "rule" in data and data.get("slug"):
            try:
                pool_check(slug=data["slug"], rule=data["rule"], family=data.get("family", ""))
            except RuleError as exc:
                self.add_error("rule", str(exc))
        return data


def pool_preview(*, pool: Pool | None, rule: Any, family: str, priority: int) -> dict[str, Any]:
    """How many leads a (possibly unsaved) rule selects now, with a sample, through the compiler."""
    now = timezone_now()
    draft = Pool(slug=pool.slug if pool else "_draft", rule=rule, family=family, priority=priority)
    if pool is not None:
        draft.pk = pool.pk
    siblings = list(Pool.objects.filter(active=True, family=family).exclude(pk=draft.pk)) if family else []
    target = pool_target(pool=draft, now=now, family=[*siblings, draft])
    leads = Lead.objects.filter(target)
    sample = leads.order_by("-id").values("id", "name", "company", "industry", "stage")[:PREVIEW_SAMPLE]
    return {"count": leads.count(), "sample": list(sample)}


def _size_history(pool: Pool) -> list[tuple[str, int]]:
    """Members at the end of each of the last days (local time), in one query."""
    today = localdate()
    ends: dict[str, datetime] = {}
    for back in range(HISTORY_DAYS - 1, -1, -1):
        day = today - timedelta(days=back)
        ends[day.isoformat()] = (
            make_aware(datetime.combine(day, time(23, 59, 59))) if back else timezone_now()
        )
    counts = PoolMembership.objects.filter(pool=pool).aggregate(
        **{
            f"d{index}": Count(
                "id", filter=Q(joined_at__lte=end) & (Q(left_at__isnull=True) | Q(left_at__gt=end))
            )
            for index, end in enumerate(ends.values())
        }
    )
    return [(day, counts[f"d{index}"]) for index, day in enumerate(ends)]


@admin.register(Pool)
class PoolAdmin(admin.ModelAdmin):
    form = PoolForm
    list_display = ["name", "slug", "family", "priority", "active", "size", "last_full_run"]
    list_filter = ["active", "family"]
    search_fields = ["name", "slug", "goal"]
    readonly_fields = ["preview", "size_history", "latest_runs"]
    fieldsets = [
        (None, {"fields": ["name", "slug", "goal", "description", "active"]}),
        (_("Rule"), {"fields": ["rule", "family", "priority", "preview"]}),
        (_("Size"), {"fields": ["size_history", "latest_runs"]}),
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Pool]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                member_count=Count("memberships", filter=Q(memberships__left_at__isnull=True), distinct=True),
                last_full=Max("runs__started_at", filter=Q(runs__kind=PoolRun.Kind.FULL)),
            )
        )

    @admin.display(description=_("members"), ordering="member_count")
    def size(self, pool: Pool) -> int:
        return pool.member_count

    @admin.display(description=_("last full evaluation"), ordering="last_full")
    def last_full_run(self, pool: Pool) -> Any:
        return pool.last_full or "-"

    def save_model(self, request: HttpRequest, obj: Pool, form: forms.ModelForm, change: bool) -> None:
        if "rule" in form.changed_data:
            obj.rule_changed_at = timezone_now()  # the next tick evaluates it over every lead
        super().save_model(request, obj, form, change)

    def get_urls(self) -> list[Any]:
        return [
            path("preview/", self.admin_site.admin_view(self.preview_view), name="leads_pool_preview"),
            *super().get_urls(),
        ]

    def preview_view(self, request: HttpRequest) -> JsonResponse:
        """Live preview of the rule being edited: count and sample leads, or the rule's error."""
        if request.method != "POST" or not self.has_view_permission(request):
            raise PermissionDenied
        pool = Pool.objects.filter(pk=request.POST.get("pool")).first() if request.POST.get("pool") else None
        try:
            rule = json.loads(request.POST.get("rule", ""))
            slug = request.POST.get("slug") or (pool.slug if pool else "_draft")
            pool_check(slug=slug, rule=rule)
            priority = int(request.POST.get("priority") or 100)
            result = pool_preview(
                pool=pool, rule=rule, family=request.POST.get("family", ""), priority=priority
            )
        except (ValueError, RuleError) as exc:
            return JsonResponse({"error": str(exc)}, status=400)
        for lead in result["sample"]:
            lead["url"] = reverse("admin:leads_lead_change", args=[lead["id"]])
        return JsonResponse(result)

    @admin.display(description=_("preview"))
    def preview(self, pool: Pool) -> SafeString:
        result = (
            pool_preview(pool=pool, rule=pool.rule, family=pool.family, priority=pool.priority)
            if pool.pk
            else None
        )
        rows = format_html_join(
            "",
            '<li><a href="{}">#{} {} · {}</a> <span class="quiet">{} {}</span></li>',
            (
                (
                    reverse("admin:leads_lead_change", args=[lead["id"]]),
                    lead["id"],
                    lead["name"],
                    lead["company"],
                    lead["industry"],
                    lead["stage"],
                )
                for lead in (result["sample"] if result else [])
            ),
        )
        count = result["count"] if result else "-"
        return format_html(
            '<div class="pool-preview" data-url="{}" data-pool="{}">'
            '<p><strong class="pool-preview-count">{}</strong> {}</p><ul class="pool-preview-sample">{}</ul>'
            '<p class="pool-preview-error errornote" style="display: none"></p></div>{}',
            reverse("admin:leads_pool_preview"),
            pool.pk or "",
            count,
            gettext("leads meet this rule now (sample of the newest below; updates as you edit the rule)"),
            rows,
            mark_safe(_PREVIEW_SCRIPT),  # a constant of this module, no user input
        )

    @admin.display(description=_("latest evaluations"))
    def latest_runs(self, pool: Pool) -> SafeString:
        runs = pool.runs.order_by("-started_at")[:RUNS_SHOWN] if pool.pk else []
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    run.started_at,
                    run.get_kind_display(),
                    f"{run.seconds:.3f}",
                    run.evaluated or "-",
                    run.joined,
                    run.left,
                    run.size,
                )
                for run in runs
            ),
        )
        return format_html(
            "<table><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th>"
            "</tr></thead><tbody>{}</tbody></table>",
            gettext("started at"),
            gettext("kind"),
            gettext("duration (s)"),
            gettext("leads evaluated"),
            gettext("joined"),
            gettext("left"),
            gettext("size after"),
            rows,
        )

    @admin.display(description=_("members per day"))
    def size_history(self, pool: Pool) -> SafeString:
        if not pool.pk:
            return SafeString("-")
        history = _size_history(pool)
        top = max((count for _, count in history), default=0) or 1
        bars = format_html_join(
            "",
            '<rect x="{}" y="{}" width="14" height="{}" fill="#417690"><title>{}: {}</title></rect>',
            (
                (index * 16, 100 - round(count * 100 / top), round(count * 100 / top), day, count)
                for index, (day, count) in enumerate(history)
            ),
        )
        return format_html(
            '<svg class="pool-history" width="{}" height="100" role="img" aria-label="{}">{}</svg>'
            '<p class="help">{} {} · {} {}</p>',
            len(history) * 16,
            gettext("members per day"),
            bars,
            history[0][0],
            history[0][1],
            history[-1][0],
            history[-1][1],
        )


_PREVIEW_SCRIPT = """<script>
(function () {
  const box = document.currentScript.previousElementSibling;
  const field = document.querySelector("textarea.pool-rule");
  if (!box || !field) return;
  const token = document.querySelector("input[name=csrfmiddlewaretoken]").value;
  let timer = null;
  function refresh() {
    const body = new URLSearchParams({rule: field.value, pool: box.dataset.pool,
      slug: (document.getElementById("id_slug") || {}).value || "",
      family: (document.getElementById("id_family") || {}).value || "",
      priority: (document.getElementById("id_priority") || {}).value || "100"});
    fetch(box.dataset.url, {method: "POST", body: body, headers: {"X-CSRFToken": token}})
      .then(function (r) { return r.json(); })
      .then(function (data) {
        const error = box.querySelector(".pool-preview-error");
        // The admin's .errornote style would override a hidden attribute.
        if (data.error) { error.textContent = data.error; error.style.display = "block"; return; }
        error.style.display = "none";
        box.querySelector(".pool-preview-count").textContent = data.count;
        const list = box.querySelector(".pool-preview-sample");
        list.replaceChildren(...data.sample.map(function (lead) {
          const li = document.createElement("li"), a = document.createElement("a");
          a.href = lead.url; a.textContent = "#" + lead.id + " " + lead.name + " · " + lead.company;
          li.append(a, " " + lead.industry + " " + lead.stage); return li;
        }));
      });
  }
  field.addEventListener("input", function () { clearTimeout(timer); timer = setTimeout(refresh, 400); });
})();
</script>"""


@admin.register(RecycleReason)
class RecycleReasonAdmin(admin.ModelAdmin):
    """The list SDRs and the CRM choose from when a lead goes back to nurturing; the tag picks the pool."""

    list_display = ["label", "code", "tag_name", "sequence", "active", "position"]
    list_select_related = ["sequence"]
    list_editable = ["active", "position"]
    search_fields = ["label", "code", "tag_name"]
