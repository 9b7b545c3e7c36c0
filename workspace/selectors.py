"""Reads of the workspace: the hot-lead queue, the lead page, the team table, the inbox; the timeline
items of notes and assignments."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db.models import (
    BooleanField,
    Case,
    Count,
    Exists,
    F,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.db.models.functions import Coalesce

from leads.models import Event, Lead, Pool, PoolMembership
from leads.selectors import timeline_source
from workspace.models import Assignment, LeadNote
from workspace.people import person_name


@timeline_source
def _notes(lead: Lead, before: datetime | None, limit: int) -> list[dict[str, Any]]:
    rows = LeadNote.objects.filter(lead=lead).select_related("author")
    if before is not None:
        rows = rows.filter(created_at__lt=before)
    return [
        {
            "kind": "note",
            "at": n.created_at,
            "id": n.pk,
            "type": "note",
            "summary": n.text,
            "data": {"by": person_name(n.author)},
        }
        for n in rows.order_by("-created_at", "-id")[:limit]
    ]


@timeline_source
def _assignments(lead: Lead, before: datetime | None, limit: int) -> list[dict[str, Any]]:
    rows = Assignment.objects.filter(lead=lead).select_related("sdr")
    if before is not None:
        rows = rows.filter(assigned_at__lt=before)
    return [
        {
            "kind": "assignment",
            "at": a.assigned_at,
            "id": a.pk,
            "type": a.via,
            "summary": f"→ {person_name(a.sdr)} ({a.get_via_display()})",
            "data": {
                "sdr": a.sdr.username,
                "via": a.via,
                "first_touch_due": a.first_touch_due.isoformat(),
                "followed_up_at": a.followed_up_at.isoformat() if a.followed_up_at else None,
                "breached_at": a.breached_at.isoformat() if a.breached_at else None,
                "ended_at": a.ended_at.isoformat() if a.ended_at else None,
                "end_reason": a.end_reason,
            },
        }
        for a in rows.order_by("-assigned_at", "-id")[:limit]
    ]


# --- Who sees what.


def user_is_manager(user: Any) -> bool:
    return bool(user.is_superuser or _groups(user) & {"sdr_manager"})


def user_is_sdr(user: Any) -> bool:
    return bool(_groups(user) & {"sdr"})


def _groups(user: Any) -> set[str]:
    cached = getattr(user, "_workspace_groups", None)
    if cached is None:
        cached = set(user.groups.values_list("name", flat=True)) if user.is_authenticated else set()
        user._workspace_groups = cached
    return cached


def lead_visible(*, user: Any, lead: Lead) -> bool:
    """A manager sees every lead; an SDR its own and the unassigned hot queue, never another SDR's."""
    if user_is_manager(user):
        return True
    if lead.owner_id == user.pk:
        return True
    return lead.owner_id is None and hot_queue().filter(pk=lead.pk).exists()


def lead_actionable(*, user: Any, lead: Lead) -> bool:
    """An SDR acts on its own leads (claim first); a manager on any."""
    return user_is_manager(user) or lead.owner_id == user.pk


# --- The queue.

QUEUE_PAGE = 50
QUEUE_COLUMNS = (
    "name",
    "company",
    "title",
    "industry",
    "source",
    "phone",
    "score",
    "temperature",
    "stage",
    "last_inbound_at",
    "last_event_at",
    "owner__username",
    "owner__first_name",
    "owner__last_name",
)
# Behaviour of the last days that explains a hot score.
REASON_DAYS = 14


@dataclass
class QueueFilters:
    pool: str = ""
    industry: str = ""
    source: str = ""
    temperature: str = "hot"
    owner: str = ""  # "", "mine", "unassigned", or a username (managers)
    q: str = ""

    @classmethod
    def of(cls, data: Any) -> QueueFilters:
        temperature = data.get("temperature", "hot")
        if temperature not in ("hot", "warm", "any"):
            temperature = "hot"
        return cls(
            pool=data.get("pool", "").strip(),
            industry=data.get("industry", "").strip(),
            source=data.get("source", "").strip(),
            temperature=temperature,
            owner=data.get("owner", "").strip(),
            q=data.get("q", "").strip()[:100],
        )

    def querystring(self) -> str:
        from urllib.parse import urlencode

        return urlencode(
            {k: v for k, v in self.__dict__.items() if v and not (k == "temperature" and v == "hot")}
        )


def hot_queue(temperature: str = "hot") -> QuerySet[Lead]:
    """Leads an SDR works (the services' one definition)."""
    from workspace.services import hot_queue_leads

    return hot_queue_leads(temperature)


def queue_leads(*, user: Any, filters: QueueFilters) -> QuerySet[Lead]:
    rows = hot_queue(filters.temperature)
    manager = user_is_manager(user)
    if filters.owner == "mine" or (not manager and filters.owner not in ("", "unassigned")):
        rows = rows.filter(owner=user)
    elif filters.owner == "unassigned":
        rows = rows.filter(owner__isnull=True)
    elif manager and filters.owner:
        rows = rows.filter(owner__username=filters.owner)
    elif not manager:
        rows = rows.filter(Q(owner__isnull=True) | Q(owner=user))
    if filters.industry:
        rows = rows.filter(industry=filters.industry)
    if filters.source:
        rows = rows.filter(source=filters.source)
    if filters.pool:
        rows = rows.filter(
            Exists(
                PoolMembership.objects.filter(
                    lead=OuterRef("pk"), pool__slug=filters.pool, left_at__isnull=True
                )
            )
        )
    if filters.q:
        rows = rows.filter(
            Q(name__icontains=filters.q) | Q(company__icontains=filters.q) | Q(phone__contains=filters.q)
        )
    return rows


@dataclass
class QueueRow:
    lead: Lead
    reason: str
    hot_since: datetime | None
    assignment: Assignment | None
    last_signal: datetime | None

    @property
    def mine_to_follow_up(self) -> bool:
        a = self.assignment
        return a is not None and a.followed_up_at is None


@dataclass
class QueuePage:
    rows: list[QueueRow]
    total: int
    page: int
    pages: int
    facets: dict[str, list[str]] = field(default_factory=dict)


def queue_page(*, user: Any, filters: QueueFilters, page: int = 1, now: datetime) -> QueuePage:
    """One page of the queue, by score then the freshness of the last signal; a bounded number of queries
    whatever the page holds (reasons, SLA and time in queue for all its rows at once)."""
    from scoring.models import LeadScore

    rows = queue_leads(user=user, filters=filters)
    total = rows.count()
    pages = max(1, (total + QUEUE_PAGE - 1) // QUEUE_PAGE)
    page = min(max(1, page), pages)
    signal = Coalesce("last_inbound_at", "last_event_at")
    leads = list(
        rows.select_related("owner")
        # The columns a row shows: the sort carries every selected column of ~15k hot leads (properties too).
        .only(*QUEUE_COLUMNS)
        .annotate(
            last_signal=signal,
            hot_since=Subquery(LeadScore.objects.filter(lead=OuterRef("pk")).values("hot_since")[:1]),
        )
        .order_by("-score", F("last_signal").desc(nulls_last=True), "-pk")[
            (page - 1) * QUEUE_PAGE : page * QUEUE_PAGE
        ]
    )
    ids = [lead.pk for lead in leads]
    assignments = {a.lead_id: a for a in Assignment.objects.filter(lead_id__in=ids, ended_at__isnull=True)}
    reasons = hot_reasons(lead_ids=ids, now=now)
    return QueuePage(
        rows=[
            QueueRow(
                lead=lead,
                reason=reasons.get(lead.pk, ""),
                hot_since=lead.hot_since,
                assignment=assignments.get(lead.pk),
                last_signal=lead.last_signal,
            )
            for lead in leads
        ],
        total=total,
        page=page,
        pages=pages,
    )


FACETS_SECONDS = 300


def queue_facets() -> dict[str, list[Any]]:
    """The choices of the queue's filters: industries and sources among hot leads, the active pools. Kept
    five minutes in the cache: a new industry may reach the drop-down a few minutes late."""
    from django.core.cache import cache

    return cache.get_or_set("workspace:queue-facets", _queue_facets, FACETS_SECONDS)


def _queue_facets() -> dict[str, list[Any]]:
    # Hot leads only: the warm ones are a quarter of a million at a million leads (0.7 s a facet).
    hot = hot_queue("hot")
    return {
        "industries": sorted(set(hot.exclude(industry="").values_list("industry", flat=True).distinct()))[
            :50
        ],
        "sources": sorted(set(hot.exclude(source="").values_list("source", flat=True).distinct()))[:50],
        "pools": list(Pool.objects.filter(active=True).values_list("slug", "name")),
    }


def hot_reasons(*, lead_ids: list[int], now: datetime) -> dict[int, str]:
    """Why each lead is hot, in one line: its strongest behaviours of the last days (what it read, how
    often), then the fit rule it meets best — "阅读白皮书《…》 · 3天内访问定价页2次 · 目标行业". Four queries
    for any number of leads."""
    from scoring.models import ScoringRule
    from scoring.selectors import earned_by_rule

    if not lead_ids:
        return {}
    per_rule = earned_by_rule(lead_ids=lead_ids, since=now - timedelta(days=REASON_DAYS), now=now)
    rules = {r.pk: r for r in ScoringRule.objects.filter(active=True)}
    by_lead: dict[int, list[dict[str, Any]]] = {}
    for row in per_rule:
        if row["rule_id"] in rules:
            by_lead.setdefault(row["lead_id"], []).append(row)
    top: dict[int, list[dict[str, Any]]] = {
        lead_id: sorted(items, key=lambda r: (-r["points"], -r["n"]))[:2]
        for lead_id, items in by_lead.items()
    }
    event_ids = [row["last_event"] for items in top.values() for row in items]
    titles = {
        pk: (props or {}).get("title") or (props or {}).get("asset") or ""
        for pk, props in Event.objects.filter(pk__in=event_ids).values_list("pk", "properties")
    }
    fit = _fit_matches(lead_ids=lead_ids, rules=[r for r in rules.values() if r.kind == "fit"], now=now)
    out: dict[int, str] = {}
    for lead_id in lead_ids:
        parts: list[str] = []
        for row in top.get(lead_id, []):
            rule = rules[row["rule_id"]]
            title = titles.get(row["last_event"], "")
            text = rule.name + (f"《{title}》" if title and row["n"] == 1 else "")
            if row["n"] > 1:
                days = max(1, (now - row["first"]).days + 1)
                text = f"{days}天内{rule.name}{row['n']}次"
            parts.append(text)
        if fit.get(lead_id):
            parts.append(fit[lead_id])
        out[lead_id] = " · ".join(parts)
    return out


def _fit_matches(*, lead_ids: list[int], rules: list[Any], now: datetime) -> dict[int, str]:
    """The best fit rule each lead meets (the most points), in one query."""
    from leads.rules import rule_compile

    if not rules:
        return {}
    rules = sorted(rules, key=lambda r: -r.points)
    annotations = {
        f"fit_{r.pk}": Case(
            When(rule_compile(r.rule, now=now), then=Value(True)),
            default=Value(False),
            output_field=BooleanField(),
        )
        for r in rules
    }
    out: dict[int, str] = {}
    for row in Lead.objects.filter(pk__in=lead_ids).annotate(**annotations).values("pk", *annotations):
        best = next((r for r in rules if row[f"fit_{r.pk}"]), None)
        if best is not None:
            out[row["pk"]] = best.name
    return out


# --- The lead page.

TIMELINE_ITEMS = 100


def lead_page(*, lead: Lead, now: datetime) -> dict[str, Any]:
    """Everything marketing knows about the lead, for the SDR: score with its explanation, pools since
    when, tags with counts, the timeline, open tasks, the assignment and its SLA. Bounded queries."""
    from channels.models import CallTask
    from leads.models import LeadTag, RecycleReason
    from leads.selectors import lead_timeline
    from scoring.selectors import score_explain
    from sequences.models import Touch, TouchState

    timeline = lead_timeline(lead=lead, limit=TIMELINE_ITEMS)
    content_ids = {item["data"].get("content") for item in timeline if item["kind"] == "touch"} - {None}
    content_titles: dict[int, str] = {}
    if content_ids:
        from content.models import ContentAsset

        content_titles = dict(ContentAsset.objects.filter(pk__in=content_ids).values_list("pk", "title"))
    for item in timeline:
        if item["kind"] == "touch" and item["data"].get("content"):
            item["data"]["content_title"] = content_titles.get(item["data"]["content"], "")
    return {
        "assignment": Assignment.objects.filter(lead=lead, ended_at__isnull=True)
        .select_related("sdr")
        .first(),
        "assignments": list(
            Assignment.objects.filter(lead=lead).select_related("sdr").order_by("-assigned_at")[:10]
        ),
        "explanation": score_explain(lead=lead, now=now),
        "pools": list(
            PoolMembership.objects.filter(lead=lead, left_at__isnull=True)
            .select_related("pool")
            .order_by("pool__family", "pool__priority")
        ),
        "tags": list(LeadTag.objects.filter(lead=lead).select_related("tag").order_by("-count", "tag__name")),
        "timeline": timeline,
        "staff_tasks": list(
            Touch.objects.filter(lead=lead, state=TouchState.TASK_OPEN)
            .select_related("sequence", "step")
            .order_by("task_deadline", "pk")
        ),
        "call_tasks": list(
            CallTask.objects.filter(lead=lead, state=CallTask.State.OPEN)
            .select_related("assignee")
            .order_by("due_at")
        ),
        "recycle_reasons": list(RecycleReason.objects.filter(active=True).select_related("sequence")),
    }


# --- The manager's team table.


@dataclass
class TeamRow:
    sdr: Any
    open_leads: int = 0
    assigned: int = 0
    followed_in_sla: int = 0
    breaches: int = 0
    sqls: int = 0
    returns: dict[str, int] = field(default_factory=dict)
    overdue_now: int = 0
    penalty_until: datetime | None = None
    available: bool = True

    @property
    def in_sla_percent(self) -> int | None:
        decided = self.assigned
        return round(100 * self.followed_in_sla / decided) if decided else None


def team_table(*, now: datetime, days: int = 30) -> list[TeamRow]:
    """Per SDR over the last `days`: assignments, followed up within the SLA (%), breaches, SQLs, returns by
    reason; open leads and overdue now. One query per figure, not per SDR."""
    from leads.models import RecycleReason, StageChange
    from workspace.models import SdrProfile
    from workspace.services import sdrs_team

    since = now - timedelta(days=days)
    sdrs = list(sdrs_team().order_by("username"))
    rows = {u.pk: TeamRow(sdr=u) for u in sdrs}
    recent = Assignment.objects.filter(assigned_at__gte=since, sdr_id__in=list(rows))
    for r in recent.values("sdr_id").annotate(
        n=Count("pk"),
        ok=Count("pk", filter=Q(followed_up_at__isnull=False, followed_up_at__lte=F("first_touch_due"))),
        late=Count("pk", filter=Q(breached_at__isnull=False)),
    ):
        row = rows[r["sdr_id"]]
        row.assigned, row.followed_in_sla, row.breaches = r["n"], r["ok"], r["late"]
    for r in (
        Assignment.objects.filter(ended_at__isnull=True, sdr_id__in=list(rows))
        .values("sdr_id")
        .annotate(
            n=Count("pk"),
            overdue=Count("pk", filter=Q(followed_up_at__isnull=True, first_touch_due__lt=now)),
        )
    ):
        rows[r["sdr_id"]].open_leads, rows[r["sdr_id"]].overdue_now = r["n"], r["overdue"]
    changes = StageChange.objects.filter(at__gte=since, by_id__in=list(rows))
    for r in changes.filter(to_stage="sql").values("by_id").annotate(n=Count("pk")):
        rows[r["by_id"]].sqls = r["n"]
    labels = dict(RecycleReason.objects.values_list("code", "label"))
    labels["unreachable"] = str(Assignment.End.UNREACHABLE.label)
    for r in changes.filter(to_stage="recycled").values("by_id", "reason").annotate(n=Count("pk")):
        code = (r["reason"] or "-").split(":", 1)[0].strip()  # "unreachable: 空号" counts as unreachable
        label = labels.get(code, code)
        returns = rows[r["by_id"]].returns
        returns[label] = returns.get(label, 0) + r["n"]
    for p in SdrProfile.objects.filter(user_id__in=list(rows)):
        rows[p.user_id].penalty_until = p.penalty_until if p.penalty_until and p.penalty_until > now else None
        rows[p.user_id].available = p.available
    return list(rows.values())
