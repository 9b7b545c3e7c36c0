"""The webhook subscription and call task API (CONTRACT §3): validation naming the field, the secret
never returned, scopes, cursor pagination; logging a call's outcome."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.utils.timezone import now as timezone_now

from channels.models import CallTask, WebhookSubscription
from leads.models import Event
from nurture.outbox import outbox_put
from tests.factories import LeadFactory, UserFactory

SECRET = "a-long-enough-secret-1234"


def subscribe(api, **fields):
    body = {
        "url": "https://crm.example.com/hooks/nurture",
        "events": ["lead.mql", "lead.sql"],
        "secret": SECRET,
    }
    return api.post("/api/v1/webhooks/", {**body, **fields}, format="json")


@pytest.mark.django_db
def test_create_list_read_edit_delete_and_the_secret_is_never_returned(api):
    created = subscribe(api)
    assert created.status_code == 201, created.json()
    body = created.json()
    assert body["url"] == "https://crm.example.com/hooks/nurture"
    assert body["events"] == ["lead.mql", "lead.sql"] and body["active"] is True
    assert "secret" not in body and SECRET not in created.content.decode()
    pk = body["id"]
    assert WebhookSubscription.objects.get(pk=pk).secret == SECRET

    listed = api.get("/api/v1/webhooks/")
    assert listed.status_code == 200 and [s["id"] for s in listed.json()["results"]] == [pk]
    assert SECRET not in listed.content.decode()
    one = api.get(f"/api/v1/webhooks/{pk}/")
    assert one.status_code == 200 and "secret" not in one.json()

    changed = api.patch(f"/api/v1/webhooks/{pk}/", {"events": ["lead.hot"], "active": False}, format="json")
    assert changed.status_code == 200 and changed.json()["events"] == ["lead.hot"]
    assert changed.json()["active"] is False and "secret" not in changed.json()
    rotated = api.patch(f"/api/v1/webhooks/{pk}/", {"secret": "the-rotated-secret-5678"}, format="json")
    assert rotated.status_code == 200 and "secret" not in rotated.json()
    assert WebhookSubscription.objects.get(pk=pk).secret == "the-rotated-secret-5678"

    assert api.delete(f"/api/v1/webhooks/{pk}/").status_code == 204
    assert api.get(f"/api/v1/webhooks/{pk}/").status_code == 404


@pytest.mark.django_db
def test_a_new_subscription_starts_after_the_newest_outbox_message(api):
    outbox_put(type="lead.mql", lead_ids=[LeadFactory().pk], occurred_at=timezone_now())
    pk = subscribe(api).json()["id"]
    from nurture.models import OutboxMessage

    assert WebhookSubscription.objects.get(pk=pk).outbox_cursor == OutboxMessage.objects.get().pk


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("fields", "bad"),
    [
        ({"events": ["lead.unknown"]}, "events"),
        ({"events": []}, "events"),
        ({"events": "lead.mql"}, "events"),
        ({"events": [1]}, "events"),
        ({"url": "not a url"}, "url"),
        ({"url": "ftp://crm.example.com/x"}, "url"),
        ({"secret": "short"}, "secret"),
        ({"secret": None}, "secret"),
        ({"active": "perhaps"}, "active"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(api, fields, bad):
    answer = subscribe(api, **fields)
    assert answer.status_code == 400
    assert bad in answer.json(), answer.json()
    assert not WebhookSubscription.objects.exists()


@pytest.mark.django_db
def test_a_missing_secret_or_events_are_named(api):
    answer = api.post("/api/v1/webhooks/", {"url": "https://crm.example.com/h"}, format="json")
    assert answer.status_code == 400 and {"events", "secret"} <= set(answer.json())


@pytest.mark.django_db
def test_reads_need_read_and_changes_need_write(make_client, client):
    reader = make_client(scopes=("read",))
    assert reader.get("/api/v1/webhooks/").status_code == 200
    assert subscribe(reader).status_code == 403
    assert client.get("/api/v1/webhooks/").status_code == 401
    writer = make_client(scopes=("write",))
    assert subscribe(writer).status_code == 201


@pytest.mark.django_db
def test_the_list_is_cursor_paginated(api):
    for n in range(3):
        subscribe(api, url=f"https://crm.example.com/h{n}")
    first = api.get("/api/v1/webhooks/?page_size=2").json()
    assert len(first["results"]) == 2 and first["next"]
    second = api.get(first["next"]).json()
    assert len(second["results"]) == 1 and second["next"] is None


# --- Call tasks.


def open_task(lead=None, assignee=None, due=None) -> CallTask:
    return CallTask.objects.create(
        lead=lead or LeadFactory(), assignee=assignee, script="问预算", due_at=due or timezone_now()
    )


@pytest.mark.django_db
def test_call_tasks_are_listed_by_assignee_and_state(api):
    sdr = UserFactory(username="sdr_zhang")
    mine = open_task(assignee=sdr)
    other = open_task()
    done = open_task(assignee=sdr)
    CallTask.objects.filter(pk=done.pk).update(state="done")
    by_name = api.get("/api/v1/call-tasks/?assignee=sdr_zhang&state=open").json()["results"]
    assert [t["id"] for t in by_name] == [mine.pk]
    assert by_name[0]["assignee"] == "sdr_zhang" and by_name[0]["script"] == "问预算"
    by_id = api.get(f"/api/v1/call-tasks/?assignee={sdr.pk}").json()["results"]
    assert {t["id"] for t in by_id} == {mine.pk, done.pk}
    unassigned = api.get("/api/v1/call-tasks/?assignee=none").json()["results"]
    assert [t["id"] for t in unassigned] == [other.pk]
    assert api.get("/api/v1/call-tasks/?state=maybe").status_code == 400


@pytest.mark.django_db
def test_logging_a_call_records_call_logged_and_closes_the_task(api):
    task = open_task()
    answer = api.post(
        f"/api/v1/call-tasks/{task.pk}/log/",
        {"outcome": "connected", "notes": "有预算，下月采购"},
        format="json",
    )
    assert answer.status_code == 200, answer.json()
    assert answer.json()["state"] == "done" and answer.json()["outcome"] == "connected"
    event = Event.objects.get(lead=task.lead, type="call_logged")
    assert event.properties["outcome"] == "connected" and event.properties["notes"] == "有预算，下月采购"
    assert event.properties["by"].startswith("apikey:")
    again = api.post(f"/api/v1/call-tasks/{task.pk}/log/", {"outcome": "no_answer"}, format="json")
    assert again.status_code == 409
    assert Event.objects.filter(type="call_logged").count() == 1


@pytest.mark.django_db
def test_a_call_back_needs_a_time_and_opens_the_next_task(api):
    task = open_task()
    missing = api.post(f"/api/v1/call-tasks/{task.pk}/log/", {"outcome": "call_back"}, format="json")
    assert missing.status_code == 400 and "call_back_at" in missing.json()
    when = datetime(2027, 6, 1, 2, 0, tzinfo=UTC)
    answer = api.post(
        f"/api/v1/call-tasks/{task.pk}/log/",
        {"outcome": "call_back", "call_back_at": when.isoformat()},
        format="json",
    )
    assert answer.status_code == 200
    follow = CallTask.objects.get(state="open")
    assert follow.lead_id == task.lead_id and follow.due_at == when and follow.script == "问预算"
    assert (
        api.post("/api/v1/call-tasks/999999/log/", {"outcome": "connected"}, format="json").status_code == 404
    )
    assert (
        api.post(f"/api/v1/call-tasks/{task.pk}/log/", {"outcome": "maybe"}, format="json").status_code == 400
    )
    assert timedelta(0) <= timezone_now() - CallTask.objects.get(pk=task.pk).done_at < timedelta(minutes=1)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/hook",
        "http://localhost/hook",
        "http://10.1.2.3/hook",
        "http://192.168.1.20/hook",
        "http://169.254.169.254/latest/meta-data/",  # a cloud's metadata service
        "http://[::1]/hook",
    ],
)
def test_a_subscription_may_not_point_into_the_servers_own_network(api, settings, url):
    settings.NURTURE_WEBHOOK_ALLOW_PRIVATE = False
    response = subscribe(api, url=url)
    assert response.status_code == 400 and "url" in response.json(), response.content
    assert not WebhookSubscription.objects.exists()


@pytest.mark.django_db(transaction=True)  # the fan-out waits for older open transactions, as the test's
def test_a_host_that_resolves_into_the_private_network_gets_nothing_at_delivery(settings):
    import ipaddress
    import socket

    from channels.models import WebhookDelivery
    from channels.webhooks import webhook_subscription_create, webhooks_tick
    from tests.fakeserver import FakeProvider

    host = socket.gethostname()  # this machine's own name: it resolves to a loopback or private address
    try:
        address = ipaddress.ip_address(socket.getaddrinfo(host, None)[0][4][0])
    except OSError:
        pytest.skip("this machine's name does not resolve")
    assert not address.is_global
    with FakeProvider() as fake:
        fake.route("POST", "/hook", lambda request: (200, {}))
        port = fake.url.rsplit(":", 1)[1]
        # Saved while allowed (or a public name whose DNS later points inside): refused when it is used.
        subscription = webhook_subscription_create(
            url=f"http://{host}:{port}/hook", events=["lead.mql"], secret="s" * 32
        )
        settings.NURTURE_WEBHOOK_ALLOW_PRIVATE = False
        lead = LeadFactory()
        now = timezone_now()
        outbox_put(type="lead.mql", lead_ids=[lead.pk], occurred_at=now)
        later = now + timedelta(seconds=5)  # past the fan-out's margin for late commits
        with time_machine.travel(later, tick=False):
            webhooks_tick(later)
        delivery = WebhookDelivery.objects.get(subscription=subscription)
        assert delivery.state == "pending" and "not a public address" in delivery.last_error
        assert fake.calls("/hook") == []
