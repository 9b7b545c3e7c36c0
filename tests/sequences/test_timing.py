"""CONTRACT §5 timing, through `manage.py tick --now` with the clock pinned: day boundaries in
Asia/Shanghai and another zone, anchors late in the evening, quiet hours, caps across two sequences,
stale touches, pause and resume."""

import io
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.core.management import call_command

from sequences.models import Touch
from sequences.services import sequence_enroll, sequence_save, sequence_status_set
from tests.factories import LeadFactory
from tests.sequences.recording import recording_calls

SH = ZoneInfo("Asia/Shanghai")
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("recording")]


def tick(at: datetime) -> None:
    with time_machine.travel(at, tick=False):
        call_command("tick", "--now", at.isoformat(), stdout=io.StringIO())


def make(steps, **data):
    return sequence_save(
        data={"name": data.pop("name", "测试序列"), "status": "active", **data},
        steps=steps,
    )


def sent_local(lead, zone=SH):
    return [
        (t.step.day, t.sent_at.astimezone(zone).strftime("%Y-%m-%d %H:%M"))
        for t in Touch.objects.filter(lead=lead, state="sent").select_related("step").order_by("due_at")
    ]


def run_minutes(start: datetime, end: datetime, every_minutes: int = 30) -> None:
    """A tick at start, then on the hour (and every so many minutes) until end."""
    from datetime import timedelta

    tick(start)
    at = start.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    while at <= end:
        tick(at)
        at += timedelta(minutes=every_minutes)


@pytest.mark.parametrize(
    ("zone", "anchor_local", "expected"),
    [
        # Anchored late in the evening in Shanghai: day 1 is the next local date, not 24 hours later.
        (
            "Asia/Shanghai",
            datetime(2026, 12, 1, 23, 30),
            [(1, "2026-12-02 10:00"), (3, "2026-12-04 10:00")],
        ),
        # Just after midnight local time (still the previous day in UTC): day 1 is 2 December.
        (
            "Asia/Shanghai",
            datetime(2026, 12, 1, 0, 15),
            [(1, "2026-12-02 10:00"), (3, "2026-12-04 10:00")],
        ),
        # Another zone: New York, day boundaries there, not in Shanghai.
        (
            "America/New_York",
            datetime(2026, 12, 1, 22, 0),
            [(1, "2026-12-02 10:00"), (3, "2026-12-04 10:00")],
        ),
    ],
)
def test_day_n_is_the_local_date_of_the_anchor_plus_n_at_send_time(zone, anchor_local, expected):
    tz = ZoneInfo(zone)
    seq = make([{"day": 1, "send_time": "10:00"}, {"day": 3}], timezone=zone)
    lead = LeadFactory()
    anchor = anchor_local.replace(tzinfo=tz)
    sequence_enroll(sequence=seq, lead_ids=[lead.pk], anchor_at=anchor, now=anchor)
    run_minutes(anchor, datetime(2026, 12, 5, tzinfo=tz), every_minutes=60)
    assert sent_local(lead, tz) == expected


def test_day_0_without_send_time_is_at_once_and_later_days_at_the_anchors_time():
    seq = make([{"day": 0, "send_time": None}, {"day": 2, "send_time": None}], quiet_hours=None)
    lead = LeadFactory()
    anchor = datetime(2026, 12, 1, 15, 7, tzinfo=SH)
    sequence_enroll(sequence=seq, lead_ids=[lead.pk], anchor_at=anchor, now=anchor)
    tick(anchor)
    assert sent_local(lead) == [(0, "2026-12-01 15:07")]
    tick(datetime(2026, 12, 3, 15, 6, tzinfo=SH))
    assert len(sent_local(lead)) == 1  # a minute early: nothing
    tick(datetime(2026, 12, 3, 15, 7, tzinfo=SH))
    assert sent_local(lead) == [(0, "2026-12-01 15:07"), (2, "2026-12-03 15:07")]


def test_a_due_time_inside_quiet_hours_moves_to_their_end():
    seq = make([{"day": 0, "send_time": None}, {"day": 1, "send_time": "22:30"}])  # quiet 21:00–08:00
    lead = LeadFactory()
    anchor = datetime(2026, 12, 1, 23, 40, tzinfo=SH)  # day 0 "at once" falls in quiet hours
    sequence_enroll(sequence=seq, lead_ids=[lead.pk], anchor_at=anchor, now=anchor)
    tick(anchor)
    assert sent_local(lead) == []
    run_minutes(datetime(2026, 12, 2, 7, 30, tzinfo=SH), datetime(2026, 12, 3, 9, 0, tzinfo=SH))
    assert sent_local(lead) == [(0, "2026-12-02 08:00"), (1, "2026-12-03 08:00")]


def test_the_frequency_cap_holds_across_two_sequences():
    first = make([{"day": 0, "send_time": "10:00"}], name="A")
    second = make([{"day": 0, "send_time": "11:00"}, {"day": 1, "send_time": "11:00"}], name="B")
    lead = LeadFactory()
    anchor = datetime(2026, 12, 1, 9, 0, tzinfo=SH)
    sequence_enroll(sequence=first, lead_ids=[lead.pk], anchor_at=anchor, now=anchor)
    sequence_enroll(sequence=second, lead_ids=[lead.pk], anchor_at=anchor, now=anchor)
    run_minutes(anchor, datetime(2026, 12, 3, 12, 0, tzinfo=SH), every_minutes=60)
    by_sequence = {
        (t.sequence.name, t.step.day): t.sent_at.astimezone(SH).strftime("%m-%d %H:%M")
        for t in Touch.objects.filter(lead=lead, state="sent").select_related("sequence", "step")
    }
    # One console touch a local day: B's day 0 moves to the next day, and B's day 1 after it.
    assert by_sequence == {("A", 0): "12-01 10:00", ("B", 0): "12-02 11:00", ("B", 1): "12-03 11:00"}
    assert set(recording_calls().values()) == {1}


def test_a_per_sequence_cap_override_allows_two_a_day():
    seq = make(
        [{"day": 0, "send_time": "10:00"}, {"day": 0, "send_time": "15:00"}],
        caps={"console": 2},
    )
    lead = LeadFactory()
    anchor = datetime(2026, 12, 1, 9, 0, tzinfo=SH)
    sequence_enroll(sequence=seq, lead_ids=[lead.pk], anchor_at=anchor, now=anchor)
    run_minutes(anchor, datetime(2026, 12, 1, 16, 0, tzinfo=SH), every_minutes=60)
    assert sent_local(lead) == [(0, "2026-12-01 10:00"), (0, "2026-12-01 15:00")]


def test_a_touch_more_than_max_lateness_late_is_skipped_stale():
    seq = make([{"day": 1, "send_time": "10:00"}, {"day": 5, "send_time": "10:00"}], max_lateness_minutes=120)
    lead = LeadFactory()
    anchor = datetime(2026, 12, 1, 9, 0, tzinfo=SH)
    sequence_enroll(sequence=seq, lead_ids=[lead.pk], anchor_at=anchor, now=anchor)
    tick(anchor)
    # The engine was down from before day 1 10:00 until 12:30 (2.5 h late > 2 h): skipped, not sent.
    tick(datetime(2026, 12, 2, 12, 30, tzinfo=SH))
    touch = Touch.objects.get(lead=lead, step__day=1)
    assert (touch.state, touch.skip_reason) == ("skipped", "stale")
    tick(datetime(2026, 12, 6, 10, 30, tzinfo=SH))  # within lateness: sent
    assert sent_local(lead) == [(5, "2026-12-06 10:30")]
    assert len(recording_calls()) == 1


def test_pause_and_resume_move_the_timeline_on_by_the_pause():
    seq = make([{"day": 0, "send_time": "10:00"}, {"day": 2, "send_time": "10:00"}])
    lead = LeadFactory()
    anchor = datetime(2026, 12, 1, 9, 0, tzinfo=SH)
    sequence_enroll(sequence=seq, lead_ids=[lead.pk], anchor_at=anchor, now=anchor)
    tick(datetime(2026, 12, 1, 10, 0, tzinfo=SH))
    sequence_status_set(sequence=seq, status="paused", now=datetime(2026, 12, 2, 10, 0, tzinfo=SH))
    tick(datetime(2026, 12, 3, 10, 0, tzinfo=SH))  # day 2 while paused: nothing
    assert len(sent_local(lead)) == 1
    sequence_status_set(sequence=seq, status="active", now=datetime(2026, 12, 4, 10, 0, tzinfo=SH))
    tick(datetime(2026, 12, 4, 10, 0, tzinfo=SH))
    assert len(sent_local(lead)) == 1  # two days paused: day 2 is now 5 December
    tick(datetime(2026, 12, 5, 10, 0, tzinfo=SH))
    assert sent_local(lead) == [(0, "2026-12-01 10:00"), (2, "2026-12-05 10:00")]


def test_a_late_step_found_inside_quiet_hours_waits_for_their_end():
    seq = make([{"day": 0, "send_time": "10:00"}], max_lateness_minutes=24 * 60)
    lead = LeadFactory()
    anchor = datetime(2026, 12, 1, 9, 0, tzinfo=SH)
    sequence_enroll(sequence=seq, lead_ids=[lead.pk], anchor_at=anchor, now=anchor)
    # The engine was down from 09:30 until 23:00: 10:00 is 13 hours late, within the lateness allowed,
    # but 23:00 is inside quiet hours: the touch goes out at 08:00.
    tick(datetime(2026, 12, 1, 23, 0, tzinfo=SH))
    assert sent_local(lead) == []
    tick(datetime(2026, 12, 2, 8, 0, tzinfo=SH))
    assert sent_local(lead) == [(0, "2026-12-02 08:00")]
