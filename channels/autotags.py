"""Auto-tag rules: behaviour gives a lead a tag, and the tag may start a sequence (`tag_added`).

Kinds (channels.models.AutoTagRule):
- `message_count`: at least N `message_in` events within D days;
- `keyword`: a `message_in` whose `properties.text` contains any keyword (within D days if D is set);
- `no_reply`: at least N touches sent or delivered since the lead's last `message_in` (or ever);
- `content_tag`: the lead opened (`content_viewed`) an asset carrying the tag `content_tag` (the per-tag
  viewer rows of the content app).

Evaluation is set-based: each rule is one `INSERT … SELECT … ON CONFLICT DO NOTHING` into the lead
tags, so a lead that has the tag already keeps it as it is (never counted up each tick) and two ticks
at once stamp once. In the tick, before the pools, the rules run over the leads marked dirty (without
taking them off the queue: the pools do that next, and see the tags added here, which mark their leads
dirty again). Once an hour, and at once after a rule changed (`last_applied_at` cleared by the admin),
a rule runs over every lead, in id ranges of FULL_BATCH: touches being sent do not mark a lead dirty,
so `no_reply` relies on this pass.

`last_applied_at` is the rule's last full pass; `last_applied_count` the leads it tagged in that pass
and on dirty leads since.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db import transaction
from django.db.models import Count, Exists, F, Max, Min, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Coalesce
from django.utils.translation import gettext

from channels.models import AutoTagRule
from leads.models import DirtyLead, Event, Lead, LeadTag, Tag
from leads.rules import rule_compile
from leads.tagging import lead_tags_add_where, tag_name_normalize, tags_get_or_create

FULL_EVERY = timedelta(hours=1)
FULL_BATCH = 100_000
# Touch states that reached the lead (for `no_reply`).
SENT_STATES = ("sent", "delivered")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class AutoTagRuleError(ValueError):
    """A rule that cannot be evaluated (missing N, no keywords …); the admin shows the message."""


def autotag_keywords(*, rule: AutoTagRule) -> list[str]:
    raw = rule.keywords.replace("，", ",").replace("\n", ",")
    return [word.strip() for word in raw.split(",") if word.strip()]


def autotag_rule_check(*, rule: AutoTagRule) -> None:
    """Raise AutoTagRuleError if the rule lacks what its kind needs."""
    try:
        tag_name_normalize(rule.tag_name)
    except ValueError as exc:
        raise AutoTagRuleError(gettext("Tag to add: %(error)s") % {"error": exc}) from exc
    kind = rule.kind
    if kind in (AutoTagRule.Kind.MESSAGE_COUNT, AutoTagRule.Kind.NO_REPLY) and not rule.count:
        raise AutoTagRuleError(gettext("N must be at least 1."))
    if kind == AutoTagRule.Kind.MESSAGE_COUNT and not rule.within_days:
        raise AutoTagRuleError(gettext("D (days) must be at least 1."))
    if kind == AutoTagRule.Kind.KEYWORD and not autotag_keywords(rule=rule):
        raise AutoTagRuleError(gettext("Give at least one keyword."))
    if kind == AutoTagRule.Kind.CONTENT_TAG:
        try:
            tag_name_normalize(rule.content_tag)
        except ValueError as exc:
            raise AutoTagRuleError(gettext("Content tag: %(error)s") % {"error": exc}) from exc


def autotag_rule_source(*, rule: AutoTagRule) -> str:
    """The `LeadTag.source` of tags stamped by this rule."""
    return f"autotag:{rule.pk}"


def autotag_rule_leads(*, rule: AutoTagRule, now: datetime) -> QuerySet[Lead]:
    """The leads that meet the rule now (whether or not they have its tag). A rule that does not check
    matches nobody."""
    try:
        autotag_rule_check(rule=rule)
    except AutoTagRuleError:
        return Lead.objects.none()
    kind = rule.kind
    if kind == AutoTagRule.Kind.MESSAGE_COUNT:
        node = {"event": "message_in", "within_days": rule.within_days, "count_gte": rule.count}
        return Lead.objects.filter(rule_compile(node, now=now))
    if kind == AutoTagRule.Kind.KEYWORD:
        words = Q()
        for word in autotag_keywords(rule=rule):
            words |= Q(said__icontains=word)
        messages = Event.objects.filter(lead=OuterRef("pk"), type="message_in", occurred_at__lte=now)
        if rule.within_days:
            messages = messages.filter(occurred_at__gte=now - timedelta(days=rule.within_days))
        # An explicit key transform: `text` as text, not as a JSON value.
        messages = messages.alias(said=KeyTextTransform("text", "properties")).filter(words)
        return Lead.objects.filter(Exists(messages))
    if kind == AutoTagRule.Kind.NO_REPLY:
        from sequences.models import Touch

        last_reply = (
            Event.objects.filter(lead=OuterRef("lead_id"), type="message_in")
            .order_by()
            .values("lead")
            .annotate(at=Max("occurred_at"))
            .values("at")
        )
        touches = Touch.objects.filter(lead=OuterRef("pk"), state__in=SENT_STATES, sent_at__lte=now).filter(
            sent_at__gt=Coalesce(Subquery(last_reply), Value(_EPOCH))
        )
        count = int(rule.count or 1)
        # EXISTS (… OFFSET N-1 LIMIT 1): at least N such touches, stopping at the N-th.
        return Lead.objects.filter(Exists(touches.order_by().values("pk")[count - 1 : count]))
    from content.models import TagViewer

    viewed = TagViewer.objects.filter(lead=OuterRef("pk"), tag__name=tag_name_normalize(rule.content_tag))
    return Lead.objects.filter(Exists(viewed))


@dataclass(frozen=True)
class AutoTagPreview:
    matching: int  # leads that meet the rule now
    untagged: int  # of those, the ones without the tag: what applying it now would tag


def autotag_rule_preview(*, rule: AutoTagRule, now: datetime) -> AutoTagPreview:
    """What applying the rule to every lead now would do, in one query (nothing is written)."""
    leads = autotag_rule_leads(rule=rule, now=now)
    if leads.query.is_empty():
        return AutoTagPreview(0, 0)
    tag = Tag.objects.filter(name=tag_name_normalize(rule.tag_name)).first()
    if tag is None:
        matching = leads.count()
        return AutoTagPreview(matching, matching)
    has_tag = LeadTag.objects.filter(lead=OuterRef("pk"), tag=tag)
    counts = leads.aggregate(matching=Count("pk"), untagged=Count("pk", filter=~Exists(has_tag)))
    return AutoTagPreview(counts["matching"], counts["untagged"])


def _stamp(*, rule: AutoTagRule, tag: Tag, leads: QuerySet[Lead], now: datetime) -> int:
    """Give the tag to the leads of the queryset that lack it (moved `updated_at`, marked dirty)."""
    return lead_tags_add_where(tag=tag, leads=leads, source=autotag_rule_source(rule=rule), now=now)


def autotag_rule_apply(
    *, rule: AutoTagRule, now: datetime, scope: Q | None = None, tag: Tag | None = None
) -> int:
    """Stamp the rule's tag on the leads (of `scope`, or all) that meet it and lack it."""
    leads = autotag_rule_leads(rule=rule, now=now)
    if leads.query.is_empty():
        return 0
    if scope is not None:
        leads = leads.filter(scope)
    if tag is None:
        name = tag_name_normalize(rule.tag_name)
        tag = tags_get_or_create(names=[name])[name]
    return _stamp(rule=rule, tag=tag, leads=leads, now=now)


def _tags_of(rules: list[AutoTagRule]) -> dict[int, Tag]:
    """Each rule's tag (created if missing), in one query when they all exist."""
    names: dict[int, str] = {}
    for rule in rules:
        try:
            names[rule.pk] = tag_name_normalize(rule.tag_name)
        except ValueError:
            continue  # a rule that does not check tags nobody
    tags = tags_get_or_create(names=names.values())
    return {pk: tags[name] for pk, name in names.items()}


def autotag_rule_apply_full(*, rule: AutoTagRule, now: datetime, batch: int = FULL_BATCH) -> int:
    """A full pass of one rule over every lead, in id ranges; records it on the rule."""
    bounds = Lead.objects.aggregate(low=Min("pk"), high=Max("pk"))
    tagged = 0
    if bounds["low"] is not None:
        for start in range(bounds["low"], bounds["high"] + 1, batch):
            tagged += autotag_rule_apply(rule=rule, now=now, scope=Q(pk__gte=start, pk__lt=start + batch))
    AutoTagRule.objects.filter(pk=rule.pk).update(last_applied_at=now, last_applied_count=tagged)
    rule.last_applied_at, rule.last_applied_count = now, tagged
    return tagged


def autotags_tick(now: datetime) -> dict[str, int]:
    """Tick step (before the pools): every active rule over the dirty leads, then the full passes due.
    Nothing to do costs one query (no active rule) or two (no dirty lead, no full pass due)."""
    rules = list(AutoTagRule.objects.filter(active=True).order_by("pk"))
    if not rules:
        return {}
    report = {"tagged": 0, "full": 0}
    due = [r for r in rules if r.last_applied_at is None or now - r.last_applied_at >= FULL_EVERY]
    rest = [r for r in rules if r not in due]
    if rest and DirtyLead.objects.exists():
        dirty = Q(pk__in=DirtyLead.objects.values("lead_id"))
        with transaction.atomic():
            tags = _tags_of(rest)
            for rule in rest:
                if rule.pk not in tags:
                    continue
                tagged = autotag_rule_apply(rule=rule, now=now, scope=dirty, tag=tags[rule.pk])
                if tagged:
                    AutoTagRule.objects.filter(pk=rule.pk).update(
                        last_applied_count=Coalesce(F("last_applied_count"), 0) + tagged
                    )
                report["tagged"] += tagged
    for rule in due:  # a full pass covers the dirty leads too
        report["tagged"] += autotag_rule_apply_full(rule=rule, now=now)
        report["full"] += 1
    return report
