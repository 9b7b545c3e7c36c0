"""Upsert by identity in the contract's order, and merges when one payload names two leads."""

from decimal import Decimal

import pytest

from leads.models import Event, Lead, LeadMerge, LeadTag, StageChange
from leads.services import lead_merge, lead_stage_set, lead_tags_change
from tests.factories import EventFactory, LeadFactory

pytestmark = pytest.mark.django_db


def test_upsert_matches_external_id_first(api):
    a = LeadFactory(external_id="CRM-1", phone="+8613800000001")
    response = api.post(
        "/api/v1/leads/upsert/", {"external_id": "CRM-1", "company": "华东精密"}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["id"] == a.pk
    a.refresh_from_db()
    assert a.company == "华东精密"
    assert a.phone == "+8613800000001"  # absent identities are kept


def test_upsert_creates_when_nothing_matches(api):
    response = api.post(
        "/api/v1/leads/upsert/", {"wecom_external_userid": "wmABC", "name": "李娜"}, format="json"
    )
    assert response.status_code == 201
    assert Lead.objects.get(wecom_external_userid="wmABC").name == "李娜"


def test_upsert_without_identity_is_refused(api):
    response = api.post("/api/v1/leads/upsert/", {"name": "李娜"}, format="json")
    assert response.status_code == 400
    assert "identity" in str(response.json())


def test_payload_naming_two_leads_merges_them_into_the_older(api, django_user_model):
    older = LeadFactory(phone="+8613800000001", name="张伟", company="")
    newer = LeadFactory(
        phone=None, wecom_external_userid="wmNEW", name="", company="苏州恒立精密机械有限公司"
    )
    shared_tag_lead = [older, newer]
    for lead in shared_tag_lead:
        lead_tags_change(lead=lead, add=["need:私域运营"], now=lead.created_at)
    lead_tags_change(lead=newer, add=["need:私域运营", "topic:白皮书"], now=newer.created_at)
    EventFactory(lead=older, type="form_submitted")
    EventFactory.create_batch(2, lead=newer, type="content_viewed")
    lead_stage_set(lead=newer, stage="sql", reason="CRM qualified")

    newer_id = newer.pk
    response = api.post(
        "/api/v1/leads/upsert/",
        {"phone": "13800000001", "wecom_external_userid": "wmNEW", "title": "IT经理"},
        format="json",
    )
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == older.pk
    assert (
        body["name"] == "张伟" and body["company"] == "苏州恒立精密机械有限公司" and body["title"] == "IT经理"
    )
    assert body["wecom_external_userid"] == "wmNEW" and body["phone"] == "+8613800000001"
    assert body["stage"] == "sql"  # the further stage survives
    assert not Lead.objects.filter(pk=newer_id).exists()
    assert Event.objects.filter(lead=older).count() == 3
    counts = {lt.tag.name: lt.count for lt in LeadTag.objects.filter(lead=older).select_related("tag")}
    assert counts == {"need:私域运营": 3, "topic:白皮书": 1}
    assert StageChange.objects.filter(lead=older, to_stage="sql").exists()
    merge = LeadMerge.objects.get(merged_id=newer_id)
    assert merge.survivor_id == older.pk
    assert merge.identities == {"wecom_external_userid": "wmNEW"}
    assert "matched" in merge.why

    # The merged id still resolves to the survivor.
    resolved = api.get(f"/api/v1/leads/{newer_id}/")
    assert resolved.status_code == 200
    assert resolved.json()["id"] == older.pk


def test_merge_chains_keep_resolving(api):
    a, b, c = LeadFactory(), LeadFactory(), LeadFactory()
    c_id = c.pk
    lead_merge(survivor=b, merged=c, why="test")
    lead_merge(survivor=a, merged=b, why="test")
    assert api.get(f"/api/v1/leads/{c_id}/").json()["id"] == a.pk
    assert LeadMerge.objects.filter(survivor=a).count() == 2


def test_merge_into_itself_is_refused():
    lead = LeadFactory()
    with pytest.raises(ValueError):
        lead_merge(survivor=lead, merged=lead, why="test")


def test_merged_lead_events_reach_survivor_timeline(api):
    a = LeadFactory()
    b = LeadFactory()
    EventFactory(lead=b, type="webinar_attended", properties={"title": "制造业数字化直播"})
    lead_merge(survivor=a, merged=b, why="same person")
    items = api.get(f"/api/v1/leads/{a.pk}/timeline/").json()["results"]
    kinds = [(i["kind"], i["type"]) for i in items]
    assert ("event", "webinar_attended") in kinds
    assert ("merge", "merged") in kinds


def test_won_keeps_amount_and_reason_and_repeats_are_not_recorded_twice(api):
    lead = LeadFactory(stage="sql")
    payload = {"stage": "won", "reason": "签约年度版", "amount": "128000.00"}
    for _ in range(2):
        response = api.post(f"/api/v1/leads/{lead.pk}/stage/", payload, format="json")
        assert response.status_code == 200
        assert response.json()["stage"] == "won"
    change = StageChange.objects.get(lead=lead)
    assert (change.from_stage, change.to_stage, change.reason, change.amount) == (
        "sql",
        "won",
        "签约年度版",
        Decimal("128000.00"),
    )
    assert change.actor.startswith("apikey:")
    timeline = api.get(f"/api/v1/leads/{lead.pk}/timeline/").json()["results"]
    assert timeline[0]["kind"] == "stage_change" and timeline[0]["data"]["amount"] == "128000.00"


def test_stage_write_back_rejects_unknown_stage_and_negative_amount(api):
    lead = LeadFactory()
    response = api.post(f"/api/v1/leads/{lead.pk}/stage/", {"stage": "mql"}, format="json")
    assert response.status_code == 400 and "stage" in response.json()
    response = api.post(f"/api/v1/leads/{lead.pk}/stage/", {"stage": "won", "amount": -5}, format="json")
    assert response.status_code == 400 and "amount" in response.json()


def test_patch_edits_fields_and_refuses_a_taken_identity(api, django_user_model):
    sdr = django_user_model.objects.create_user("sdr1", password="x")
    lead = LeadFactory()
    other = LeadFactory(email="taken@example.com")
    response = api.patch(
        f"/api/v1/leads/{lead.pk}/",
        {"owner": "sdr1", "bant": {"budget": True, "need": True}, "properties": {"buying_plan": "Q3"}},
        format="json",
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert (
        body["owner"] == "sdr1"
        and body["bant"]["budget"]
        and body["bant"]["need"]
        and not body["bant"]["timeline"]
    )
    assert body["properties"]["buying_plan"] == "Q3"
    assert Lead.objects.get(pk=lead.pk).owner == sdr
    conflict = api.patch(f"/api/v1/leads/{lead.pk}/", {"email": "TAKEN@example.com"}, format="json")
    assert conflict.status_code == 409
    assert Lead.objects.get(pk=other.pk).email == "taken@example.com"
    unknown_owner = api.patch(f"/api/v1/leads/{lead.pk}/", {"owner": "nobody"}, format="json")
    assert unknown_owner.status_code == 400 and "owner" in unknown_owner.json()


def test_tags_endpoint_adds_with_groups_and_removes(api):
    lead = LeadFactory()
    response = api.post(f"/api/v1/leads/{lead.pk}/tags/", {"add": ["industry:制造", "VIP"]}, format="json")
    assert response.status_code == 200
    assert response.json()["tags"] == ["VIP", "industry:制造"]
    tag = LeadTag.objects.get(lead=lead, tag__name="industry:制造").tag
    assert (tag.group, tag.label) == ("industry", "制造")
    api.post(f"/api/v1/leads/{lead.pk}/tags/", {"add": ["industry:制造"]}, format="json")
    assert LeadTag.objects.get(lead=lead, tag__name="industry:制造").count == 2
    response = api.post(f"/api/v1/leads/{lead.pk}/tags/", {"remove": ["VIP"]}, format="json")
    assert response.json()["tags"] == ["industry:制造"]
