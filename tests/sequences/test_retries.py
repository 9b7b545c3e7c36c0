"""Retryable errors back off 1, 5, 25 minutes, then fail; permanent errors fail at once with
`touch.failed` in the outbox; a channel whose policy refuses falls back to the step's else channel."""

import io
from datetime import datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.core.management import call_command

from channels.registry import adapters_reset
from nurture.models import OutboxMessage
from sequences.models import Touch
from sequences.services import sequence_enroll, sequence_save
from tests.factories import LeadFactory
from tests.sequences import flaky
from tests.sequences.recording import recording_calls

SH = ZoneInfo("Asia/Shanghai")
T0 = datetime(2027, 3, 1, 10, 0, tzinfo=SH)
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("recording")]


def tick(at):
    with time_machine.travel(at, tick=False):
        call_command("tick", "--now", at.isoformat(), stdout=io.StringIO())


def one_touch(settings, adapter, **step):
    settings.NURTURE_CHANNEL_ADAPTERS = {**settings.NURTURE_CHANNEL_ADAPTERS, "sms": adapter}
    adapters_reset()
    seq = sequence_save(
        data={"name": "重试", "status": "active", "quiet_hours": None},
        steps=[{"day": 0, "send_time": None, "channel": "sms", "text": "验证", **step}],
    )
    lead = LeadFactory()
    sequence_enroll(sequence=seq, lead_ids=[lead.pk], anchor_at=T0, now=T0)
    return lead


@pytest.mark.parametrize(("failures", "final"), [(3, "sent"), (4, "failed")])
def test_retry_schedule(settings, failures, final):
    lead = one_touch(settings, "tests.sequences.flaky.FlakyAdapter")
    key = f"e{lead.enrollments.get().pk}-p0"
    flaky.FAILURES[key] = failures
    tick(T0)
    touch = Touch.objects.get(lead=lead)
    assert touch.due_at == T0 + timedelta(minutes=1)  # the first failure waits a minute
    dues = [touch.due_at]
    for _attempt in range(3):
        assert touch.state == "scheduled", touch.error
        tick(touch.due_at - timedelta(seconds=30))  # not yet
        touch.refresh_from_db()
        assert touch.attempts == len(dues)
        assert touch.due_at == dues[-1]
        tick(touch.due_at)
        touch.refresh_from_db()
        dues.append(touch.due_at)
        if touch.state != "scheduled":
            break
    waits = [round((b - a).total_seconds() / 60) for a, b in pairwise(dues)]
    assert touch.state == final, touch.error
    if final == "sent":
        assert waits[:2] == [5, 25] and touch.attempts == 4
        assert list(recording_calls().values()) == [1]
    else:
        assert touch.attempts == 4 and "retries exhausted" in touch.error
        assert OutboxMessage.objects.filter(type="touch.failed", lead_id=lead.pk).count() == 1
    flaky.FAILURES.clear()


def test_a_permanent_error_fails_at_once_and_is_announced(settings):
    lead = one_touch(settings, "tests.sequences.flaky.RefusingAdapter")
    tick(T0)
    touch = Touch.objects.get(lead=lead)
    assert (touch.state, touch.attempts) == ("failed", 1)
    assert "bad_recipient" in touch.error
    message = OutboxMessage.objects.get(type="touch.failed")
    assert message.lead_id == lead.pk and message.data["channel"] == "sms"
    tick(T0 + timedelta(hours=1))
    assert Touch.objects.get(lead=lead).attempts == 1  # never tried again


def test_a_refusing_policy_falls_back_to_the_steps_else_channel_or_skips(settings):
    lead = one_touch(settings, "tests.sequences.flaky.OutsideWindowAdapter", else_channel="console")
    tick(T0)
    touch = Touch.objects.get(lead=lead)
    assert (touch.state, touch.channel) == ("sent", "console")
    assert touch.error == "fallback from sms: outside_48h_window"  # why it went by the fallback, kept
    assert list(recording_calls()) == [touch.idempotency_key]
    other = one_touch(settings, "tests.sequences.flaky.OutsideWindowAdapter")
    tick(T0 + timedelta(minutes=1))
    skipped = Touch.objects.get(lead=other)
    assert (skipped.state, skipped.skip_reason) == ("skipped", "policy:outside_48h_window")
