"""Bulk keyword tagging: every lead whose company, title, industry or a property contains a keyword
gets the rule's tag, in one set-based statement (marketers' "科技, 软件 → industry:信息科技")."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.db.models import Count, Exists, OuterRef, Q, QuerySet
from django.db.models.fields.json import KeyTextTransform

from leads.models import KeywordTagRule, Lead, LeadTag, Tag
from leads.tagging import lead_tags_add_where, tag_name_normalize, tags_get_or_create


@dataclass(frozen=True)
class KeywordRuleCounts:
    """What applying a rule would do now."""

    matching: int  # leads whose field contains a keyword
    untagged: int  # of those, the ones that do not have the tag yet (what `apply` would tag)


def keyword_rule_source(*, rule: KeywordTagRule) -> str:
    """The `LeadTag.source` of tags stamped by this rule."""
    return f"keyword_rule:{rule.pk}"


def keyword_rule_leads(*, rule: KeywordTagRule) -> QuerySet[Lead]:
    """The leads whose rule field contains any of the rule's keywords, case-insensitively.

    A rule without keywords matches no lead (never all of them)."""
    keywords = rule.keyword_list()
    leads = Lead.objects.all()
    if not keywords:
        return leads.none()
    if rule.field == KeywordTagRule.Field.PROPERTY:
        if not rule.property_key:
            return leads.none()
        # An explicit key transform: a key containing "__" must not become a nested path.
        leads = leads.alias(keyword_target=KeyTextTransform(rule.property_key, "properties"))
        column = "keyword_target"
    else:
        column = str(rule.field)
    match = Q()
    for word in keywords:
        match |= Q(**{f"{column}__icontains": word})
    return leads.filter(match)


def _tag_of(rule: KeywordTagRule) -> Tag | None:
    """The rule's tag if it exists already (preview must not create it)."""
    return Tag.objects.filter(name=tag_name_normalize(rule.tag_name)).first()


def keyword_rule_counts(*, rule: KeywordTagRule) -> KeywordRuleCounts:
    """How many leads match the rule and how many of them lack its tag, in one query."""
    leads = keyword_rule_leads(rule=rule)
    tag = _tag_of(rule)
    if tag is None:
        matching = leads.count()
        return KeywordRuleCounts(matching=matching, untagged=matching)
    has_tag = LeadTag.objects.filter(lead=OuterRef("pk"), tag=tag)
    counts = leads.aggregate(matching=Count("pk"), untagged=Count("pk", filter=~Exists(has_tag)))
    return KeywordRuleCounts(matching=counts["matching"], untagged=counts["untagged"])


def keyword_rule_preview(*, rule: KeywordTagRule) -> int:
    """How many leads `keyword_rule_apply` would tag now (matching leads without the tag yet)."""
    return keyword_rule_counts(rule=rule).untagged


def keyword_rule_apply(*, rule: KeywordTagRule, now: datetime) -> int:
    """Add the rule's tag to every matching lead that lacks it; return how many leads got it.

    One `INSERT … SELECT … ON CONFLICT DO NOTHING` over all matching leads: a lead that has the tag
    keeps its count (applying twice changes nothing), and a concurrent apply cannot double-stamp.
    The tagged leads' `updated_at` moves to `now` so that API syncs by `updated_since` see the tag.
    """
    tag_name = tag_name_normalize(rule.tag_name)
    source = keyword_rule_source(rule=rule)
    leads = keyword_rule_leads(rule=rule)
    if leads.query.is_empty():  # no keywords: nothing to tag (and no SQL to build)
        KeywordTagRule.objects.filter(pk=rule.pk).update(last_applied_at=now, last_applied_count=0)
        rule.last_applied_at, rule.last_applied_count = now, 0
        return 0
    with transaction.atomic():
        tag = tags_get_or_create(names=[tag_name])[tag_name]
        tagged = lead_tags_add_where(tag=tag, leads=leads, source=source, now=now)
        KeywordTagRule.objects.filter(pk=rule.pk).update(last_applied_at=now, last_applied_count=tagged)
    rule.last_applied_at = now
    rule.last_applied_count = tagged
    return tagged
