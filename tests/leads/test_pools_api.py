"""Pools through the API and the tick: default pools, members, the `pool` filter, `pools` on a lead."""

import io

import pytest
from django.core.management import call_command

from leads.models import Lead, Pool
from leads.services import lead_tags_change
from tests.factories import LeadFactory

pytestmark = pytest.mark.django_db


def test_default_pools_exist_and_validate(api):
    body = api.get("/api/v1/pools/").json()
    slugs = {pool["slug"] for pool in body}
    assert {"mil", "mql", "sql", "value-high", "value-medium", "value-low", "silent-14-days"} <= slugs


def test_tick_fills_the_default_pools_and_the_api_shows_them(api, django_assert_max_num_queries):
    qualified = LeadFactory(industry="制造", bant_timeline=True, stage="rl")
    lead_tags_change(lead=qualified, add=["need:全渠道获客"], now=qualified.created_at)
    needy = LeadFactory(industry="教育", stage="rl")
    lead_tags_change(lead=needy, add=["need:私域运营"], now=needy.created_at)
    known = LeadFactory(industry="零售")
    unknown = LeadFactory(industry="")
    nobody = LeadFactory(phone=None)
    call_command("tick", "--now", "2026-11-23T10:00:00+08:00", stdout=io.StringIO())

    def pools_of(lead):
        return api.get(f"/api/v1/leads/{lead.pk}/").json()["pools"]

    assert pools_of(qualified) == ["mil", "mql"]
    assert pools_of(needy) == ["mil", "value-high"]
    assert pools_of(known) == ["mil", "value-medium"]
    assert pools_of(unknown) == ["mil", "value-low"]
    assert pools_of(nobody) == []
    assert Lead.objects.get(pk=qualified.pk).stage == "mql"
    members = api.get("/api/v1/pools/mql/members/").json()["results"]
    assert [lead["id"] for lead in members] == [qualified.pk]
    assert [lead["id"] for lead in api.get("/api/v1/leads/?pool=value-high").json()["results"]] == [needy.pk]
    mil = next(p for p in api.get("/api/v1/pools/").json() if p["slug"] == "mil")
    assert mil["size"] == 4
    with django_assert_max_num_queries(8):
        api.get("/api/v1/leads/?pool=mil&page_size=50")


def test_creating_and_editing_pools_validates_the_rule(api):
    pool = {"slug": "whitepaper-readers", "name": "白皮书读者"}
    response = api.post(
        "/api/v1/pools/", {**pool, "rule": {"event": "content_viewed", "within_days": 0}}, format="json"
    )
    assert response.status_code == 400
    assert "within_days: must be a positive integer" in response.json()["rule"][0]
    response = api.post(
        "/api/v1/pools/", {**pool, "rule": {"event": "content_viewed", "within_days": 30}}, format="json"
    )
    assert response.status_code == 201, response.content
    assert api.patch("/api/v1/pools/mil/", {"rule": {"pool": "value-low"}}, format="json").status_code == 400
    response = api.patch("/api/v1/pools/whitepaper-readers/", {"rule": {"tag": "form:*"}}, format="json")
    assert response.status_code == 200
    assert Pool.objects.get(slug="whitepaper-readers").rule_changed_at is not None
    assert api.get("/api/v1/pools/nope/").status_code == 404


def test_dirty_evaluation_follows_api_writes_and_events(api, django_assert_max_num_queries):
    from leads.models import DirtyLead, PoolRun

    call_command("tick", "--now", "2026-11-23T10:00:00+08:00", stdout=io.StringIO())
    assert PoolRun.objects.filter(kind="full").exists()
    lead = api.post("/api/v1/leads/", {"name": "新线索", "industry": "零售"}, format="json").json()
    api.post(
        "/api/v1/events/", {"lead": {"wecom_external_userid": "wmNEW1"}, "type": "wecom_added"}, format="json"
    )
    assert DirtyLead.objects.count() == 2
    # The pools' statements plus about fifteen of scoring, which rescores the dirty leads first, and the
    # channels' steps (inbound callbacks, auto-tags, breaker state, awaiting touches, webhooks) and the
    # SLA's (follow-ups, deadlines, penalties, auto-assignment).
    with django_assert_max_num_queries(90):
        call_command("tick", "--now", "2026-11-23T10:01:00+08:00", stdout=io.StringIO())
    assert not DirtyLead.objects.exists()
    assert api.get(f"/api/v1/leads/{lead['id']}/").json()["pools"] == []
    wecom = api.get("/api/v1/leads/?wecom_external_userid=wmNEW1").json()["results"][0]
    assert wecom["pools"] == ["mil", "value-low"] and wecom["stage"] == "mil"

    api.patch(f"/api/v1/leads/{lead['id']}/", {"phone": "13800138000"}, format="json")
    api.post(f"/api/v1/leads/{wecom['id']}/tags/", {"add": ["need:私域运营"]}, format="json")
    call_command("tick", "--now", "2026-11-23T10:02:00+08:00", stdout=io.StringIO())
    assert api.get(f"/api/v1/leads/{lead['id']}/").json()["pools"] == ["mil", "value-medium"]
    assert api.get(f"/api/v1/leads/{wecom['id']}/").json()["pools"] == ["mil", "value-high"]
    incremental = PoolRun.objects.filter(kind="incremental", pool__slug="value-high").latest("started_at")
    assert (incremental.evaluated, incremental.joined) == (2, 1)


@pytest.mark.parametrize(
    ("reason", "pool"),
    [
        ("时机未到", "value-high"),
        ("no_budget", "value-medium"),
        ("非决策人", "value-low"),
        ("别的原因", "value-high"),
    ],
)
def test_a_returned_lead_goes_to_the_value_pool_of_its_reason(api, reason, pool):
    lead = LeadFactory(stage="sql", industry="教育")
    lead_tags_change(lead=lead, add=["need:私域运营"], now=lead.created_at)
    response = api.post(
        f"/api/v1/leads/{lead.pk}/stage/", {"stage": "recycled", "reason": reason}, format="json"
    )
    assert response.status_code == 200
    call_command("tick", "--now", "2026-11-23T10:00:00+08:00", stdout=io.StringIO())
    body = api.get(f"/api/v1/leads/{lead.pk}/").json()
    assert body["stage"] == "recycled"
    assert pool in body["pools"]
