"""Channel health in the dispatcher: the circuit breaker (touches wait, are not lost and not made stale
by an outage), per-provider token buckets, batch adapters, two-phase sends polled until confirmed, the
admin's channel status and the dead-letter list with "retry now"."""

import io
import threading
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.core.management import call_command
from django.db import connection

from channels.models import ChannelHealth
from channels.ratelimit import buckets_reset
from channels.registry import adapters_reset
from nurture.models import OutboxMessage
from sequences.dispatch import steps_advance
from sequences.models import Touch
from sequences.sending import touches_dispatch, touches_due_ids
from sequences.services import sequence_enroll, sequence_save
from tests.factories import LeadFactory
from tests.sequences import channel_adapters, flaky
from tests.sequences.recording import recording_calls

SH = ZoneInfo("Asia/Shanghai")
T0 = datetime(2027, 3, 1, 10, 0, tzinfo=SH)
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("recording")]
ADAPTERS = "tests.sequences.channel_adapters."


@pytest.fixture(autouse=True)
def _reset():
    channel_adapters.reset()
    buckets_reset()
    yield
    channel_adapters.reset()
    buckets_reset()


def tick(at):
    with time_machine.travel(at, tick=False):
        call_command("tick", "--now", at.isoformat(), stdout=io.StringIO())


def use(settings, adapter: str, channel: str = "sms") -> None:
    settings.NURTURE_CHANNEL_ADAPTERS = {**settings.NURTURE_CHANNEL_ADAPTERS, channel: adapter}
    adapters_reset()


def leads_due(n: int, channel: str = "sms") -> list:
    seq = sequence_save(
        data={"name": "健康", "status": "active", "quiet_hours": None},
        steps=[{"day": 0, "send_time": None, "channel": channel, "text": "您好 {{ lead.name }}"}],
    )
    leads = LeadFactory.create_batch(n)
    sequence_enroll(sequence=seq, lead_ids=[lead.pk for lead in leads], anchor_at=T0, now=T0)
    return leads


def states() -> list[str]:
    return sorted(Touch.objects.values_list("state", flat=True))


def test_a_failing_channel_pauses_and_its_touches_wait_without_going_stale(settings):
    settings.NURTURE_BREAKER_FAILURES = 3
    settings.NURTURE_BREAKER_PAUSE_MINUTES = 48 * 60  # a long outage, longer than max lateness (24 h)
    use(settings, ADAPTERS + "DownAdapter")
    leads_due(5)
    tick(T0)
    # Three 503s in a row open the breaker; the other two are not even tried and keep their attempt.
    assert len(channel_adapters.CALLS["down"]) == 3
    health = ChannelHealth.objects.get(channel="sms")
    assert health.paused_until == T0 + timedelta(hours=48)
    assert "503" in health.last_error
    assert states() == ["scheduled"] * 5
    assert sorted(Touch.objects.values_list("attempts", flat=True)) == [0, 0, 1, 1, 1]

    # The provider comes back, but the breaker holds the channel: nothing is handed out, nothing stale.
    use(settings, "tests.sequences.recording.RecordingAdapter")
    tick(T0 + timedelta(hours=30))
    assert states() == ["scheduled"] * 5
    assert recording_calls() == {}

    # Resumed: lateness counts from the resume, so all five go out, each once.
    tick(T0 + timedelta(hours=48, minutes=1))
    assert states() == ["sent"] * 5
    assert sorted(recording_calls().values()) == [1] * 5


def test_a_touch_due_long_before_a_short_pause_still_goes_stale_by_its_own_lateness(settings):
    settings.NURTURE_BREAKER_FAILURES = 1
    settings.NURTURE_BREAKER_PAUSE_MINUTES = 10
    use(settings, ADAPTERS + "DownAdapter")
    leads_due(2)
    tick(T0)  # one failure opens it for 10 minutes; the other touch waits with no attempt
    use(settings, "tests.sequences.recording.RecordingAdapter")
    tick(T0 + timedelta(hours=25))  # resumed 24 h 50 min ago: the waiting one is now really stale
    assert Touch.objects.filter(attempts=0).get().skip_reason == "stale"


def test_a_success_between_failures_resets_the_count(settings):
    settings.NURTURE_BREAKER_FAILURES = 3
    use(settings, "tests.sequences.flaky.FlakyAdapter")
    leads = leads_due(5)
    keys = [f"e{lead.enrollments.get().pk}-p0" for lead in leads]
    for key in (keys[0], keys[1], keys[3], keys[4]):
        flaky.FAILURES[key] = 1
    try:
        tick(T0)
    finally:
        flaky.FAILURES.clear()
    health = ChannelHealth.objects.get(channel="sms")
    assert health.paused_until is None
    assert health.consecutive_failures == 2
    assert states() == ["scheduled"] * 4 + ["sent"]


def test_a_provider_rate_limit_puts_the_rest_back_for_the_next_tick(settings):
    settings.NURTURE_RATE_MAX_WAIT_SECONDS = 0
    use(settings, ADAPTERS + "ThrottledAdapter")
    leads_due(5)
    tick(T0)
    assert states() == ["scheduled"] * 3 + ["sent"] * 2  # the bucket's burst
    assert list(Touch.objects.filter(state="scheduled").values_list("attempts", flat=True)) == [0, 0, 0]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="workers share the bucket through Redis")
@pytest.mark.django_db(transaction=True)
def test_the_token_bucket_is_shared_by_concurrent_workers(settings):
    if not settings.REDIS_URL:
        pytest.skip("needs Redis")
    settings.NURTURE_RATE_MAX_WAIT_SECONDS = 0
    use(settings, ADAPTERS + "ThrottledAdapter")
    import redis

    redis.Redis.from_url(settings.REDIS_URL).delete("nurture:bucket:test:throttled")
    leads_due(6)
    steps_advance(now=T0)
    ids = touches_due_ids(now=T0)
    assert len(ids) == 6
    halves = [ids[::2], ids[1::2]]
    barrier = threading.Barrier(2)

    def worker(batch):
        try:
            barrier.wait()
            touches_dispatch(touch_ids=batch, now=T0)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(half,)) for half in halves]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert Touch.objects.filter(state="sent").count() == 2  # one bucket of 2 for both workers


def test_a_batch_adapter_gets_its_channel_touches_in_one_call(settings):
    settings.NURTURE_DISPATCH_BATCH = 10
    use(settings, ADAPTERS + "BatchAdapter")
    leads_due(25)
    tick(T0)
    assert channel_adapters.CALLS["batches"] == [25]
    assert states() == ["sent"] * 25


def test_two_phase_sends_are_polled_until_the_provider_answers(settings):
    settings.NURTURE_CONFIRM_POLL_MINUTES = 5
    use(settings, ADAPTERS + "TwoPhaseAdapter", channel="wecom")
    leads = leads_due(4, channel="wecom")
    tick(T0)
    assert states() == ["awaiting_confirm"] * 4
    tick(T0 + timedelta(minutes=1))
    assert len(channel_adapters.CALLS["reconcile"]) == 4  # asked once, right away

    keys = {lead.pk: f"e{lead.enrollments.get().pk}-p0" for lead in leads}
    channel_adapters.ANSWERS.update(
        {keys[leads[0].pk]: "sent", keys[leads[1].pk]: "not_friend", keys[leads[2].pk]: "quota"}
    )
    tick(T0 + timedelta(minutes=3))
    assert len(channel_adapters.CALLS["reconcile"]) == 4  # not again within five minutes
    tick(T0 + timedelta(minutes=7))
    by_lead = dict(Touch.objects.values_list("lead_id", "state"))
    assert [by_lead[lead.pk] for lead in leads] == ["sent", "failed", "skipped", "awaiting_confirm"]
    assert Touch.objects.get(lead=leads[2]).skip_reason == "policy:quota"
    failed = OutboxMessage.objects.get(type="touch.failed")
    assert failed.lead_id == leads[1].pk and "not_friend" in failed.data["error"]
    assert sorted(recording_calls().values()) == [1] * 4  # polling never sends again

    tick(T0 + timedelta(minutes=13))
    assert len(channel_adapters.CALLS["reconcile"]) == 4 + 4 + 1  # only the one still waiting


def health_page(client) -> str:
    return client.get("/admin/nurture_channels/channelhealth/", HTTP_ACCEPT_LANGUAGE="en").content.decode()


def test_the_admin_shows_channels_not_configured_and_paused(settings, admin_client):
    settings.NURTURE_CHANNEL_ADAPTERS = {
        **settings.NURTURE_CHANNEL_ADAPTERS,
        "wecom": "channels.adapters.wecom.WecomAdapter",
    }
    settings.WECOM_CORP_ID = ""
    adapters_reset()
    ChannelHealth.objects.create(
        channel="sms", consecutive_failures=5, paused_until=T0 + timedelta(days=3650), last_error="503"
    )
    page = health_page(admin_client)
    assert "WECOM_CORP_ID" in page and "not configured" in page
    assert "paused until" in page
    sms = ChannelHealth.objects.get(channel="sms")
    response = admin_client.post(
        "/admin/nurture_channels/channelhealth/",
        {"action": "resume_now", "_selected_action": [sms.pk]},
        follow=True,
        HTTP_ACCEPT_LANGUAGE="en",
    )
    assert response.status_code == 200
    sms.refresh_from_db()
    assert sms.consecutive_failures == 0 and sms.paused_until <= T0 + timedelta(days=3650)
    assert "paused until" not in health_page(admin_client)


def test_a_dead_letter_is_listed_and_retried_now(settings, client, admin_user):
    use(settings, "tests.sequences.flaky.RefusingAdapter")
    leads_due(1)
    tick(T0)
    touch = Touch.objects.get()
    assert touch.state == "failed"
    use(settings, "tests.sequences.recording.RecordingAdapter")
    later = T0 + timedelta(days=3)  # long after: a retried touch is due when retried, not stale
    with time_machine.travel(later, tick=False):
        client.force_login(admin_user)
        page = client.get("/admin/sequences/failedtouch/").content.decode()
        assert "bad_recipient" in page
        client.post("/admin/sequences/failedtouch/", {"action": "retry_now", "_selected_action": [touch.pk]})
    touch.refresh_from_db()
    assert touch.state == "scheduled"
    tick(later + timedelta(minutes=1))
    touch.refresh_from_db()
    assert touch.state == "sent"
    assert recording_calls() == {touch.idempotency_key: 1}
    with time_machine.travel(later, tick=False):
        assert "bad_recipient" not in client.get("/admin/sequences/failedtouch/").content.decode()


def test_a_stuck_send_the_provider_cannot_account_for_waits_rather_than_going_out_twice(settings):
    use(settings, ADAPTERS + "UnsureAdapter")
    leads_due(1)
    steps_advance(now=T0)
    lease = timedelta(minutes=settings.NURTURE_SENDING_LEASE_MINUTES)
    Touch.objects.update(state="sending", claimed_at=T0, attempts=1)  # a worker died mid-send
    tick(T0 + lease + timedelta(minutes=1))
    touch = Touch.objects.get()
    assert channel_adapters.CALLS["reconcile"] == [touch.idempotency_key]
    assert touch.state == "sending" and touch.claimed_at == T0 + lease + timedelta(minutes=1)
    assert recording_calls() == {}  # not sent again on a guess
