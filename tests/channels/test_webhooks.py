"""Outbound webhooks: the outbox delivered to subscriptions over real HTTP to a receiver that checks the
signature, filtered by type, retried with backoff until success or 24 hours, retried now by hand, handed
out again after a dead worker's lease, never twice at once, and fanned out in bounded statements."""

from __future__ import annotations

import hashlib
import hmac
import io
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.conf import settings
from django.core.management import call_command
from django.db import connection, connections, transaction

from channels.models import WebhookDelivery, WebhookSubscription
from channels.webhook_tasks import webhooks_send_task
from channels.webhooks import (
    webhook_subscription_create,
    webhooks_claim,
    webhooks_deliver,
    webhooks_fanout,
    webhooks_retry_now,
    webhooks_tick,
)
from nurture.models import OutboxMessage
from nurture.outbox import outbox_put
from tests.factories import LeadFactory
from tests.fakeserver import FakeProvider

T0 = datetime(2027, 5, 10, 2, 0, tzinfo=UTC)
SECRET = "s3cret-of-the-crm-0123456789"
OTHER_SECRET = "another-receivers-secret-xyz"


def needs_pg():
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: separate connections write and deliver at once")


class Receiver:
    """A CRM's endpoint: answers 401 unless the signature is the HMAC of the raw body with its secret,
    else what `answers` says next (default 200)."""

    def __init__(self, fake: FakeProvider, path: str, secret: str) -> None:
        self.fake, self.path, self.secret = fake, path, secret
        self.answers: list[int] = []
        self.verified: list[dict] = []
        self.delay = 0.0
        fake.route("POST", path, self._answer)

    @property
    def url(self) -> str:
        return self.fake.url + self.path

    def _answer(self, request) -> tuple:
        if self.delay:
            time.sleep(self.delay)
        expected = "sha256=" + hmac.new(self.secret.encode(), request.body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(request.headers.get("x-nurture-signature", ""), expected):
            return 401, {"error": "bad signature"}
        self.verified.append(request.json)
        status = self.answers.pop(0) if self.answers else 200
        return status, {"ok": status < 300}

    @property
    def posts(self) -> list:
        return self.fake.calls(self.path)


@pytest.fixture
def fake():
    with FakeProvider() as provider:
        yield provider


def tick_at(when: datetime) -> dict:
    with time_machine.travel(when, tick=False):
        return webhooks_tick(when)


@pytest.mark.django_db
def test_each_subscription_gets_its_types_signed_and_the_receiver_verifies_them(fake):
    crm = Receiver(fake, "/crm", SECRET)
    bi = Receiver(fake, "/bi", OTHER_SECRET)
    lead = LeadFactory()
    with time_machine.travel(T0, tick=False):
        webhook_subscription_create(url=crm.url, events=["lead.mql", "lead.hot"], secret=SECRET)
        webhook_subscription_create(url=bi.url, events=["lead.sql"], secret=OTHER_SECRET)
        outbox_put(type="lead.mql", lead_ids=[lead.pk], occurred_at=T0, data={"stage": "mql"})
        outbox_put(type="lead.sql", lead_ids=[lead.pk], occurred_at=T0, data={"stage": "sql"})
        outbox_put(type="lead.hot", lead_ids=[lead.pk], occurred_at=T0, data={"score": 88})
        outbox_put(type="pool.joined", lead_ids=[lead.pk], occurred_at=T0, data={"pool": "mql"})

    report = tick_at(T0 + timedelta(seconds=10))

    assert report.get("fanned_out") == 3 and report.get("delivered") == 3, report
    assert len(crm.posts) == 2 and len(bi.posts) == 1  # every POST passed the signature check
    assert sorted(p["type"] for p in crm.verified) == ["lead.hot", "lead.mql"]
    assert [p["type"] for p in bi.verified] == ["lead.sql"]
    mql = next(p for p in crm.verified if p["type"] == "lead.mql")
    message = OutboxMessage.objects.get(type="lead.mql")
    assert mql == {
        "id": message.pk,
        "type": "lead.mql",
        "occurred_at": T0.isoformat(),
        "data": {"lead": lead.pk, "stage": "mql"},
    }
    post = next(p for p in crm.posts if p.json["type"] == "lead.mql")
    delivery = WebhookDelivery.objects.get(message=message)
    assert post.headers["x-nurture-event"] == "lead.mql"
    assert post.headers["x-nurture-delivery"] == str(delivery.pk)
    assert post.headers["content-type"].startswith("application/json")
    assert delivery.state == "delivered" and delivery.attempts == 1 and delivery.last_status == 200
    # A second tick at the same instant sends nothing again.
    assert "delivered" not in tick_at(T0 + timedelta(seconds=10))
    assert len(fake.requests) == 3


@pytest.mark.django_db
def test_a_wrong_secret_is_refused_by_the_receiver_and_retried(fake):
    crm = Receiver(fake, "/crm", SECRET)
    with time_machine.travel(T0, tick=False):
        webhook_subscription_create(url=crm.url, events=["lead.mql"], secret="not-what-the-crm-has-0000")
        outbox_put(type="lead.mql", lead_ids=[LeadFactory().pk], occurred_at=T0)
    tick_at(T0 + timedelta(seconds=5))
    delivery = WebhookDelivery.objects.get()
    assert crm.verified == [] and len(crm.posts) == 1
    assert (
        delivery.state == "pending"
        and delivery.last_status == 401
        and "bad signature" in delivery.last_response
    )


@pytest.mark.django_db
def test_a_new_subscription_gets_what_happens_after_it_no_backfill(fake):
    crm = Receiver(fake, "/crm", SECRET)
    lead = LeadFactory()
    with time_machine.travel(T0, tick=False):
        outbox_put(type="lead.mql", lead_ids=[lead.pk], occurred_at=T0)
        sub = webhook_subscription_create(url=crm.url, events=["lead.mql"], secret=SECRET)
        assert sub.outbox_cursor == OutboxMessage.objects.get().pk
    tick_at(T0 + timedelta(seconds=5))
    assert crm.posts == []
    with time_machine.travel(T0 + timedelta(minutes=1), tick=False):
        outbox_put(type="lead.mql", lead_ids=[lead.pk], occurred_at=T0 + timedelta(minutes=1))
    tick_at(T0 + timedelta(minutes=1, seconds=5))
    assert len(crm.verified) == 1


@pytest.mark.django_db
def test_failures_are_retried_with_backoff_until_the_receiver_accepts(fake):
    crm = Receiver(fake, "/crm", SECRET)
    crm.answers = [500, 503, 502]
    with time_machine.travel(T0, tick=False):
        webhook_subscription_create(url=crm.url, events=["touch.failed"], secret=SECRET)
        outbox_put(type="touch.failed", lead_ids=[LeadFactory().pk], occurred_at=T0, data={"touch": 7})
    start = T0 + timedelta(seconds=5)
    tick_at(start)  # attempt 1: 500 → in 1 minute
    delivery = WebhookDelivery.objects.get()
    assert (delivery.state, delivery.attempts, delivery.last_status) == ("pending", 1, 500)
    assert delivery.next_attempt_at == start + timedelta(minutes=1)
    tick_at(start + timedelta(seconds=50))
    assert len(crm.posts) == 1  # not due yet
    tick_at(start + timedelta(minutes=1))  # attempt 2: 503 → in 5 minutes
    delivery.refresh_from_db()
    assert delivery.next_attempt_at == start + timedelta(minutes=6)
    tick_at(start + timedelta(minutes=6))  # attempt 3: 502 → in 30 minutes
    delivery.refresh_from_db()
    assert delivery.next_attempt_at == start + timedelta(minutes=36)
    tick_at(start + timedelta(minutes=36))  # attempt 4: accepted
    delivery.refresh_from_db()
    assert (delivery.state, delivery.attempts, delivery.last_status) == ("delivered", 4, 200)
    assert delivery.delivered_at == start + timedelta(minutes=36)
    ids = {p.json["id"] for p in crm.posts}
    assert len(crm.posts) == 4 and len(ids) == 1  # the same message id every time: receivers deduplicate


@pytest.mark.django_db
def test_given_up_after_24_hours_then_retry_now_sends_it_once_more(fake):
    crm = Receiver(fake, "/crm", SECRET)
    crm.answers = [500] * 100
    with time_machine.travel(T0, tick=False):
        webhook_subscription_create(url=crm.url, events=["lead.sql"], secret=SECRET)
        outbox_put(type="lead.sql", lead_ids=[LeadFactory().pk], occurred_at=T0)
    at = T0 + timedelta(seconds=5)
    tick_at(at)
    delivery = WebhookDelivery.objects.get()
    first = delivery.created_at
    while delivery.state == "pending":
        at = delivery.next_attempt_at
        assert at <= first + timedelta(hours=24)
        tick_at(at)
        delivery.refresh_from_db()
    assert delivery.state == "failed"
    assert at == first + timedelta(hours=24)  # the last attempt at the 24-hour mark
    # 0, 1 m, 6 m, 36 m, 2 h 36, 8 h 36, 14 h 36, 20 h 36, 24 h
    assert delivery.attempts == 9 == len(crm.posts)
    tick_at(at + timedelta(hours=1))
    assert len(crm.posts) == 9  # given up: nothing more

    crm.answers = []  # the CRM is fixed
    later = at + timedelta(hours=2)
    assert webhooks_retry_now(delivery_ids=[delivery.pk], now=later) == 1
    tick_at(later)
    delivery.refresh_from_db()
    assert delivery.state == "delivered" and len(crm.posts) == 10


@pytest.mark.django_db
def test_retry_now_makes_a_waiting_delivery_due_at_once(fake):
    crm = Receiver(fake, "/crm", SECRET)
    crm.answers = [500]
    with time_machine.travel(T0, tick=False):
        webhook_subscription_create(url=crm.url, events=["lead.sql"], secret=SECRET)
        outbox_put(type="lead.sql", lead_ids=[LeadFactory().pk], occurred_at=T0)
    tick_at(T0 + timedelta(seconds=5))
    delivery = WebhookDelivery.objects.get()
    webhooks_retry_now(delivery_ids=[delivery.pk], now=T0 + timedelta(seconds=20))
    tick_at(T0 + timedelta(seconds=20))
    delivery.refresh_from_db()
    assert delivery.state == "delivered" and len(crm.posts) == 2


@pytest.mark.django_db
def test_an_unreachable_receiver_is_a_retry_with_the_error(fake):
    with FakeProvider() as gone:
        url = gone.url + "/crm"
    with time_machine.travel(T0, tick=False):
        webhook_subscription_create(url=url, events=["lead.sql"], secret=SECRET)
        outbox_put(type="lead.sql", lead_ids=[LeadFactory().pk], occurred_at=T0)
    tick_at(T0 + timedelta(seconds=5))
    delivery = WebhookDelivery.objects.get()
    assert delivery.state == "pending" and delivery.last_status is None
    assert "ConnectError" in delivery.last_error


@pytest.mark.django_db
def test_a_delivery_left_sending_by_a_dead_worker_is_handed_out_after_the_lease(fake):
    crm = Receiver(fake, "/crm", SECRET)
    with time_machine.travel(T0, tick=False):
        webhook_subscription_create(url=crm.url, events=["lead.sql"], secret=SECRET)
        outbox_put(type="lead.sql", lead_ids=[LeadFactory().pk], occurred_at=T0)
    at = T0 + timedelta(seconds=5)
    with time_machine.travel(at, tick=False):
        webhooks_fanout(now=at)
        assert len(webhooks_claim(now=at)) == 1  # the worker that claimed it died before the POST
    lease = timedelta(minutes=settings.NURTURE_WEBHOOK_LEASE_MINUTES)
    tick_at(at + lease - timedelta(seconds=1))
    assert crm.posts == []
    tick_at(at + lease + timedelta(seconds=1))
    assert WebhookDelivery.objects.get().state == "delivered" and len(crm.posts) == 1


@pytest.mark.django_db
def test_beats_tick_claims_and_a_worker_sends_only_what_its_claim_holds(
    fake, django_capture_on_commit_callbacks
):
    crm = Receiver(fake, "/crm", SECRET)
    with time_machine.travel(T0, tick=False):
        webhook_subscription_create(url=crm.url, events=["lead.sql"], secret=SECRET)
        outbox_put(type="lead.sql", lead_ids=[LeadFactory().pk for _ in range(3)], occurred_at=T0)
    at = T0 + timedelta(seconds=5)
    with time_machine.travel(at, tick=False), django_capture_on_commit_callbacks() as queued:
        report = webhooks_tick(at, inline=False)
    assert report["queued"] == 3 and len(queued) == 1 and crm.posts == []
    assert set(WebhookDelivery.objects.values_list("state", flat=True)) == {"sending"}
    ids = list(WebhookDelivery.objects.values_list("pk", flat=True))
    webhooks_send_task(ids, (at - timedelta(seconds=1)).isoformat())  # a stale claim: not its own
    assert crm.posts == []
    with time_machine.travel(at + timedelta(seconds=3), tick=False):
        webhooks_send_task(ids, at.isoformat())
    assert len(crm.verified) == 3
    assert set(WebhookDelivery.objects.values_list("state", flat=True)) == {"delivered"}


@pytest.mark.django_db
def test_the_tick_command_delivers_due_webhooks(fake):
    crm = Receiver(fake, "/crm", SECRET)
    with time_machine.travel(T0, tick=False):
        webhook_subscription_create(url=crm.url, events=["lead.stage_changed"], secret=SECRET)
        outbox_put(type="lead.stage_changed", lead_ids=[LeadFactory().pk], occurred_at=T0, data={"to": "sql"})
    with time_machine.travel(T0 + timedelta(seconds=30), tick=False):
        call_command("tick", stdout=io.StringIO())
    # (The tick's own pool pass may announce the lead's move to mil too.)
    assert "sql" in [p["data"].get("to") for p in crm.verified]


@pytest.mark.django_db
def test_fanout_is_a_few_statements_whatever_the_number_of_messages(fake, django_assert_max_num_queries):
    leads = [LeadFactory().pk for _ in range(3)]
    with time_machine.travel(T0, tick=False):
        for n in range(3):
            webhook_subscription_create(
                url=f"{fake.url}/s{n}", events=["lead.mql", "lead.hot"], secret=SECRET
            )
    for count, at in ((1, T0), (400, T0 + timedelta(minutes=1))):
        with time_machine.travel(at, tick=False):
            outbox_put(type="lead.mql", lead_ids=leads * count, occurred_at=at)
            outbox_put(type="pool.joined", lead_ids=leads * count, occurred_at=at)
        with time_machine.travel(at + timedelta(seconds=5), tick=False), django_assert_max_num_queries(30):
            webhooks_fanout(now=at)
    assert WebhookDelivery.objects.count() == 3 * 3 * 401
    head = OutboxMessage.objects.order_by("-pk").values_list("pk", flat=True).first()
    assert set(WebhookSubscription.objects.values_list("outbox_cursor", flat=True)) == {head}


@pytest.mark.django_db
def test_a_backlog_is_fanned_out_in_bounded_batches_and_nothing_twice(fake):
    with time_machine.travel(T0, tick=False):
        webhook_subscription_create(url=f"{fake.url}/s", events=["lead.mql"], secret=SECRET)
        outbox_put(type="lead.mql", lead_ids=[LeadFactory().pk] * 250, occurred_at=T0)
        outbox_put(type="lead.sql", lead_ids=[LeadFactory().pk] * 30, occurred_at=T0)
    at = T0 + timedelta(seconds=5)
    with time_machine.travel(at, tick=False):
        assert webhooks_fanout(now=at, batch=100)["fanned_out"] == 250
        WebhookSubscription.objects.update(outbox_cursor=0)  # as if the cursor's move were lost
        assert webhooks_fanout(now=at, batch=100)["fanned_out"] == 0
    assert WebhookDelivery.objects.count() == 250


@pytest.mark.django_db
def test_an_inactive_subscription_gets_nothing(fake):
    crm = Receiver(fake, "/crm", SECRET)
    with time_machine.travel(T0, tick=False):
        webhook_subscription_create(url=crm.url, events=["lead.mql"], secret=SECRET, active=False)
        outbox_put(type="lead.mql", lead_ids=[LeadFactory().pk], occurred_at=T0)
    tick_at(T0 + timedelta(seconds=5))
    assert crm.posts == [] and not WebhookDelivery.objects.exists()


# --- PostgreSQL: separate connections.


def _threads(targets) -> list[BaseException]:
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(targets))

    def run(target):
        try:
            barrier.wait()
            target()
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(t,)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return errors


@pytest.mark.django_db(transaction=True)
def test_two_deliveries_at_once_post_each_message_once(fake):
    needs_pg()
    crm = Receiver(fake, "/crm", SECRET)
    crm.delay = 0.02
    now = datetime.now(UTC)
    webhook_subscription_create(url=crm.url, events=["lead.mql"], secret=SECRET)
    outbox_put(type="lead.mql", lead_ids=[LeadFactory().pk for _ in range(60)], occurred_at=now)
    time.sleep(2.5)  # past the fan-out's margin
    webhooks_fanout(now=now)
    assert WebhookDelivery.objects.count() == 60
    errors = _threads([lambda: webhooks_deliver(now=now), lambda: webhooks_deliver(now=now)])
    assert not errors, errors
    ids = [p["id"] for p in crm.verified]
    assert len(ids) == 60 and len(set(ids)) == 60
    assert set(WebhookDelivery.objects.values_list("state", flat=True)) == {"delivered"}


@pytest.mark.django_db(transaction=True)
def test_two_fanouts_at_once_make_each_delivery_once(fake):
    needs_pg()
    now = datetime.now(UTC)
    for n in range(3):
        webhook_subscription_create(url=f"{fake.url}/s{n}", events=["lead.mql"], secret=SECRET)
    outbox_put(type="lead.mql", lead_ids=[LeadFactory().pk for _ in range(500)], occurred_at=now)
    time.sleep(2.5)  # past the fan-out's margin
    errors = _threads([lambda: webhooks_fanout(now=now, batch=50) for _ in range(3)])
    assert not errors, errors
    assert WebhookDelivery.objects.count() == 1500
    head = OutboxMessage.objects.order_by("-pk").values_list("pk", flat=True).first()
    assert set(WebhookSubscription.objects.values_list("outbox_cursor", flat=True)) == {head}


@pytest.mark.django_db(transaction=True)
def test_a_message_committed_late_below_the_cursor_is_not_missed(fake, monkeypatch):
    needs_pg()
    import channels.webhooks as webhooks

    monkeypatch.setattr(webhooks, "FANOUT_MARGIN", timedelta(milliseconds=100))
    crm = Receiver(fake, "/crm", SECRET)
    webhook_subscription_create(url=crm.url, events=["lead.mql"], secret=SECRET)
    lead = LeadFactory().pk
    inserted, release = threading.Event(), threading.Event()

    def slow_writer():
        with transaction.atomic():
            outbox_put(type="lead.mql", lead_ids=[lead], occurred_at=datetime.now(UTC), data={"n": "late"})
            inserted.set()
            release.wait(30)

    writer = threading.Thread(target=lambda: (slow_writer(), connections.close_all()))
    writer.start()
    assert inserted.wait(30)
    outbox_put(type="lead.mql", lead_ids=[lead], occurred_at=datetime.now(UTC), data={"n": "early"})
    time.sleep(0.3)
    webhooks_tick(datetime.now(UTC))  # the late one is still committing: the cursor must not pass it
    release.set()
    writer.join(30)
    time.sleep(0.3)
    webhooks_tick(datetime.now(UTC))
    assert sorted(p["data"]["n"] for p in crm.verified) == ["early", "late"]
    late = OutboxMessage.objects.get(data__n="late").pk
    assert late < OutboxMessage.objects.get(data__n="early").pk  # it did take the lower id


# --- The `webhook` step channel.


@pytest.fixture
def touch_receiver(fake, settings):
    from channels.registry import adapters_reset

    receiver = Receiver(fake, "/touches", "the-channel-secret-abcdef")
    settings.NURTURE_WEBHOOK_CHANNEL_URL = receiver.url
    settings.NURTURE_WEBHOOK_CHANNEL_SECRET = receiver.secret
    adapters_reset()
    yield receiver
    adapters_reset()


def _message(**fields):
    from channels.adapters.base import OutgoingMessage

    base = {
        "touch_id": 41,
        "idempotency_key": "e7-p0",
        "channel": "webhook",
        "lead_id": 9,
        "lead": {"name": "李娜", "phone": "+8613800000000", "email": "", "wechat_oa_interaction_at": T0},
        "text": "李娜您好，白皮书请看",
        "link": "https://n.example.com/c/abc/",
    }
    return OutgoingMessage(**{**base, **fields})


@pytest.mark.django_db
def test_the_webhook_channel_posts_the_touch_signed_with_its_idempotency_key(touch_receiver):
    from channels.adapters.base import SendStatus
    from channels.registry import adapter_for

    adapter = adapter_for("webhook")
    assert adapter is not None and adapter.honours_idempotency_key
    result = adapter.send(_message())
    assert result.status == SendStatus.SENT
    (body,) = touch_receiver.verified  # the signature checked out
    assert body["id"] == "e7-p0" and body["touch"] == 41 and body["text"] == "李娜您好，白皮书请看"
    assert body["lead"]["id"] == 9 and body["lead"]["name"] == "李娜" and body["link"].endswith("/c/abc/")
    assert touch_receiver.posts[0].headers["idempotency-key"] == "e7-p0"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("status", "error"),
    [(400, "PermanentError"), (404, "PermanentError"), (500, "RetryableError"), (429, "RetryableError")],
)
def test_the_webhook_channel_types_its_errors(touch_receiver, status, error):
    from channels.registry import adapter_for

    touch_receiver.answers = [status]
    with pytest.raises(Exception) as caught:
        adapter_for("webhook").send(_message())
    assert type(caught.value).__name__ == error


@pytest.mark.django_db
def test_the_webhook_channel_unreachable_is_retryable(settings):
    from channels.adapters.base import RetryableError
    from channels.registry import adapter_for, adapters_reset

    with FakeProvider() as gone:
        settings.NURTURE_WEBHOOK_CHANNEL_URL = gone.url + "/touches"
    settings.NURTURE_WEBHOOK_CHANNEL_SECRET = "x" * 20
    adapters_reset()
    with pytest.raises(RetryableError):
        adapter_for("webhook").send(_message())
    adapters_reset()


@pytest.mark.django_db
def test_the_webhook_channel_is_not_configured_without_its_url(settings):
    from channels.registry import adapter_for, adapters_reset

    settings.NURTURE_WEBHOOK_CHANNEL_URL = ""
    settings.NURTURE_WEBHOOK_CHANNEL_SECRET = "x" * 20
    adapters_reset()
    assert adapter_for("webhook") is None
    adapters_reset()


@pytest.mark.django_db
def test_a_webhook_step_goes_out_through_the_tick(touch_receiver):
    from zoneinfo import ZoneInfo

    from sequences.models import Touch
    from sequences.services import sequence_enroll, sequence_save

    sh = ZoneInfo("Asia/Shanghai")
    start = datetime(2027, 4, 6, 9, 0, tzinfo=sh)
    seq = sequence_save(
        data={"name": "推送到外呼系统", "status": "active", "quiet_hours": None},
        steps=[{"day": 0, "send_time": "10:00", "channel": "webhook", "text": "{{ lead.name }}，您好"}],
    )
    lead = LeadFactory(name="赵敏")
    sequence_enroll(sequence=seq, lead_ids=[lead.pk], anchor_at=start, now=start)
    due = start.replace(hour=10)
    with time_machine.travel(due, tick=False):
        call_command("tick", "--now", due.isoformat(), stdout=io.StringIO())
    touch = Touch.objects.get()
    assert touch.state == "sent"
    assert [(b["touch"], b["text"], b["lead"]["id"]) for b in touch_receiver.verified] == [
        (touch.pk, "赵敏，您好", lead.pk)
    ]


@pytest.mark.django_db
def test_a_lead_turning_hot_reaches_the_crm_as_lead_hot(fake):
    from leads.services import EventInput, event_record_bulk
    from nurture.engine import tick
    from scoring.models import ScoringRule
    from scoring.services import scoring_rule_save

    crm = Receiver(fake, "/crm", SECRET)
    scoring_rule_save(
        rule=ScoringRule(name="开始试用", kind="behaviour", event_type="trial_started", points=80)
    )
    lead = LeadFactory()
    with time_machine.travel(T0, tick=False):
        webhook_subscription_create(url=crm.url, events=["lead.hot"], secret=SECRET)
        item = EventInput(
            type="trial_started",
            occurred_at=T0,
            properties={},
            event_id="hot-1",
            lead_id=lead.pk,
            identity=None,
        )
        event_record_bulk(items=[item], now=T0)
        tick(now=T0)
    with time_machine.travel(T0 + timedelta(minutes=1), tick=False):
        tick(now=T0 + timedelta(minutes=1))
    assert [(p["type"], p["data"]["lead"], p["data"]["temperature"]) for p in crm.verified] == [
        ("lead.hot", lead.pk, "hot")
    ]
    assert crm.verified[0]["data"]["score"] >= 80  # fit points come on top


# --- Admin.

ADMIN = "/admin/nurture_channels"


@pytest.mark.django_db
def test_admin_shows_a_generated_secret_once_then_masked(admin_client):
    answer = admin_client.post(
        f"{ADMIN}/webhooksubscription/add/",
        {
            "url": "https://crm.example.com/h",
            "events": ["lead.mql", "lead.sql"],
            "description": "CRM",
            "active": "on",
        },
        follow=True,
    )
    assert answer.status_code == 200
    sub = WebhookSubscription.objects.get()
    assert len(sub.secret) >= 32 and sub.secret in answer.content.decode()  # shown this once
    assert sub.events == ["lead.mql", "lead.sql"]
    listed = admin_client.get(f"{ADMIN}/webhooksubscription/").content.decode()
    page = admin_client.get(f"{ADMIN}/webhooksubscription/{sub.pk}/change/").content.decode()
    assert sub.secret not in listed and sub.secret not in page and sub.secret[-4:] in listed


@pytest.mark.django_db
def test_admin_delivery_log_filters_and_retries_now(admin_client, fake):
    crm = Receiver(fake, "/crm", SECRET)
    crm.answers = [500] * 100
    with time_machine.travel(T0, tick=False):
        webhook_subscription_create(url=crm.url, events=["lead.sql", "lead.mql"], secret=SECRET)
        outbox_put(type="lead.sql", lead_ids=[LeadFactory().pk], occurred_at=T0)
        outbox_put(type="lead.mql", lead_ids=[LeadFactory().pk], occurred_at=T0)
    tick_at(T0 + timedelta(seconds=5))
    WebhookDelivery.objects.filter(message__type="lead.sql").update(state="failed")
    failed = WebhookDelivery.objects.get(state="failed")
    page = admin_client.get(f"{ADMIN}/webhookdelivery/?state=failed&type=lead.sql")
    assert page.status_code == 200 and page.context["cl"].result_count == 1
    assert admin_client.get(f"{ADMIN}/webhookdelivery/?type=lead.hot").context["cl"].result_count == 0
    detail = admin_client.get(f"{ADMIN}/webhookdelivery/{failed.pk}/change/")
    assert detail.status_code == 200 and "HTTP 500" in detail.content.decode()
    answer = admin_client.post(
        f"{ADMIN}/webhookdelivery/", {"action": "retry_now", "_selected_action": [failed.pk]}, follow=True
    )
    assert answer.status_code == 200
    failed.refresh_from_db()
    assert failed.state == "pending"
    assert abs(failed.next_attempt_at - datetime.now(UTC)) < timedelta(minutes=1)  # due now (real clock)
