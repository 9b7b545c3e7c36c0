"""`sequence_simulate` and `manage.py simulate`: what a sequence would send, on which local date and
why, for current leads, writing nothing."""

import io
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.apps import apps
from django.core.management import CommandError, call_command
from django.utils import translation

from content.models import ContentAsset
from leads.models import Event
from sequences.models import Enrollment, Sequence, Touch
from sequences.services import sequence_enroll, sequence_save, sequence_status_set
from sequences.simulate import sequence_simulate
from tests.factories import LeadFactory

SH = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 12, 1, 23, 40, tzinfo=SH)  # late in the evening: inside quiet hours (21:00–08:00)
pytestmark = [pytest.mark.django_db]


@pytest.fixture(autouse=True)
def english():
    with translation.override("en"):
        yield


@pytest.fixture
def asset(db):
    return ContentAsset.objects.create(
        title="制造业数字化白皮书",
        slug="mfg-paper",
        form="whitepaper",
        awareness="problem_aware",
        funnel="tofu",
    )


@pytest.fixture
def sequence(asset):
    return sequence_save(
        data={"name": "新线索培育", "status": "active", "timezone": "Asia/Shanghai"},
        steps=[
            {"day": 0, "send_time": None, "text": "{{ lead.name }}您好，欢迎关注"},
            {"day": 1, "send_time": "22:30", "content_id": asset.pk},
            {
                "day": 3,
                "condition": {"field": "industry", "op": "eq", "value": "教育"},
                "else_position": 4,
                "text": "教育行业案例",
            },
            {"day": 4, "text": "跳过的一步"},
            {"day": 5, "content_id": asset.pk, "text": "{{ lead.name }}，请看：{{ link }}"},
            {"day": 5, "send_time": "11:00", "channel": "sms", "text": "短信"},
            {"day": 6, "send_time": "15:00", "text": "第六天"},
            {"day": 6, "send_time": "16:00", "text": "同一天第二条"},
            {"day": 20, "mode": "task", "channel": "call", "text": "打电话"},
            {"day": 40, "text": "超出范围"},
        ],
    )


def lines(result):
    return [step.line() for step in result.steps]


def row_counts():
    return {model._meta.label: model.objects.count() for model in apps.get_models()}


def test_a_would_be_enrolled_lead_day_by_day_with_its_reasons(sequence, asset):
    lead = LeadFactory(name="张伟", industry="制造")
    [result] = sequence_simulate(sequence=sequence, days=30, now=NOW)
    assert result.lead == lead and result.origin == "would_enroll"
    assert lines(result) == [
        "2026-12-02 08:00  day 0  console  张伟您好，欢迎关注  — send; "
        "quiet hours 21:00–08:00: 2026-12-01 23:40 → 2026-12-02 08:00",
        "2026-12-03 08:00  day 1  console  制造业数字化白皮书 https://…/c/XXXX/  — send; "
        "quiet hours 21:00–08:00: 2026-12-02 22:30 → 2026-12-03 08:00",
        "2026-12-04 10:00  day 3  console  教育行业案例  — branch; condition false (as of today) → step #4",
        "2026-12-06 10:00  day 5  console  张伟，请看：https://…/c/XXXX/  — send",
        "2026-12-06 11:00  day 5  sms  短信  — skipped; channel sms not configured",
        "2026-12-07 15:00  day 6  console  第六天  — send",
        "2026-12-08 16:00  day 6  console  同一天第二条  — send; "
        "frequency cap (1 a day on console): 2026-12-07 16:00 → 2026-12-08 16:00",
        "2026-12-21 10:00  day 20  call  打电话  — staff task; for no owner yet",
    ]
    assert result.notes == [] and result.ending == ""  # day 40 lies beyond the 30 days


def test_it_writes_nothing(sequence):
    leads = LeadFactory.create_batch(3)
    sequence_enroll(sequence=sequence, lead_ids=[leads[0].pk], now=NOW, anchor_at=NOW)
    Event.objects.create(lead=leads[1], type="unsubscribed", occurred_at=NOW, properties={"channel": "sms"})
    before = row_counts()
    enrollment = Enrollment.objects.values().get()
    stamp = Sequence.objects.values_list("updated_at", "trigger_cursor").get(pk=sequence.pk)
    with time_machine.travel(NOW, tick=False):
        sequence_simulate(sequence=sequence, days=30, now=NOW)
        sequence_simulate(sequence=sequence, days=30, now=NOW, lead_ids=[lead.pk for lead in leads])
        call_command("simulate", str(sequence.pk), "--days", "30", stdout=io.StringIO())
    assert row_counts() == before
    assert Enrollment.objects.values().get() == enrollment
    assert Sequence.objects.values_list("updated_at", "trigger_cursor").get(pk=sequence.pk) == stamp


def test_an_enrolled_lead_goes_on_from_its_next_step_and_a_true_condition_says_so():
    seq = sequence_save(
        data={"name": "教育", "status": "active"},
        steps=[
            {"day": 0, "send_time": "10:00"},
            {"day": 2, "condition": {"field": "industry", "op": "eq", "value": "教育"}, "text": "案例"},
            {"day": 3, "wait_for": {"event": "content_viewed", "within_days": 7, "else": 3}, "text": "看过"},
            {"day": 4, "text": "没看过"},
        ],
    )
    lead = LeadFactory(industry="教育")
    other = LeadFactory(industry="教育")  # not enrolled: left out of the default sample
    anchor = datetime(2026, 12, 1, 9, 0, tzinfo=SH)
    sequence_enroll(sequence=seq, lead_ids=[lead.pk], now=anchor, anchor_at=anchor)
    Enrollment.objects.filter(lead=lead).update(position=1, next_due_at=datetime(2026, 12, 3, 10, tzinfo=SH))
    [result] = sequence_simulate(sequence=seq, days=10, now=datetime(2026, 12, 2, 12, tzinfo=SH))
    assert result.origin == "enrolled" and result.lead != other
    assert lines(result) == [
        "2026-12-03 10:00  day 2  console  案例  — send; condition true (as of today)",
        "2026-12-04 10:00  day 3  console  看过  — branch; "
        "wait for content_viewed within 7 days: not happened (as of today) → #3",
        "2026-12-05 10:00  day 4  console  没看过  — send",
    ]
    assert result.notes == [] and result.ending == "Completes after the last step."


def test_stale_opted_out_and_leaving_leads():
    seq = sequence_save(
        data={"name": "过期", "status": "active", "max_lateness_minutes": 60},
        steps=[{"day": 0, "send_time": "10:00"}, {"day": 1, "channel": "console", "text": "第二步"}],
    )
    late, quiet, gone = LeadFactory.create_batch(3)
    anchor = datetime(2026, 12, 1, 9, 0, tzinfo=SH)
    sequence_enroll(sequence=seq, lead_ids=[late.pk, quiet.pk, gone.pk], now=anchor, anchor_at=anchor)
    Event.objects.create(
        lead=quiet, type="unsubscribed", occurred_at=anchor, properties={"channel": "console"}
    )
    gone.do_not_contact = True
    gone.save()
    now = datetime(2026, 12, 1, 13, 0, tzinfo=SH)  # the engine was down: day 0 is 3 hours late
    by_lead = {r.lead.pk: r for r in sequence_simulate(sequence=seq, days=3, now=now)}
    stale = "skipped; stale: due 2026-12-01 10:00, more than 60 minutes late"
    assert lines(by_lead[late.pk]) == [
        f"2026-12-01 13:00  day 0  console  -  — {stale}",
        "2026-12-02 10:00  day 1  console  第二步  — send",
    ]
    assert [s.reason for s in by_lead[quiet.pk].steps] == [stale, "skipped; opted out of console"]
    assert by_lead[gone.pk].steps == []
    assert by_lead[gone.pk].notes == ["Leaves the sequence at the next tick: do not contact"]


def test_given_leads_and_who_would_not_be_enrolled(sequence):
    fine = LeadFactory(industry="教育")
    won = LeadFactory(stage="won")
    results = sequence_simulate(sequence=sequence, days=3, now=NOW, lead_ids=[won.pk, fine.pk])
    assert [r.lead for r in results] == [won, fine]
    assert results[0].notes == ["Would not be enrolled: an exit stage"] and results[0].steps == []
    assert [s.day for s in results[1].steps] == [0, 1, 3]
    assert results[1].steps[2].reasons == ["condition true (as of today)"]


def test_a_paused_sequence_is_shown_as_if_active(sequence):
    lead = LeadFactory()
    sequence_enroll(sequence=sequence, lead_ids=[lead.pk], now=NOW, anchor_at=NOW)
    sequence_status_set(sequence=sequence, status="paused", now=NOW)
    sequence.refresh_from_db()
    later = datetime(2026, 12, 3, 12, 0, tzinfo=SH)  # paused for 2 days and some hours
    [result] = sequence_simulate(sequence=sequence, days=3, now=later)
    assert result.notes[:2] == [
        "The sequence is paused: shown as if it were active.",
        "Paused: shown as if resumed now.",
    ]
    # Resumed now, day 0 (due 08:00 the morning after the anchor) moves on by the pause.
    assert result.steps[0].at.strftime("%Y-%m-%d %H:%M") == "2026-12-03 20:20"


def test_the_command_prints_per_lead(sequence):
    lead = LeadFactory(name="李娜", industry="制造")
    out = io.StringIO()
    call_command("simulate", str(sequence.pk), "--days", "4", "--now", NOW.isoformat(), stdout=out)
    text = out.getvalue()
    assert f"lead #{lead.pk} 李娜\n" in text
    assert (
        "  2026-12-02 08:00  day 0  console  李娜您好，欢迎关注  — send; "
        "quiet hours 21:00–08:00: 2026-12-01 23:40 → 2026-12-02 08:00\n"
    ) in text
    assert "day 3  console  教育行业案例  — branch; condition false (as of today) → step #4" in text
    assert "day 5" not in text  # beyond 4 days
    out = io.StringIO()
    other = LeadFactory(name="王芳")
    call_command(
        "simulate",
        str(sequence.pk),
        "--days",
        "2",
        "--now",
        NOW.isoformat(),
        "--lead",
        str(other.pk),
        stdout=out,
    )
    assert "王芳" in out.getvalue() and "李娜" not in out.getvalue()
    assert Touch.objects.count() == 0 and Enrollment.objects.count() == 0


def test_the_command_refuses_an_unknown_sequence():
    with pytest.raises(CommandError, match="no sequence 999"):
        call_command("simulate", "999", "--days", "3", stdout=io.StringIO())
