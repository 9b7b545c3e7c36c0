"""Property: for generated leads, tags, events and rules, the SQL membership equals a plain-Python oracle.

The oracle below is written only here, from DESIGN.md's description of the rule language; the product
has one compiler (to SQL) and `rule_matches` goes through it too.
"""

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leads.models import Event, Lead, LeadTag, Tag
from leads.rules import rule_compile, rule_tag_ids_known, rule_validate

NOW = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
TAGS = ["need:私域运营", "need:全渠道获客", "industry:制造"]
INDUSTRIES = ["", "制造", "教育", "Retail"]
EVENT_TYPES = ["content_viewed", "message_in"]
FORMS = ["whitepaper", "case_study"]

lead_strategy = st.fixed_dictionaries(
    {
        "industry": st.sampled_from(INDUSTRIES),
        "phone": st.sampled_from([None, "+8613800138000"]),
        "score": st.integers(0, 100),
        "bant": st.lists(st.booleans(), min_size=4, max_size=4),
        "plan": st.sampled_from(["absent", "", "Q3", "Q4"]),
        "last_inbound_days": st.one_of(st.none(), st.integers(0, 30)),
        "tags": st.dictionaries(st.sampled_from(TAGS), st.integers(1, 3), max_size=3),
        "events": st.lists(
            st.tuples(st.sampled_from(EVENT_TYPES), st.integers(0, 40), st.sampled_from(FORMS)), max_size=4
        ),
    }
)

leaf = st.one_of(
    st.builds(lambda v: {"field": "industry", "op": "eq", "value": v}, st.sampled_from(INDUSTRIES)),
    st.builds(lambda v: {"field": "industry", "op": "ne", "value": v}, st.sampled_from(INDUSTRIES)),
    st.builds(
        lambda v: {"field": "industry", "op": "in", "value": v},
        st.lists(st.sampled_from(INDUSTRIES), min_size=1, max_size=2),
    ),
    st.builds(lambda v: {"field": "industry", "op": "is_set", "value": v}, st.booleans()),
    st.builds(
        lambda v: {"field": "industry", "op": "contains", "value": v},
        st.sampled_from(["制", "retail", "教育"]),
    ),
    st.builds(lambda v: {"field": "phone", "op": "is_set", "value": v}, st.booleans()),
    st.builds(
        lambda op, v: {"field": "score", "op": op, "value": v},
        st.sampled_from(["gt", "gte", "lt", "lte", "eq", "ne"]),
        st.integers(0, 100),
    ),
    st.builds(lambda v: {"field": "properties.plan", "op": "is_set", "value": v}, st.booleans()),
    st.builds(lambda v: {"field": "properties.plan", "op": "eq", "value": v}, st.sampled_from(["Q3", "Q4"])),
    st.builds(lambda t, n: {"tag": t, "count_gte": n}, st.sampled_from(TAGS), st.integers(1, 3)),
    st.builds(lambda: {"tag": "need:*"}),
    st.builds(
        lambda t, d, n, w: {
            "event": t,
            **({"within_days": d} if d else {}),
            "count_gte": n,
            **({"where": {"form": w}} if w else {}),
        },
        st.sampled_from(EVENT_TYPES),
        st.one_of(st.none(), st.integers(1, 30)),
        st.integers(1, 3),
        st.one_of(st.none(), st.sampled_from(FORMS)),
    ),
    st.builds(
        lambda op, d: {"days_since": "last_inbound_at", op: d},
        st.sampled_from(["gte", "gt", "lte", "lt"]),
        st.integers(0, 30),
    ),
    st.builds(lambda n: {"score_gte": n}, st.integers(0, 100)),
    st.builds(lambda n: {"bant_gte": n}, st.integers(0, 4)),
)
rule_strategy = st.recursive(
    leaf,
    lambda children: st.one_of(
        st.builds(lambda c: {"all": c}, st.lists(children, min_size=1, max_size=3)),
        st.builds(lambda c: {"any": c}, st.lists(children, min_size=1, max_size=3)),
        st.builds(lambda c: {"not": c}, children),
    ),
    max_leaves=6,
)


def oracle(rule: dict, lead: dict) -> bool:
    if "all" in rule:
        return all(oracle(child, lead) for child in rule["all"])
    if "any" in rule:
        return any(oracle(child, lead) for child in rule["any"])
    if "not" in rule:
        return not oracle(rule["not"], lead)
    if "field" in rule:
        if rule["field"] == "properties.plan":
            value = None if lead["plan"] == "absent" else lead["plan"]
            if rule["op"] == "is_set":
                return (value not in (None, "")) == rule["value"]
            return value == rule["value"]
        value = {"industry": lead["industry"], "phone": lead["phone"], "score": lead["score"]}[rule["field"]]
        op, wanted = rule["op"], rule["value"]
        if op == "is_set":
            return (value not in (None, "")) == wanted
        if op == "contains":
            return value is not None and wanted.lower() in value.lower()
        if op == "in":
            return value in wanted
        return {
            "eq": value == wanted,
            "ne": value != wanted,
            "gt": value > wanted,
            "gte": value >= wanted,
            "lt": value < wanted,
            "lte": value <= wanted,
        }[op]
    if "tag" in rule:
        if rule["tag"].endswith(":*"):
            group = rule["tag"][:-2]
            return any(name.startswith(group + ":") for name in lead["tags"])
        return lead["tags"].get(rule["tag"], 0) >= rule.get("count_gte", 1)
    if "event" in rule:
        matching = [
            e
            for e in lead["events"]
            if e[0] == rule["event"]
            and ("within_days" not in rule or e[1] <= rule["within_days"])
            and ("where" not in rule or e[2] == rule["where"]["form"])
        ]
        return len(matching) >= rule.get("count_gte", 1)
    if "days_since" in rule:
        days = lead["last_inbound_days"]
        if days is None:
            return False
        ((op, bound),) = ((k, v) for k, v in rule.items() if k != "days_since")
        return {"gte": days >= bound, "gt": days > bound, "lte": days <= bound, "lt": days < bound}[op]
    if "score_gte" in rule:
        return lead["score"] >= rule["score_gte"]
    if "bant_gte" in rule:
        return sum(lead["bant"]) >= rule["bant_gte"]
    raise AssertionError(rule)


@pytest.mark.django_db
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(leads=st.lists(lead_strategy, min_size=1, max_size=6), rule=rule_strategy)
def test_sql_membership_equals_the_oracle(leads, rule):
    rule_validate(rule)
    Lead.objects.all().delete()
    tags = {
        name: Tag.objects.get_or_create(name=name, group=name.split(":")[0], label=name.split(":")[1])[0]
        for name in TAGS
    }
    expected, created = set(), []
    for spec in leads:
        lead = Lead.objects.create(
            industry=spec["industry"],
            phone=None,
            score=spec["score"],
            bant_budget=spec["bant"][0],
            bant_authority=spec["bant"][1],
            bant_need=spec["bant"][2],
            bant_timeline=spec["bant"][3],
            properties={} if spec["plan"] == "absent" else {"plan": spec["plan"]},
            # Whole days and an hour's margin: the oracle counts days, SQL compares instants.
            last_inbound_at=None
            if spec["last_inbound_days"] is None
            else NOW - timedelta(days=spec["last_inbound_days"], hours=1) + timedelta(hours=1),
        )
        if spec["phone"]:
            Lead.objects.filter(pk=lead.pk).update(phone=f"+86138{lead.pk:08d}")
        for name, count in spec["tags"].items():
            LeadTag.objects.create(lead=lead, tag=tags[name], count=count, first_at=NOW, last_at=NOW)
        for event_type, days_ago, form in spec["events"]:
            Event.objects.create(
                lead=lead,
                type=event_type,
                occurred_at=NOW - timedelta(days=days_ago),
                properties={"form": form},
            )
        created.append(lead)
        if oracle(rule, spec):
            expected.add(lead.pk)
    found = set(Lead.objects.filter(rule_compile(rule, now=NOW)).values_list("pk", flat=True))
    assert found == expected, rule
    # The pools compile with the tags' ids looked up first (and sibling tag tests merged): same leads.
    with rule_tag_ids_known([rule]):
        by_ids = set(Lead.objects.filter(rule_compile(rule, now=NOW)).values_list("pk", flat=True))
    assert by_ids == expected, rule
