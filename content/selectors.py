"""Reads of the content library: content analytics (per asset and per tag) and the next best content
for a lead, with the signals that chose it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db.models import (
    Case,
    Count,
    DateTimeField,
    Exists,
    ExpressionWrapper,
    F,
    FloatField,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
    When,
)
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Coalesce

from content.models import AssetViewer, Awareness, ContentAsset, TagViewer, TrackedLink
from leads.models import Event, Lead, LeadTag, Stage, StageChange, Tag

CONVERSION_DAYS = 30
# "Became MQL" counts MQL or beyond (a lead may jump straight to SQL or won); "became SQL", SQL or beyond.
MQL_OR_BEYOND = (Stage.MQL, Stage.SQL, Stage.WON)
SQL_OR_BEYOND = (Stage.SQL, Stage.WON)
# Events that say the lead is looking at the product itself.
PRODUCT_EVENTS = ("trial_started", "demo_requested", "demo_attended")


def _count(queryset: QuerySet, group: str) -> Subquery:
    return Subquery(
        queryset.order_by().values(group).annotate(n=Count("*")).values("n")[:1], output_field=IntegerField()
    )


def _views() -> QuerySet[Event]:
    """The `content_viewed` events of the outer viewer's lead, with the slug of the asset viewed."""
    return Event.objects.filter(lead=OuterRef("lead"), type="content_viewed").annotate(
        asset_slug=KeyTextTransform("asset", "properties")
    )


def _converted(viewers: QuerySet, stages: tuple[str, ...], views: QuerySet[Event]) -> QuerySet:
    """Viewers whose lead moved to one of `stages` within CONVERSION_DAYS after any of its `views`."""
    moved = StageChange.objects.filter(
        lead=OuterRef("lead"),
        to_stage__in=stages,
        at__gte=OuterRef("occurred_at"),
        at__lte=ExpressionWrapper(
            OuterRef("occurred_at") + timedelta(days=CONVERSION_DAYS), output_field=DateTimeField()
        ),
    )
    return viewers.filter(Exists(views.filter(Exists(moved))))


def content_asset_stats() -> QuerySet[ContentAsset]:
    """Every asset with sent (links), opened (links opened), unique viewers, views, open rate, and the
    viewers that became MQL / SQL (or beyond) within 30 days after any of their views of it."""
    links = TrackedLink.objects.filter(asset=OuterRef("pk"))
    viewers = AssetViewer.objects.filter(asset=OuterRef("pk"))
    views = _views().filter(asset_slug=OuterRef("asset__slug"))
    return (
        ContentAsset.objects.annotate(
            sent=Coalesce(_count(links, "asset"), 0),
            opened=Coalesce(_count(links.filter(opens__gt=0), "asset"), 0),
            mql_after=Coalesce(_count(_converted(viewers, MQL_OR_BEYOND, views), "asset"), 0),
            sql_after=Coalesce(_count(_converted(viewers, SQL_OR_BEYOND, views), "asset"), 0),
        )
        .annotate(
            open_rate=Case(
                When(sent=0, then=Value(None)),
                default=ExpressionWrapper(F("opened") * 1.0 / F("sent"), output_field=FloatField()),
                output_field=FloatField(),
            )
        )
        .prefetch_related("tags")
    )


def content_tag_stats() -> QuerySet[Tag]:
    """Every tag carried by content, with the same figures summed over its assets' links and viewers."""
    links = TrackedLink.objects.filter(asset__tags=OuterRef("pk"))
    viewers = TagViewer.objects.filter(tag=OuterRef("pk"))
    # Views of any asset that carries the tag.
    views = _views().filter(
        asset_slug__in=ContentAsset.objects.filter(tags=OuterRef(OuterRef("tag"))).values("slug")
    )
    view_sum = Subquery(
        viewers.order_by().values("tag").annotate(n=Sum("views")).values("n")[:1], output_field=IntegerField()
    )
    return (
        Tag.objects.filter(assets__isnull=False)
        .distinct()
        .annotate(
            assets_count=Coalesce(
                _count(ContentAsset.objects.filter(tags=OuterRef("pk")), "tags"),
                0,  # type: ignore[arg-type]
            ),
            sent=Coalesce(_count(links.values("asset__tags"), "asset__tags"), 0),
            opened=Coalesce(_count(links.filter(opens__gt=0).values("asset__tags"), "asset__tags"), 0),
            views=Coalesce(view_sum, 0),
            unique_viewers=Coalesce(_count(viewers, "tag"), 0),
            mql_after=Coalesce(_count(_converted(viewers, MQL_OR_BEYOND, views), "tag"), 0),
            sql_after=Coalesce(_count(_converted(viewers, SQL_OR_BEYOND, views), "tag"), 0),
        )
        .annotate(
            open_rate=Case(
                When(sent=0, then=Value(None)),
                default=ExpressionWrapper(F("opened") * 1.0 / F("sent"), output_field=FloatField()),
                output_field=FloatField(),
            )
        )
    )


# --- Next best content.


@dataclass
class Recommendation:
    asset: ContentAsset | None
    awareness: str
    signals: list[str] = field(default_factory=list)
    score: float = 0.0
    alternatives: list[dict[str, Any]] = field(default_factory=list)


def lead_awareness(*, lead: Lead, now: datetime) -> tuple[str, list[str]]:
    """Where the lead is: product aware (trial/demo events, or SQL and beyond), solution aware (a need
    tag), else problem aware; with the signals that said so."""
    if lead.stage in (Stage.SQL, Stage.WON):
        return Awareness.PRODUCT, [f"stage {lead.stage}: looking at the product"]
    product = (
        Event.objects.filter(lead=lead, type__in=PRODUCT_EVENTS, occurred_at__lte=now)
        .order_by("-occurred_at")
        .values_list("type", flat=True)
        .first()
    )
    if product:
        return Awareness.PRODUCT, [f"{product}: looking at the product"]
    needs = list(
        LeadTag.objects.filter(lead=lead, tag__group="need")
        .order_by("-count")
        .values_list("tag__name", flat=True)[:3]
    )
    if needs:
        return Awareness.SOLUTION, [f"need tags ({', '.join(needs)}): looking for a solution"]
    return Awareness.PROBLEM, ["no need tag yet: learning about the problem"]


_ORDER = [Awareness.PROBLEM, Awareness.SOLUTION, Awareness.PRODUCT]
# Early on, low friction and closeness to value both count; later, the closer to the product the better.
_WEIGHTS = {
    Awareness.PROBLEM: {"low_friction": 4, "proximity": 2},
    Awareness.SOLUTION: {"low_friction": 2, "proximity": 3},
    Awareness.PRODUCT: {"low_friction": 0, "proximity": 6},
}
STAGE_MATCH, STAGE_NEXT, SHARED_TAG = 30, 10, 8


def content_recommend(*, lead: Lead, now: datetime, alternatives: int = 3) -> Recommendation:
    """The next best asset for the lead: active, not yet sent to it nor viewed by it, of its awareness
    stage (the next stage counts less), then low friction and value proximity as the stage wants, then
    shared tags. One ranked query; the answer says which signals counted."""
    awareness, signals = lead_awareness(lead=lead, now=now)
    index = _ORDER.index(Awareness(awareness))
    following = _ORDER[index + 1] if index + 1 < len(_ORDER) else None
    weights = _WEIGHTS[Awareness(awareness)]
    tag_ids = list(LeadTag.objects.filter(lead=lead).values_list("tag_id", flat=True))
    stage_points = Case(
        When(awareness=awareness, then=Value(STAGE_MATCH)),
        When(awareness=following or "-", then=Value(STAGE_NEXT)),
        default=Value(0),
        output_field=IntegerField(),
    )
    shared = Count("tags", filter=Q(tags__in=tag_ids), distinct=True) if tag_ids else Value(0)
    candidates = (
        ContentAsset.objects.filter(active=True)
        .exclude(Exists(TrackedLink.objects.filter(asset=OuterRef("pk"), lead=lead)))
        .exclude(Exists(AssetViewer.objects.filter(asset=OuterRef("pk"), lead=lead)))
        .annotate(shared_tags=shared, stage_points=stage_points)
        .annotate(
            rank=F("stage_points")
            + (5 - F("friction")) * weights["low_friction"]
            + F("value_proximity") * weights["proximity"]
            + F("shared_tags") * SHARED_TAG
        )
        .order_by("-rank", "friction", "-created_at", "-id")
    )
    ranked = list(candidates[: alternatives + 1])
    done = ContentAsset.objects.filter(
        Q(Exists(TrackedLink.objects.filter(asset=OuterRef("pk"), lead=lead)))
        | Q(Exists(AssetViewer.objects.filter(asset=OuterRef("pk"), lead=lead)))
    ).count()
    if done:
        signals.append(f"{done} asset(s) already sent or viewed: left out")
    if not ranked:
        signals.append("nothing left to recommend")
        return Recommendation(asset=None, awareness=awareness, signals=signals)
    best = ranked[0]
    if best.awareness == awareness:
        signals.append(f"matches the stage ({awareness})")
    elif best.awareness == following:
        signals.append(f"one stage ahead ({best.awareness}): nothing left at the lead's own stage")
    signals.append(f"friction {best.friction}/5, value proximity {best.value_proximity}/5")
    if best.shared_tags:
        names = sorted(t.name for t in best.tags.all() if t.pk in set(tag_ids))
        signals.append(f"shares {best.shared_tags} tag(s) with the lead: {', '.join(names)}")
    return Recommendation(
        asset=best,
        awareness=awareness,
        signals=signals,
        score=float(best.rank),
        alternatives=[{"asset": a.slug, "title": a.title, "rank": a.rank} for a in ranked[1:]],
    )
