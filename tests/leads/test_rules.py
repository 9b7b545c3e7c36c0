"""The rule language: bad rules are refused with the path of the bad node; each operator compiles to SQL."""

from datetime import timedelta

import pytest
from django.utils.timezone import now as timezone_now

from leads.models import Lead
from leads.rules import RuleError, rule_compile, rule_matches, rule_pools, rule_validate
from leads.services import lead_tags_change
from tests.factories import EventFactory, LeadFactory


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (
            {"all": [{"score_gte": 1}, {"tag": "x"}, {"event": "form_submitted", "within_days": 0}]},
            "all[2].within_days: must be a positive integer",
        ),
        ({"any": []}, "any: must be a non-empty list of rules"),
        ({"not": {"field": "nope", "op": "eq", "value": 1}}, "not.field: unknown field 'nope'"),
        ({"field": "industry", "op": "like", "value": "x"}, "op: must be one of"),
        ({"field": "industry", "op": "in", "value": "制造"}, "value: must be a non-empty list"),
        ({"field": "properties.a__b", "op": "eq", "value": 1}, "field: a property key"),
        ({"tag": "need:x", "count_gte": -1}, "count_gte: must be a positive integer"),
        ({"event": "x", "where": {"form": ["a"]}}, "where.form: must be a string"),
        ({"days_since": "last_inbound_at"}, "rule: give gte, gt, lte or lt"),
        ({"bant_gte": 5}, "bant_gte: must be an integer from 0 to 4"),
        ({"pool": "Not A Slug"}, "pool: must be a pool slug"),
        ({"score_gte": 1, "tag": "x"}, "rule: a node has exactly one of"),
        ({"tag": "x", "extra": 1}, "extra: unknown key"),
        ([], "rule: must be an object"),
    ],
)
def test_bad_rules_name_the_path(rule, message):
    with pytest.raises(RuleError) as info:
        rule_validate(rule)
    assert message in str(info.value)


def test_rule_pools_lists_referenced_pools():
    assert rule_pools({"all": [{"pool": "mql"}, {"not": {"any": [{"pool": "sql"}, {"score_gte": 1}]}}]}) == {
        "mql",
        "sql",
    }


@pytest.mark.django_db
def test_each_operator_selects_the_right_leads():
    now = timezone_now()
    a = LeadFactory(
        industry="制造",
        company="苏州恒立精密机械",
        score=70,
        bant_budget=True,
        bant_need=True,
        bant_timeline=True,
        properties={"buying_plan": "Q3", "employees": 500},
        last_inbound_at=now - timedelta(days=20),
    )
    b = LeadFactory(
        industry="教育",
        company="上海启明教育",
        score=20,
        email=None,
        properties={"buying_plan": ""},
        last_inbound_at=now - timedelta(days=2),
    )
    c = LeadFactory(industry="", company="", score=0, phone=None, properties={})
    lead_tags_change(lead=a, add=["need:全渠道获客"], now=now)
    lead_tags_change(lead=a, add=["need:全渠道获客"], now=now)
    lead_tags_change(lead=b, add=["need:全渠道获客"], now=now)
    EventFactory(
        lead=a, type="content_viewed", properties={"form": "whitepaper"}, occurred_at=now - timedelta(days=3)
    )
    EventFactory(
        lead=a, type="content_viewed", properties={"form": "whitepaper"}, occurred_at=now - timedelta(days=5)
    )
    EventFactory(
        lead=b, type="content_viewed", properties={"form": "whitepaper"}, occurred_at=now - timedelta(days=40)
    )
    EventFactory(
        lead=c, type="content_viewed", properties={"form": "case_study"}, occurred_at=now - timedelta(days=1)
    )

    def members(rule):
        rule_validate(rule)
        found = set(Lead.objects.filter(rule_compile(rule, now=now)).values_list("pk", flat=True))
        for lead in (a, b, c):  # the one-lead form agrees with the set-based form
            assert rule_matches(rule, lead, now=now) == (lead.pk in found)
        return found

    assert members({"field": "industry", "op": "eq", "value": "制造"}) == {a.pk}
    assert members({"field": "industry", "op": "ne", "value": "制造"}) == {b.pk, c.pk}
    assert members({"field": "industry", "op": "in", "value": ["制造", "教育"]}) == {a.pk, b.pk}
    assert members({"field": "industry", "op": "is_set", "value": False}) == {c.pk}
    assert members({"field": "phone", "op": "is_set", "value": True}) == {a.pk, b.pk}
    assert members({"field": "company", "op": "contains", "value": "精密"}) == {a.pk}
    assert members({"field": "score", "op": "gte", "value": 20}) == {a.pk, b.pk}
    assert members({"field": "score", "op": "lt", "value": 20}) == {c.pk}
    assert members({"field": "properties.buying_plan", "op": "is_set", "value": True}) == {a.pk}
    assert members({"field": "properties.buying_plan", "op": "eq", "value": "Q3"}) == {a.pk}
    assert members({"field": "properties.employees", "op": "gt", "value": 100}) == {a.pk}
    assert members({"tag": "need:全渠道获客"}) == {a.pk, b.pk}
    assert members({"tag": "need:全渠道获客", "count_gte": 2}) == {a.pk}
    assert members({"tag": "need:*"}) == {a.pk, b.pk}
    assert members({"tag": "industry:*"}) == set()
    assert members({"event": "content_viewed"}) == {a.pk, b.pk, c.pk}
    assert members({"event": "content_viewed", "within_days": 30, "where": {"form": "whitepaper"}}) == {a.pk}
    assert members({"event": "content_viewed", "count_gte": 2}) == {a.pk}
    assert members({"event": "content_viewed", "within_days": 7, "count_gte": 3}) == set()
    assert members({"days_since": "last_inbound_at", "gte": 14}) == {a.pk}
    assert members({"days_since": "last_inbound_at", "lt": 14}) == {b.pk}
    assert members({"score_gte": 70}) == {a.pk}
    assert members({"bant_gte": 3}) == {a.pk}
    assert members({"bant_gte": 0}) == {a.pk, b.pk, c.pk}
    assert members(
        {"all": [{"tag": "need:全渠道获客"}, {"not": {"field": "industry", "op": "eq", "value": "制造"}}]}
    ) == {b.pk}
    assert members({"any": [{"score_gte": 70}, {"field": "industry", "op": "is_set", "value": False}]}) == {
        a.pk,
        c.pk,
    }
