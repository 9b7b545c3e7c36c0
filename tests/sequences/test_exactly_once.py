"""Nothing is sent twice and nothing due is lost: concurrent ticks, a batch delivered twice, a worker
killed after the provider accepted a message but before the commit, Redis losing its queue, and a
real Celery worker sending on the right days (PostgreSQL and Redis: separate processes share them)."""

import io
import json
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection, connections

from leads.models import Lead
from nurture.engine import tick
from sequences.dispatch import touches_dispatch
from sequences.models import Touch
from sequences.services import sequence_enroll, sequence_save
from tests.sequences.recording import recording_calls
from tests.workers import celery_worker_start, celery_worker_stop, child_env

ROOT = Path(__file__).resolve().parents[2]
SH = ZoneInfo("Asia/Shanghai")
T0 = datetime(2027, 3, 1, 9, 0, tzinfo=SH)
pytestmark = pytest.mark.usefixtures("recording")


def needs_pg_and_redis():
    if connection.vendor != "postgresql" or not settings.REDIS_URL:
        pytest.skip("needs PostgreSQL and Redis: separate processes and threads share them")


def leads(n: int) -> list[int]:
    Lead.objects.bulk_create([Lead(name=f"客户{i}", phone=f"+86137{i:08d}") for i in range(n)])
    return list(Lead.objects.order_by("pk").values_list("pk", flat=True))


def two_step_sequence():
    return sequence_save(
        data={"name": "并发", "status": "active", "quiet_hours": None, "caps": {"console": 5}},
        steps=[
            {"day": 0, "send_time": None, "text": "你好 {{ lead.name }}"},
            {"day": 1, "send_time": "10:00"},
        ],
    )


def in_threads(count: int, target) -> list[BaseException]:
    errors: list[BaseException] = []
    barrier = threading.Barrier(count)

    def run():
        try:
            barrier.wait()
            target()
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return errors


def assert_each_sent_once(expected: int) -> None:
    calls = recording_calls()
    assert len(calls) == expected, f"{len(calls)} keys delivered, {expected} due"
    assert set(calls.values()) == {1}, {k: v for k, v in calls.items() if v != 1}
    assert Touch.objects.filter(state="sent").count() == expected
    assert Touch.objects.exclude(state="sent").count() == 0


@pytest.mark.django_db(transaction=True)
def test_two_ticks_at_once_send_each_touch_once():
    needs_pg_and_redis()
    seq = two_step_sequence()
    ids = leads(300)
    sequence_enroll(sequence=seq, lead_ids=ids, anchor_at=T0, now=T0)
    errors = in_threads(3, lambda: tick(now=T0))
    assert not errors, errors
    assert_each_sent_once(300)
    day1 = datetime(2027, 3, 2, 10, 0, tzinfo=SH)
    assert not in_threads(3, lambda: tick(now=day1))
    assert_each_sent_once(600)


@pytest.mark.django_db(transaction=True)
def test_without_the_tick_lock_the_statements_alone_send_each_touch_once(monkeypatch):
    """The advisory lock is a convenience: advancing and dispatching are safe by themselves."""
    needs_pg_and_redis()
    import sequences.engine as engine

    monkeypatch.setattr(engine, "sequences_lock", lambda: True)
    monkeypatch.setattr(engine, "sequences_unlock", lambda: None)
    seq = two_step_sequence()
    ids = leads(300)
    sequence_enroll(sequence=seq, lead_ids=ids, anchor_at=T0, now=T0)
    assert not in_threads(3, lambda: engine.sequences_tick(T0))
    assert_each_sent_once(300)


@pytest.mark.django_db(transaction=True)
def test_a_batch_task_delivered_twice_sends_nothing_twice():
    needs_pg_and_redis()
    seq = two_step_sequence()
    ids = leads(200)
    sequence_enroll(sequence=seq, lead_ids=ids, anchor_at=T0, now=T0)
    from sequences.dispatch import steps_advance

    steps_advance(now=T0)
    batch = list(Touch.objects.values_list("pk", flat=True))
    assert not in_threads(2, lambda: touches_dispatch(touch_ids=batch, now=T0))  # redelivered at once
    touches_dispatch(touch_ids=batch, now=T0)  # and again later
    assert_each_sent_once(200)


def _tick_process(now: datetime, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "tick", "--now", now.isoformat()],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=120,
    )


def _env(adapter: str = "CrashingAdapter", **extra: str) -> dict[str, str]:
    adapters = json.dumps({"console": f"tests.sequences.crashing.{adapter}"})
    return child_env(**{"NURTURE_CHANNEL_ADAPTERS": adapters, **extra})


@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_after_the_provider_accepted_loses_nothing_and_sends_once():
    needs_pg_and_redis()
    seq = sequence_save(
        data={"name": "崩溃", "status": "active", "quiet_hours": None},
        steps=[{"day": 0, "send_time": None, "text": "资料 {{ lead.name }}"}],
    )
    ids = leads(50)
    sequence_enroll(sequence=seq, lead_ids=ids, anchor_at=T0, now=T0)
    killed = _tick_process(T0, _env(NURTURE_TEST_CRASH_AT="20"))
    assert killed.returncode == 9, killed.stderr.decode()[-2000:]
    # The provider has 20 messages; our database knows 19 of them (the 20th died with the worker).
    assert Touch.objects.filter(state="sent").count() == 19
    assert Touch.objects.filter(state="sending").count() == 31  # the rest of the claimed batch
    # Within the lease nothing is touched; after it, the stuck touches go out again with their keys.
    again = _tick_process(T0 + timedelta(minutes=2), _env())
    assert again.returncode == 0, again.stderr.decode()[-2000:]
    assert Touch.objects.filter(state="sending").count() == 31
    late = _tick_process(T0 + timedelta(minutes=settings.NURTURE_SENDING_LEASE_MINUTES + 1), _env())
    assert late.returncode == 0, late.stderr.decode()[-2000:]
    calls = recording_calls()
    assert Touch.objects.filter(state="sent").count() == 50
    assert len(calls) == 50  # every due touch reached the provider …
    resent = [key for key, n in calls.items() if n > 1]
    assert len(resent) == 1  # … and only the one in flight when the worker died was offered twice,
    # with the same idempotency key, which the provider (like ours) delivers once.
    in_flight = Touch.objects.get(idempotency_key=resent[0])
    assert in_flight.attempts == 2


def _wait_for(condition, seconds: float = 60) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


@pytest.mark.django_db(transaction=True)
def test_end_to_end_a_real_celery_worker_sends_on_the_right_days_and_survives_redis_losing_the_queue(api):
    """Lead added through the API → MIL → the sequence of the MIL pool → touches sent by a Celery
    worker on day 0 and day 3 (local dates), one each, although Redis lost the first day's queue."""
    needs_pg_and_redis()
    import redis

    from leads.models import Pool

    # A transactional test starts without the data migrations' rows: the MIL pool as it ships.
    Pool.objects.get_or_create(
        slug="mil", defaults={"name": "MIL", "rule": {"field": "phone", "op": "is_set", "value": True}}
    )
    sequence_save(
        data={
            "name": "新注册欢迎",
            "status": "active",
            "trigger": {"type": "pool_entered", "pool": "mil"},
        },
        steps=[
            {"day": 0, "send_time": "10:00", "text": "欢迎 {{ lead.name }}"},
            {"day": 3, "send_time": "10:00", "text": "案例"},
        ],
    )
    tick(now=T0)  # the trigger's cursor starts here
    created = api.post("/api/v1/leads/upsert/", {"phone": "139 0000 1111", "name": "陈静"}, format="json")
    assert created.status_code == 201, created.content
    lead_id = created.json()["id"]
    env = _env(NURTURE_CHANNEL_ADAPTERS=json.dumps({"console": "tests.sequences.recording.RecordingAdapter"}))
    day0 = datetime(2027, 3, 1, 10, 0, tzinfo=SH)
    tick(now=T0 + timedelta(minutes=1), inline=False)  # enrolls; day 0 10:00 not due yet
    tick(now=day0, inline=False)  # due: the batch goes to Redis …
    assert Touch.objects.filter(lead_id=lead_id, state="scheduled").count() == 1
    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()  # … and Redis restarts empty
    worker = celery_worker_start(env)
    try:
        tick(now=day0 + timedelta(minutes=1), inline=False)  # handed out lately: not again yet
        time.sleep(2)
        assert Touch.objects.filter(lead_id=lead_id, state="sent").count() == 0
        requeue = day0 + timedelta(minutes=settings.NURTURE_QUEUE_LEASE_MINUTES + 1)
        tick(now=requeue, inline=False)  # the lost batch is handed out again
        assert _wait_for(lambda: Touch.objects.filter(lead_id=lead_id, state="sent").count() == 1)
        day3 = datetime(2027, 3, 4, 10, 0, tzinfo=SH)
        tick(now=day3 - timedelta(minutes=1), inline=False)
        tick(now=day3, inline=False)
        assert _wait_for(lambda: Touch.objects.filter(lead_id=lead_id, state="sent").count() == 2)
    finally:
        output = celery_worker_stop(worker)
    assert b"sequences.tasks.touches_dispatch_task" in output
    sent = [
        t.sent_at.astimezone(SH).strftime("%Y-%m-%d")
        for t in Touch.objects.filter(lead_id=lead_id, state="sent").order_by("due_at")
    ]
    assert sent == ["2027-03-01", "2027-03-04"]
    assert set(recording_calls().values()) == {1} and len(recording_calls()) == 2
    assert Touch.objects.filter(lead_id=lead_id).first().rendered == "欢迎 陈静"
    call_command("tick", "--now", day3.isoformat(), stdout=io.StringIO())  # twice at one instant
    assert len(recording_calls()) == 2


@pytest.mark.django_db(transaction=True)
def test_at_a_provider_that_honours_keys_a_killed_worker_still_delivers_each_touch_once():
    """Results are written a batch at a time for such a provider: after the crash the accepted but
    unrecorded sends are offered again under their keys, and delivered once each."""
    needs_pg_and_redis()
    from sequences.dispatch import RECORD_EVERY

    seq = sequence_save(
        data={"name": "崩溃2", "status": "active", "quiet_hours": None},
        steps=[{"day": 0, "send_time": None, "text": "资料 {{ lead.name }}"}],
    )
    sequence_enroll(sequence=seq, lead_ids=leads(50), anchor_at=T0, now=T0)
    killed = _tick_process(T0, _env("CrashingKeyedAdapter", NURTURE_TEST_CRASH_AT="20"))
    assert killed.returncode == 9, killed.stderr.decode()[-2000:]
    assert Touch.objects.filter(state="sent").count() == 0  # fewer than RECORD_EVERY: none written yet
    assert RECORD_EVERY > 20
    late = _tick_process(
        T0 + timedelta(minutes=settings.NURTURE_SENDING_LEASE_MINUTES + 1), _env("CrashingKeyedAdapter")
    )
    assert late.returncode == 0, late.stderr.decode()[-2000:]
    calls = recording_calls()
    assert Touch.objects.filter(state="sent").count() == 50
    assert len(calls) == 50  # delivered: one per key
    assert sorted(set(calls.values())) == [1, 2] and sum(n == 2 for n in calls.values()) == 20
