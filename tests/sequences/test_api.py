"""The sequence API (CONTRACT §3): sequences as JSON that round-trip, errors by field path, enrolling by
API and the tick sending, the touch list, scopes, touches on the lead timeline, and one run over HTTP."""

import io
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest
import time_machine
from django.core.management import call_command

from content.models import ContentAsset
from leads.auth import api_key_create
from leads.models import Pool
from leads.services import lead_merge
from sequences.models import Enrollment, Sequence, Touch
from sequences.services import sequence_enroll, sequence_save
from tests.factories import LeadFactory
from tests.sequences.recording import recording_calls, recording_texts

SH = ZoneInfo("Asia/Shanghai")
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("recording")]
READ_ONLY = {"id", "figures", "enrolled_active", "created_at", "updated_at"}


def tick(at: datetime) -> None:
    with time_machine.travel(at, tick=False):
        call_command("tick", "--now", at.isoformat(), stdout=io.StringIO())


@pytest.fixture
def asset():
    return ContentAsset.objects.create(
        slug="wp-acq", title="线上获客白皮书", form="whitepaper", awareness="problem_aware", funnel="tofu"
    )


def full_sequence(asset) -> dict:
    """Every field of a sequence and its steps, as a marketer would write the SOP."""
    Pool.objects.get_or_create(slug="value-high", defaults={"name": "高价值", "rule": {"field": "score"}})
    return {
        "name": "新线索 14 天培育",
        "goal": "MQL",
        "active": False,
        "status": "paused",
        "timezone": "Asia/Shanghai",
        "quiet_hours": {"start": "21:30", "end": "08:00"},
        "trigger": {"type": "pool_entered", "pool": "value-high"},
        "entry_rule": {"field": "industry", "op": "in", "value": ["制造", "教育"]},
        "exit_rule": {"event": "unsubscribed", "within_days": 30},
        "exit_stages": ["sql", "won", "lost"],
        "reentry": {"after_days": 90},
        "max_lateness_minutes": 720,
        "caps": {"sms": 1, "console": 2},
        "on_complete": {"hot": {"action": "assign_sdr"}, "cold": {"action": "tag", "tag": "value:low"}},
        "steps": [
            {"day": 0, "send_time": None, "channel": "console", "text": "您好 {{ lead.name }}"},
            {"day": 1, "channel": "console", "content": asset.pk, "text": "白皮书：{{ link }}"},
            {
                "day": 3,
                "send_time": "09:30",
                "channel": "sms",
                "content": "recommended",
                "condition": {"field": "industry", "op": "eq", "value": "制造"},
                "else_position": 4,
            },
            {
                "day": 5,
                "channel": "call",
                "mode": "task",
                "text": "回访",
                "wait_for": {"event": "content_viewed", "within_days": 3, "then": 4, "else": None},
            },
            {"day": 7, "send_time": "20:00", "channel": "wecom", "else_channel": "sms", "text": "再见"},
        ],
    }


def without_read_only(body: dict) -> dict:
    return {key: value for key, value in body.items() if key not in READ_ONLY}


def test_create_list_get_patch_and_round_trip(api, asset):
    response = api.post("/api/v1/sequences/", full_sequence(asset), format="json")
    assert response.status_code == 201, response.content
    created = response.json()
    steps = created["steps"]
    assert [s["position"] for s in steps] == [0, 1, 2, 3, 4]
    # Omitted send_time is 10:00, null stays null (at once on day 0).
    assert [s["send_time"] for s in steps] == [None, "10:00", "09:30", "10:00", "20:00"]
    assert [s["content"] for s in steps] == [None, asset.pk, "recommended", None, None]
    assert steps[3]["mode"] == "task" and steps[4]["else_channel"] == "sms"
    assert steps[2]["condition"] == {"field": "industry", "op": "eq", "value": "制造"}
    assert (created["active"], created["status"], created["enrolled_active"]) == (False, "paused", 0)
    assert created["reentry"] == {"after_days": 90} and created["caps"] == {"sms": 1, "console": 2}
    assert "figures" not in created

    listed = api.get("/api/v1/sequences/").json()
    assert listed["next"] is None and [s["id"] for s in listed["results"]] == [created["id"]]

    detail = api.get(f"/api/v1/sequences/{created['id']}/").json()
    assert detail["figures"]["enrolled"] == 0 and detail["figures"]["touches"] == []
    assert without_read_only(detail) == without_read_only(created)

    # SOP as code: what a GET gives, a POST elsewhere recreates.
    copy = api.post("/api/v1/sequences/", detail, format="json")
    assert copy.status_code == 201, copy.content
    assert copy.json()["id"] != created["id"]
    assert without_read_only(api.get(f"/api/v1/sequences/{copy.json()['id']}/").json()) == without_read_only(
        detail
    )

    # PATCH without steps keeps them; with steps replaces them.
    url = f"/api/v1/sequences/{created['id']}/"
    patched = api.patch(url, {"name": "改名", "quiet_hours": None}, format="json").json()
    assert patched["name"] == "改名" and patched["quiet_hours"] is None
    assert patched["steps"] == steps
    # Replaced, not merged: what the new step leaves out is gone from the step at its position.
    patched = api.patch(url, {"steps": [{"position": 2, "day": 4, "text": "唯一一步"}]}, format="json").json()
    assert patched["steps"] == [
        {
            "position": 2,
            "day": 4,
            "send_time": "10:00",
            "channel": "console",
            "mode": "auto",
            "text": "唯一一步",
            "content": None,
            "condition": None,
            "else_position": None,
            "wait_for": None,
            "else_channel": "",
        }
    ]
    assert Sequence.objects.get(pk=created["id"]).steps.count() == 1


def test_active_goes_through_the_status_service(api):
    sequence = sequence_save(
        data={"name": "S", "status": "active"}, steps=[{"day": 0, "send_time": "10:00"}, {"day": 2}]
    )
    lead = LeadFactory()
    sequence_enroll(sequence=sequence, lead_ids=[lead.pk])
    url = f"/api/v1/sequences/{sequence.pk}/"
    body = api.patch(url, {"active": False}, format="json").json()
    assert (body["active"], body["status"], body["enrolled_active"]) == (False, "paused", 1)
    assert Enrollment.objects.get(lead=lead).state == "paused"  # the service paused the enrollment
    body = api.patch(url, {"active": True}, format="json").json()
    assert (body["active"], body["status"]) == (True, "active")
    assert Enrollment.objects.get(lead=lead).state == "active"
    body = api.patch(url, {"status": "archived"}, format="json").json()
    assert (body["active"], body["status"], body["enrolled_active"]) == (False, "archived", 0)
    assert Enrollment.objects.get(lead=lead).end_reason == "archived"
    # Not active already: `active: false` leaves an archived sequence archived.
    assert api.patch(url, {"active": False}, format="json").json()["status"] == "archived"
    response = api.patch(url, {"active": True, "status": "paused"}, format="json")
    assert response.status_code == 400 and "active" in response.json()


GOOD_STEP = {"day": 0, "channel": "console"}


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"steps": [GOOD_STEP, GOOD_STEP, {"day": -1}]}, "steps[2].day"),
        ({"steps": [GOOD_STEP, {"day": 3661}]}, "steps[1].day"),
        ({"steps": [{"day": "soon"}]}, "steps[0].day"),
        ({"steps": [{"channel": "console"}]}, "steps[0].day"),
        ({"steps": [{"day": 0, "channel": "fax"}]}, "steps[0].channel"),
        ({"steps": [{"day": 0, "mode": "manual"}]}, "steps[0].mode"),
        ({"steps": [{"day": 0, "send_time": "9am"}]}, "steps[0].send_time"),
        ({"steps": [{"day": 0, "send_time": "24:00"}]}, "steps[0].send_time"),
        ({"steps": [{"day": 0, "send_time": 930}]}, "steps[0].send_time"),
        ({"steps": [{"day": 0, "text": "{% load static %}"}]}, "steps[0].text"),
        ({"steps": [{"day": 0, "text": ["a"]}]}, "steps[0].text"),
        ({"steps": [{"day": 0, "content": 987654}]}, "steps[0].content"),
        ({"steps": [{"day": 0, "content": "best"}]}, "steps[0].content"),
        ({"steps": [{"day": 0, "content": True}]}, "steps[0].content"),
        (
            {"steps": [{"day": 0, "condition": {"field": "nope", "op": "eq", "value": 1}}]},
            "steps[0].condition",
        ),
        ({"steps": [{"day": 0, "condition": "industry = 制造"}]}, "steps[0].condition"),
        ({"steps": [GOOD_STEP, {"day": 1, "else_position": 0}]}, "steps[1].else_position"),
        (
            {"steps": [{"day": 0, "wait_for": {"event": "x", "within_days": "a"}}]},
            "steps[0].wait_for.within_days",
        ),
        ({"steps": [{"day": 0, "wait_for": {"event": "x", "then": 7}}]}, "steps[0].wait_for.then"),
        ({"steps": [{"day": 0, "wait_for": []}]}, "steps[0].wait_for"),
        ({"steps": [{"day": 0, "position": 1}, {"day": 1, "position": 1}]}, "steps"),
        ({"steps": [{"day": 0, "position": -1}]}, "steps[0].position"),
        ({"steps": "day 0: hello"}, "steps"),
        ({"steps": [1]}, "steps[0]"),
        ({"steps": {"day": 0}}, "steps"),
        ({"trigger": {"type": "pool_entered", "pool": "no-such-pool"}}, "trigger.pool"),
        ({"trigger": {"type": "pool_entered", "pool": ["a"]}}, "trigger.pool"),
        ({"trigger": {"type": "teleport"}}, "trigger.type"),
        ({"trigger": {"type": "silent", "days": "x"}}, "trigger.days"),
        ({"trigger": {"type": "silent", "days": 10**30}}, "trigger.days"),
        ({"trigger": {"type": "event", "event": "x", "where": {"a b": 1}}}, "trigger.where"),
        ({"trigger": [{"type": "manual"}]}, "trigger"),
        ({"trigger": "manual"}, "trigger"),
        ({"trigger": {"type": "tag_added", "tag": "x\u0000"}}, "trigger"),
        ({"entry_rule": {"bogus": 1}}, "entry_rule"),
        ({"exit_rule": 5}, "exit_rule"),
        ({"exit_stages": "sql"}, "exit_stages"),
        ({"exit_stages": ["sql", "nowhere"]}, "exit_stages[1]"),
        ({"reentry": {"after_days": -1}}, "reentry"),
        ({"reentry": {"after_days": 10**20}}, "reentry"),
        ({"reentry": "sometimes"}, "reentry"),
        ({"timezone": "Asia"}, "timezone"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"timezone": 8}, "timezone"),
        ({"quiet_hours": {"start": "25:00", "end": "08:00"}}, "quiet_hours.start"),
        ({"quiet_hours": "21-8"}, "quiet_hours"),
        ({"caps": {"sms": 0}}, "caps.sms"),
        ({"caps": {"fax": 1}}, "caps.fax"),
        ({"caps": ["sms"]}, "caps"),
        ({"max_lateness_minutes": 0}, "max_lateness_minutes"),
        ({"max_lateness_minutes": 10**12}, "max_lateness_minutes"),
        ({"on_complete": {"warm": {"action": "enroll", "sequence": "next"}}}, "on_complete.warm.sequence"),
        ({"on_complete": {"lukewarm": {"action": "assign_sdr"}}}, "on_complete.lukewarm"),
        ({"on_complete": {"hot": "assign_sdr"}}, "on_complete.hot.action"),
        ({"on_complete": []}, "on_complete"),
        ({"name": ""}, "name"),
        ({"name": "a\u0000b"}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"active": "perhaps"}, "active"),
        ({"status": "running"}, "status"),
        ({"active": True, "status": "paused"}, "active"),
    ],
)
def test_bad_input_is_a_400_naming_the_field_path(api, change, path):
    response = api.post("/api/v1/sequences/", {"name": "测试", **change}, format="json")
    assert response.status_code == 400, response.content
    assert path in response.json(), response.json()
    assert isinstance(response.json()[path], list)
    assert not Sequence.objects.exists()


def test_bad_bodies_and_bad_patches_are_400s_that_change_nothing(api):
    assert api.post("/api/v1/sequences/", [], format="json").status_code == 400
    assert "name" in api.post("/api/v1/sequences/", {}, format="json").json()
    response = api.post("/api/v1/sequences/", "[1", content_type="application/json")
    assert response.status_code == 400
    sequence = sequence_save(data={"name": "S"}, steps=[{"day": 0}, {"day": 2}])
    url = f"/api/v1/sequences/{sequence.pk}/"
    response = api.patch(
        url, {"name": "新", "steps": [{"day": 1}, {"day": 0, "channel": "fax"}]}, format="json"
    )
    assert response.status_code == 400 and list(response.json()) == ["steps[1].channel"]
    response = api.patch(url, {"trigger": {"type": "tag_added"}}, format="json")
    assert response.json() == {"trigger.tag": ["required"]}
    for body in ([], "x", {"steps": [{"day": 0}] * 201}):
        assert api.patch(url, body, format="json").status_code == 400, body
    assert api.patch(url, "null", content_type="application/json").status_code == 400
    sequence.refresh_from_db()
    assert sequence.name == "S" and [s.day for s in sequence.steps.order_by("position")] == [0, 2]
    assert api.get("/api/v1/sequences/999999/").status_code == 404
    assert api.patch("/api/v1/sequences/999999/", {"name": "x"}, format="json").status_code == 404


def test_enroll_by_api_then_the_tick_sends(api):
    body = {
        "name": "欢迎",
        "active": True,
        "quiet_hours": None,
        "steps": [
            {"day": 0, "send_time": None, "text": "您好 {{ lead.name }}"},
            {"day": 1, "send_time": "10:00", "text": "第二天"},
        ],
    }
    sequence = api.post("/api/v1/sequences/", body, format="json").json()
    lead, blocked, older, merged = (
        LeadFactory(name="王芳"),
        LeadFactory(do_not_contact=True),
        LeadFactory(name="李雷"),
        LeadFactory(),
    )
    merged_id = merged.pk
    lead_merge(survivor=older, merged=merged, why="same phone")
    anchor = datetime(2026, 12, 1, 15, 0, tzinfo=SH)
    url = f"/api/v1/sequences/{sequence['id']}/enroll/"
    with time_machine.travel(anchor, tick=False):
        response = api.post(
            url,
            {
                "lead_ids": [lead.pk, blocked.pk, merged_id, 99_999_999, lead.pk],
                "anchor_at": anchor.isoformat(),
            },
            format="json",
        )
    assert response.status_code == 200, response.content
    assert response.json() == {
        "enrolled": sorted([lead.pk, older.pk]),
        "refused": [blocked.pk, 99_999_999],
        "merged": {str(merged_id): older.pk},
    }
    # Already in: refused the second time.
    with time_machine.travel(anchor, tick=False):
        assert api.post(url, {"lead_ids": [lead.pk]}, format="json").json()["refused"] == [lead.pk]

    tick(anchor)
    touches = Touch.objects.filter(lead=lead, state="sent")
    assert [t.step.day for t in touches] == [0]
    assert recording_texts()[touches[0].idempotency_key] == "您好 王芳"
    tick(datetime(2026, 12, 2, 10, 0, tzinfo=SH))
    assert sorted(recording_calls().values()) == [1, 1, 1, 1]
    listed = api.get("/api/v1/touches/", {"lead": lead.pk}).json()["results"]
    assert [(t["step"], t["state"], t["channel"]) for t in listed] == [
        (1, "sent", "console"),
        (0, "sent", "console"),
    ]
    assert listed[-1]["scheduled_for"] == anchor.isoformat() and listed[-1]["sent_at"] == anchor.isoformat()
    assert api.get(f"/api/v1/sequences/{sequence['id']}/").json()["figures"]["touches"] == [
        {"channel": "console", "state": "sent", "n": 4}
    ]


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"lead_ids": []}, "lead_ids"),
        ({}, "lead_ids"),
        ({"lead_ids": "1,2"}, "lead_ids"),
        ({"lead_ids": [1, "two"]}, "lead_ids[1]"),
        ({"lead_ids": [1.5]}, "lead_ids[0]"),
        ({"lead_ids": [True]}, "lead_ids[0]"),
        ({"lead_ids": [0]}, "lead_ids[0]"),
        ({"lead_ids": [2**64]}, "lead_ids[0]"),
        ({"lead_ids": list(range(1, 10_002))}, "lead_ids"),
        ({"lead_ids": [1], "anchor_at": "tomorrow"}, "anchor_at"),
        ({"lead_ids": [1], "anchor_at": "9999-12-31T23:59:59+00:00"}, "anchor_at"),
        ({"lead_ids": [1], "anchor_at": "0001-01-01T00:00:00+14:00"}, "anchor_at"),
    ],
)
def test_enroll_refuses_bad_input(api, body, path):
    sequence = sequence_save(data={"name": "S"}, steps=[{"day": 0}])
    response = api.post(f"/api/v1/sequences/{sequence.pk}/enroll/", body, format="json")
    assert response.status_code == 400, response.content
    assert path in response.json(), response.json()
    assert not Enrollment.objects.exists()


def test_enroll_takes_ten_thousand_ids_and_not_an_archived_sequence(api):
    sequence = sequence_save(data={"name": "S"}, steps=[{"day": 0}])
    leads = [LeadFactory() for _ in range(3)]
    ids = [lead.pk for lead in leads] + list(range(10**9, 10**9 + 9_997))
    body = api.post(f"/api/v1/sequences/{sequence.pk}/enroll/", {"lead_ids": ids}, format="json").json()
    assert body["enrolled"] == ids[:3] and len(body["refused"]) == 9_997
    sequence_save(data={"status": "archived"}, sequence=sequence)
    response = api.post(f"/api/v1/sequences/{sequence.pk}/enroll/", {"lead_ids": ids[:1]}, format="json")
    assert response.status_code == 400 and "sequence" in response.json()


def test_touches_list_filters_and_pages_in_bounded_queries(api, django_assert_max_num_queries):
    first = sequence_save(
        data={"name": "A", "status": "active", "quiet_hours": None},
        steps=[{"day": 0, "send_time": None}, {"day": 0, "send_time": None, "channel": "wecom_moment"}],
    )
    second = sequence_save(
        data={"name": "B", "status": "active", "quiet_hours": None, "caps": {"console": 5}},
        steps=[{"day": 0, "send_time": None}],
    )
    leads = [LeadFactory() for _ in range(40)]
    anchor = datetime(2026, 12, 1, 15, 0, tzinfo=SH)
    sequence_enroll(sequence=first, lead_ids=[lead.pk for lead in leads], anchor_at=anchor, now=anchor)
    sequence_enroll(sequence=second, lead_ids=[lead.pk for lead in leads[:10]], anchor_at=anchor, now=anchor)
    tick(anchor)
    tick(anchor + timedelta(minutes=1))
    assert Touch.objects.count() == 90

    seen = []
    url = "/api/v1/touches/?page_size=25"
    with django_assert_max_num_queries(4):
        page = api.get(url).json()
    while True:
        seen += [t["id"] for t in page["results"]]
        if not page["next"]:
            break
        with django_assert_max_num_queries(4):
            page = api.get(page["next"]).json()
    assert seen == sorted(Touch.objects.values_list("pk", flat=True), reverse=True)

    def ids(**params):
        return sorted(
            t["id"] for t in api.get("/api/v1/touches/", {"page_size": 500, **params}).json()["results"]
        )

    assert len(ids(sequence=second.pk)) == 10
    skipped = api.get("/api/v1/touches/", {"state": "skipped", "sequence": first.pk}).json()["results"]
    assert len(skipped) == 40 and {(t["channel"], t["skip_reason"]) for t in skipped} == {
        ("wecom_moment", "not_configured")
    }
    assert len(ids(lead=leads[0].pk)) == 3 and len(ids(lead=leads[0].pk, state="sent")) == 2
    assert ids(lead=10**15) == [] and len(ids(channel="console")) == 50
    for bad in (
        {"lead": "x"},
        {"sequence": "1.5"},
        {"state": "lost"},
        {"lead": str(2**64)},
        {"cursor": "??"},
    ):
        assert api.get("/api/v1/touches/", bad).status_code == 400, bad


def test_scopes(make_client, client):
    sequence = sequence_save(data={"name": "S"}, steps=[{"day": 0}])
    lead = LeadFactory()
    reads = ["/api/v1/sequences/", f"/api/v1/sequences/{sequence.pk}/", "/api/v1/touches/"]
    writes = [
        ("post", "/api/v1/sequences/", {"name": "新"}),
        ("patch", f"/api/v1/sequences/{sequence.pk}/", {"name": "改"}),
        ("post", f"/api/v1/sequences/{sequence.pk}/enroll/", {"lead_ids": [lead.pk]}),
    ]
    reader, writer = make_client(["read"]), make_client(["write"])
    for url in reads:
        assert client.get(url).status_code == 401
        assert reader.get(url).status_code == 200
        assert writer.get(url).status_code == 403
    for method, url, body in writes:
        assert getattr(client, method)(url, body, content_type="application/json").status_code == 401
        assert getattr(reader, method)(url, body, format="json").status_code == 403
        assert getattr(writer, method)(url, body, format="json").status_code in (200, 201)
    assert client.get(reads[0], HTTP_AUTHORIZATION="Token nk_wrong").status_code == 401
    assert Sequence.objects.get(pk=sequence.pk).name == "改" and Enrollment.objects.count() == 1


def test_the_timeline_shows_touches_newest_first(api, admin_client):
    sequence = sequence_save(
        data={"name": "培育序列", "status": "active", "quiet_hours": None},
        steps=[
            {"day": 0, "send_time": None, "text": "你好 {{ lead.name }}"},
            {"day": 2, "send_time": "10:00", "channel": "wecom_moment"},
            {"day": 3, "send_time": "10:00"},
        ],
    )
    lead = LeadFactory(name="张伟")
    anchor = datetime(2026, 12, 1, 15, 0, tzinfo=SH)
    sequence_enroll(sequence=sequence, lead_ids=[lead.pk], anchor_at=anchor, now=anchor)
    tick(anchor)
    tick(datetime(2026, 12, 3, 10, 0, tzinfo=SH))  # day 2: skipped, the channel has no settings
    tick(datetime(2026, 12, 4, 10, 0, tzinfo=SH))

    items = api.get(f"/api/v1/leads/{lead.pk}/timeline/").json()["results"]
    touches = [item for item in items if item["kind"] == "touch"]
    assert [(t["data"]["day"], t["data"]["state"]) for t in touches] == [
        (3, "sent"),
        (2, "skipped"),
        (0, "sent"),
    ]
    sent = touches[-1]
    assert sent["type"] == "touch" and datetime.fromisoformat(sent["at"]) == anchor
    assert sent["data"]["text"] == "你好 张伟" and sent["data"]["sequence_name"] == "培育序列"
    assert sent["data"]["channel"] == "console" and sent["data"]["step"] == 0
    assert touches[1]["data"]["skip_reason"] == "not_configured" and "not_configured" in touches[1]["summary"]
    assert datetime.fromisoformat(touches[0]["at"]) == datetime(2026, 12, 4, 10, 0, tzinfo=SH)
    stamps = [datetime.fromisoformat(item["at"]) for item in items]
    assert stamps == sorted(stamps, reverse=True)

    before = datetime(2026, 12, 3, 12, 0, tzinfo=SH).isoformat()
    older = api.get(f"/api/v1/leads/{lead.pk}/timeline/", {"before": before, "limit": 1}).json()["results"]
    assert [(item["kind"], item["data"]["day"]) for item in older] == [("touch", 2)]

    page = admin_client.get(f"/admin/leads/lead/{lead.pk}/change/")
    assert page.status_code == 200
    assert "培育序列 · day 0 · console · sent" in page.content.decode()


@pytest.mark.django_db(transaction=True)
def test_over_http_post_enroll_tick_and_list_touches(live_server):
    _, key = api_key_create(name="http", scopes=["read", "write"])
    headers = {"Authorization": f"Token {key}"}
    lead = LeadFactory(name="赵敏")
    with httpx.Client(base_url=f"{live_server.url}/api/v1", headers=headers, timeout=30) as http:
        response = http.post(
            "/sequences/",
            json={
                "name": "HTTP 序列",
                "active": True,
                "steps": [{"day": 0, "send_time": None, "text": "hi"}],
            },
        )
        assert response.status_code == 201, response.text
        sequence = response.json()
        at = datetime(2026, 12, 1, 15, 0, tzinfo=SH)
        with time_machine.travel(at, tick=False):  # the server's clock too: one process
            response = http.post(f"/sequences/{sequence['id']}/enroll/", json={"lead_ids": [lead.pk]})
        assert response.json()["enrolled"] == [lead.pk]
        tick(at)
        touches = http.get("/touches/", params={"sequence": sequence["id"]}).json()
        assert [(t["lead"], t["step"], t["state"]) for t in touches["results"]] == [(lead.pk, 0, "sent")]
        assert touches["next"] is None
        assert http.get("/touches/").status_code == 200
        assert http.get("/touches/", headers={"Authorization": "Token nope"}).status_code == 401
    assert list(recording_calls().values()) == [1]
