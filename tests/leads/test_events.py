"""Events: idempotent by event_id, unknown identities create the lead, bad items don't block good ones."""

from datetime import timedelta

import pytest
from django.db import connection
from django.utils.timezone import now as timezone_now

from leads.models import Event, Lead
from leads.services import lead_merge
from tests.factories import LeadFactory

pytestmark = pytest.mark.django_db


def test_single_event_is_stored_once_per_event_id(api):
    lead = LeadFactory()
    payload = {
        "event_id": "crm-evt-1",
        "lead": lead.pk,
        "type": "content_viewed",
        "occurred_at": "2026-11-20T10:00:00+08:00",
        "properties": {"asset": "线上获客白皮书", "form": "whitepaper"},
    }
    first = api.post("/api/v1/events/", payload, format="json")
    again = api.post("/api/v1/events/", payload, format="json")
    assert first.status_code == 201 and first.json()["status"] == "created"
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    event = Event.objects.get()
    assert event.properties["asset"] == "线上获客白皮书"
    assert event.occurred_at.isoformat() == "2026-11-20T02:00:00+00:00"
    lead.refresh_from_db()
    assert lead.last_inbound_at == event.occurred_at


def test_event_for_an_unknown_identity_creates_the_lead(api):
    response = api.post(
        "/api/v1/events/",
        {
            "lead": {"phone": "138 0013 8000", "name": "赵磊"},
            "type": "webinar_registered",
            "source": "直播报名",
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    lead = Lead.objects.get(phone="+8613800138000")
    assert lead.name == "赵磊" and lead.source == "直播报名"
    assert Event.objects.get().lead == lead
    # The same identity again is the same lead.
    api.post("/api/v1/events/", {"lead": {"phone": "13800138000"}, "type": "message_in"}, format="json")
    assert Lead.objects.count() == 1 and Event.objects.count() == 2


def test_batch_of_events_with_duplicates_and_errors(api):
    lead = LeadFactory()
    merged = LeadFactory()
    merged_id = merged.pk
    lead_merge(survivor=lead, merged=merged, why="test")
    Event.objects.create(lead=lead, type="registered", occurred_at=timezone_now(), event_id="old-1")
    batch = [
        {"event_id": "b-1", "lead": lead.pk, "type": "email_opened"},
        {"event_id": "b-1", "lead": lead.pk, "type": "email_opened"},
        {"event_id": "old-1", "lead": lead.pk, "type": "registered"},
        {"event_id": "b-2", "lead": 999999999, "type": "email_opened"},
        {"event_id": "b-3", "lead": lead.pk, "type": "bad type with spaces"},
        {"event_id": "b-4", "lead": merged_id, "type": "link_clicked"},
        {"event_id": "b-5", "lead": {"email": "not-an-email"}, "type": "registered"},
        {"lead": {"wecom_external_userid": "wmXYZ"}, "type": "wecom_added"},
        {"event_id": "b-6", "lead": lead.pk, "type": "trial_started", "properties": ["not", "an", "object"]},
    ]
    response = api.post("/api/v1/events/", batch, format="json")
    assert response.status_code == 200
    body = response.json()
    assert [r["status"] for r in body["results"]] == [
        "created",
        "duplicate",
        "duplicate",
        "error",
        "error",
        "created",
        "error",
        "created",
        "error",
    ]
    assert body["results"][3]["errors"] == {"lead": ["no such lead"]}
    assert "type" in body["results"][4]["errors"]
    assert body["results"][5]["lead"] == lead.pk  # a merged id resolves to the survivor
    assert "properties" in body["results"][8]["errors"]
    assert (body["created"], body["duplicates"], body["errors"]) == (3, 2, 4)
    assert Event.objects.filter(event_id="b-1").count() == 1
    assert Lead.objects.filter(wecom_external_userid="wmXYZ").exists()
    # Replaying the whole batch stores nothing new.
    before = Event.objects.count()
    again = api.post("/api/v1/events/", batch, format="json").json()
    assert Event.objects.count() == before + 1  # only the event without an event_id is new
    assert again["created"] == 1


def test_single_bad_event_is_a_400_with_fields(api):
    response = api.post("/api/v1/events/", {"lead": "x", "type": ""}, format="json")
    assert response.status_code == 400
    assert {"lead", "type"} <= set(response.json())


def test_unsubscribed_sets_do_not_contact_and_outbound_does_not_count_as_inbound(api):
    lead = LeadFactory()
    at = timezone_now() - timedelta(days=3)
    api.post(
        "/api/v1/events/",
        [
            {"lead": lead.pk, "type": "message_out", "occurred_at": at.isoformat()},
            {"lead": lead.pk, "type": "unsubscribed", "occurred_at": at.isoformat()},
        ],
        format="json",
    )
    lead.refresh_from_db()
    assert lead.do_not_contact is True
    assert lead.last_inbound_at is None
    assert lead.last_event_at == at


def test_thousand_events_in_bounded_queries(api, django_assert_max_num_queries):
    leads = LeadFactory.create_batch(20)
    batch = [
        {"event_id": f"q-{n}", "lead": leads[n % 20].pk, "type": "content_viewed", "properties": {"n": n}}
        for n in range(900)
    ] + [
        {"event_id": f"q-new-{n}", "lead": {"phone": f"137{n:08d}"}, "type": "registered"} for n in range(100)
    ]
    with django_assert_max_num_queries(25 if connection.vendor == "postgresql" else 80):
        body = api.post("/api/v1/events/", batch, format="json").json()
    assert body["created"] == 1000
    assert Lead.objects.count() == 120


def test_an_event_names_the_source_of_a_lead_it_creates_but_does_not_overwrite_a_known_one(api):
    known = LeadFactory(phone="+8613600000000", source="官网表单")
    api.post(
        "/api/v1/events/",
        [
            {"lead": {"phone": "13600000000"}, "type": "message_in", "source": "企微"},
            {"lead": {"phone": "13600000001"}, "type": "message_in", "source": "企微"},
        ],
        format="json",
    )
    known.refresh_from_db()
    assert known.source == "官网表单"
    assert Lead.objects.get(phone="+8613600000001").source == "企微"
