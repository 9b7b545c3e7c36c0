"""Triggers, branches, wait_for, exits, re-entry, completion actions and staff-task escalation, each
through the tick as of a pinned instant."""

import io
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.contrib.auth.models import Group
from django.core.management import call_command

from leads.models import Event, Lead, LeadTag, Pool, PoolMembership
from leads.services import EventInput, event_record_bulk, lead_stage_set, lead_tags_change, lead_upsert
from nurture.models import OutboxMessage
from sequences.models import Enrollment, Sequence, Touch
from sequences.services import sequence_enroll, sequence_save
from sequences.validation import SequenceError
from tests.factories import LeadFactory, UserFactory

SH = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=SH)
T1 = datetime(2027, 3, 1, 9, 0, tzinfo=SH)
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("recording")]


def tick(at: datetime) -> None:
    with time_machine.travel(at, tick=False):
        call_command("tick", "--now", at.isoformat(), stdout=io.StringIO())


def make(steps, **data):
    return sequence_save(data={"name": data.pop("name", "序列"), "status": "active", **data}, steps=steps)


def states(lead, sequence=None):
    touches = Touch.objects.filter(lead=lead).select_related("step").order_by("step__position")
    if sequence is not None:
        touches = touches.filter(sequence=sequence)
    return [(t.step.position, t.state, t.skip_reason) for t in touches]


def event(lead, type, at, **properties):
    event_record_bulk(
        items=[
            EventInput(
                type=type,
                occurred_at=at,
                properties=properties,
                event_id=None,
                lead_id=lead.pk,
                identity=None,
            )
        ],
        now=at,
    )


# --- Triggers.


def test_wecom_added_enrolls_with_the_events_time_as_anchor():
    seq = make(
        [{"day": 0, "send_time": None}, {"day": 1, "send_time": "10:00"}], trigger={"type": "wecom_added"}
    )
    tick(T0)  # first run: the cursor starts at the newest event (no backfill)
    lead = LeadFactory()
    added = T0 + timedelta(hours=2)
    event(lead, "wecom_added", added)
    tick(added + timedelta(minutes=1))
    enrollment = Enrollment.objects.get(lead=lead, sequence=seq)
    assert enrollment.anchor_at == added
    assert states(lead) == [(0, "sent", "")]
    tick(datetime(2026, 12, 2, 10, 0, tzinfo=SH))
    assert states(lead) == [(0, "sent", ""), (1, "sent", "")]
    tick(datetime(2026, 12, 2, 10, 1, tzinfo=SH))  # twice at the same instant changes nothing
    assert Enrollment.objects.filter(lead=lead).count() == 1
    assert Touch.objects.filter(lead=lead).count() == 2


def test_pool_entered_enrolls_the_joiners_and_leaving_the_pool_exits():
    mil = Pool.objects.get(slug="mil")
    seq = make(
        [{"day": 0, "send_time": None}, {"day": 5, "send_time": "10:00"}],
        trigger={"type": "pool_entered", "pool": mil.slug},
    )
    tick(T0)
    lead = lead_upsert(data={"phone": "13800138001", "name": "王磊"}, now=T0).lead
    tick(T0 + timedelta(minutes=1))  # the pool takes it, the sequence enrolls it
    assert Enrollment.objects.get(lead=lead, sequence=seq).state == "active"
    assert states(lead) == [(0, "sent", "")]
    Lead.objects.filter(pk=lead.pk).update(phone=None)
    lead_upsert(data={"external_id": "crm-1", "name": "王磊"}, now=T0)  # unrelated write
    from leads.pools import leads_mark_dirty

    leads_mark_dirty(lead_ids=[lead.pk], now=T0 + timedelta(minutes=2))
    tick(T0 + timedelta(minutes=2))
    enrollment = Enrollment.objects.get(lead=lead, sequence=seq)
    assert (enrollment.state, enrollment.end_reason) == ("exited", "left_pool")
    tick(datetime(2026, 12, 6, 10, 0, tzinfo=SH))
    assert states(lead) == [(0, "sent", "")]


def test_tag_added_event_and_stage_changed_triggers():
    by_tag = make(
        [{"day": 0, "send_time": None}], name="tag", trigger={"type": "tag_added", "tag": "need:线索培育"}
    )
    by_event = make(
        [{"day": 0, "send_time": None}],
        name="event",
        trigger={"type": "event", "event": "content_viewed", "where": {"form": "whitepaper"}},
        caps={"console": 5},
    )
    by_stage = make(
        [{"day": 0, "send_time": None}],
        name="stage",
        trigger={"type": "stage_changed", "stage": "recycled"},
        exit_stages=["won", "lost"],
        caps={"console": 5},
    )
    tick(T0)
    a, b, c = LeadFactory(), LeadFactory(), LeadFactory()
    lead_tags_change(lead=a, add=["need:线索培育"], now=T0)
    event(b, "content_viewed", T0, form="whitepaper")
    event(c, "content_viewed", T0, form="article")  # the wrong form: not enrolled
    lead_stage_set(lead=c, stage="recycled", reason="时机未到", now=T0)
    tick(T0 + timedelta(minutes=1))
    assert set(Enrollment.objects.values_list("lead_id", "sequence_id")) == {
        (a.pk, by_tag.pk),
        (b.pk, by_event.pk),
        (c.pk, by_stage.pk),
    }


def test_silent_enrolls_contacted_leads_once_per_silence():
    make([{"day": 0, "send_time": None}], trigger={"type": "silent", "days": 45}, reentry="always")
    quiet = LeadFactory()
    never_contacted = LeadFactory()
    spoke = T0 - timedelta(days=50)
    event(quiet, "message_out", spoke - timedelta(days=1))
    event(quiet, "message_in", spoke)
    event(never_contacted, "message_in", spoke)
    tick(T0)
    assert list(Enrollment.objects.values_list("lead_id", flat=True)) == [quiet.pk]
    tick(T0 + timedelta(days=1, minutes=1))  # still silent, already enrolled for this silence
    assert Enrollment.objects.filter(lead=quiet).count() == 1
    event(quiet, "message_in", T0 + timedelta(days=2))  # spoke again …
    tick(T0 + timedelta(days=48))  # … and fell silent for 45 days again: once more
    assert Enrollment.objects.filter(lead=quiet).count() == 2


def test_leads_that_meet_an_exit_condition_are_not_enrolled():
    seq = make([{"day": 0, "send_time": None}], exit_rule={"tag": "topic:已购买"})
    ok, sql, dnc, tagged = (
        LeadFactory(),
        LeadFactory(stage="sql"),
        LeadFactory(do_not_contact=True),
        LeadFactory(),
    )
    lead_tags_change(lead=tagged, add=["topic:已购买"], now=T0)
    result = sequence_enroll(sequence=seq, lead_ids=[ok.pk, sql.pk, dnc.pk, tagged.pk], now=T0)
    assert result == {"enrolled": [ok.pk], "refused": sorted([sql.pk, dnc.pk, tagged.pk])}


# --- Re-entry.


@pytest.mark.parametrize(
    ("reentry", "after_3_days", "after_10_days"),
    [("never", 1, 1), ("always", 2, 3), ({"after_days": 7}, 1, 2)],
)
def test_reentry_policies(reentry, after_3_days, after_10_days):
    seq = make([{"day": 0, "send_time": None}], reentry=reentry, quiet_hours=None)
    lead = LeadFactory()
    sequence_enroll(sequence=seq, lead_ids=[lead.pk], now=T0)
    tick(T0)
    tick(T0 + timedelta(minutes=1))  # completes
    assert Enrollment.objects.get(lead=lead).state == "completed"
    sequence_enroll(sequence=seq, lead_ids=[lead.pk], now=T0 + timedelta(days=3))
    tick(T0 + timedelta(days=3, minutes=1))
    tick(T0 + timedelta(days=3, minutes=2))
    assert Enrollment.objects.filter(lead=lead).count() == after_3_days
    sequence_enroll(sequence=seq, lead_ids=[lead.pk], now=T0 + timedelta(days=10))
    assert Enrollment.objects.filter(lead=lead).count() == after_10_days


def test_an_active_enrollment_is_never_doubled():
    seq = make([{"day": 5}], reentry="always")
    lead = LeadFactory()
    sequence_enroll(sequence=seq, lead_ids=[lead.pk], now=T0)
    assert sequence_enroll(sequence=seq, lead_ids=[lead.pk], now=T0)["refused"] == [lead.pk]
    assert Enrollment.objects.filter(lead=lead).count() == 1


# --- Branches and wait_for.


def test_condition_true_sends_false_takes_the_else_step():
    seq = make(
        [
            {"day": 3, "text": "方案：{{ lead.name }}", "condition": {"tag": "need:*"}, "else_position": 1},
            {"day": 3, "text": "策略文章"},
            {"day": 6, "text": "收尾"},
        ],
        caps={"console": 3},
    )
    with_need, without = LeadFactory(name="张伟"), LeadFactory()
    lead_tags_change(lead=with_need, add=["need:全渠道获客"], now=T0)
    sequence_enroll(sequence=seq, lead_ids=[with_need.pk, without.pk], anchor_at=T0, now=T0)
    tick(datetime(2026, 12, 4, 10, 0, tzinfo=SH))
    tick(datetime(2026, 12, 4, 10, 1, tzinfo=SH))
    tick(datetime(2026, 12, 7, 10, 0, tzinfo=SH))
    # With a need tag: the solution, then the strategy article too (the next position), then the end.
    assert [s for s in states(with_need)] == [(0, "sent", ""), (1, "sent", ""), (2, "sent", "")]
    assert Touch.objects.get(lead=with_need, step__position=0).rendered == "方案：张伟"
    # Without: straight to the strategy article, then the end.
    assert states(without) == [(1, "sent", ""), (2, "sent", "")]


def test_condition_false_without_else_skips_with_the_reason():
    seq = make([{"day": 0, "send_time": None, "condition": {"score_gte": 60}}, {"day": 1}])
    lead = LeadFactory()
    sequence_enroll(sequence=seq, lead_ids=[lead.pk], anchor_at=T0, now=T0)
    tick(T0)
    assert states(lead) == [(0, "skipped", "condition_false")]


def test_wait_for_a_view_then_the_solution_else_skip():
    seq = make(
        [
            {"day": 0, "send_time": None, "text": "策略"},
            {
                "day": 3,
                "text": "方案",
                "wait_for": {"event": "content_viewed", "where": {"asset": "strategy"}, "within_days": 3},
            },
        ],
        quiet_hours=None,
    )
    read, unread = LeadFactory(), LeadFactory()
    sequence_enroll(sequence=seq, lead_ids=[read.pk, unread.pk], anchor_at=T0, now=T0)
    tick(T0)
    event(read, "content_viewed", T0 + timedelta(days=1), asset="strategy")
    event(unread, "content_viewed", T0 + timedelta(days=1), asset="other")
    tick(T0 + timedelta(days=3, hours=2))
    assert states(read) == [(0, "sent", ""), (1, "sent", "")]
    assert states(unread) == [(0, "sent", ""), (1, "skipped", "wait_for_not_met")]


# --- Exits and opt-outs.


def test_exits_skip_pending_touches_with_the_reason():
    seq = make([{"day": 0, "send_time": None}, {"day": 2}], caps={"console": 5})
    to_sql, opted, dnc = LeadFactory(), LeadFactory(), LeadFactory()
    sequence_enroll(sequence=seq, lead_ids=[to_sql.pk, opted.pk, dnc.pk], anchor_at=T0, now=T0)
    tick(T0)
    lead_stage_set(lead=to_sql, stage="sql", reason="CRM", now=T0)
    event(opted, "unsubscribed", T0)
    Lead.objects.filter(pk=dnc.pk).update(do_not_contact=True)
    tick(T0 + timedelta(minutes=5))
    reasons = dict(Enrollment.objects.values_list("lead_id", "end_reason"))
    assert reasons == {to_sql.pk: "exit_stage", opted.pk: "opted_out", dnc.pk: "do_not_contact"}
    tick(datetime(2026, 12, 3, 10, 0, tzinfo=SH))
    assert Touch.objects.filter(step__position=1).count() == 0


def test_a_touch_for_an_opted_out_channel_is_skipped_and_the_sequence_goes_on():
    seq = make([{"day": 0, "send_time": None, "channel": "sms"}, {"day": 0, "send_time": None}])
    lead = LeadFactory()
    event(lead, "unsubscribed", T0 - timedelta(days=1), channel="sms")
    sequence_enroll(sequence=seq, lead_ids=[lead.pk], anchor_at=T0, now=T0)
    tick(T0)
    tick(T0 + timedelta(minutes=1))
    assert states(lead) == [(0, "skipped", "opted_out:sms"), (1, "sent", "")]


def test_opting_in_again_after_an_unsubscribe_lifts_the_channel_opt_out():
    seq = make(
        [
            {"day": 0, "send_time": None, "channel": "sms"},
            {"day": 0, "send_time": None, "channel": "wecom"},
            {"day": 1, "send_time": None, "channel": "sms"},
        ]
    )
    lead = LeadFactory()
    event(lead, "unsubscribed", T0 - timedelta(days=3), channel="sms")
    event(lead, "subscribed", T0 - timedelta(days=2), channel="sms")  # e.g. ticked the box again
    event(lead, "unsubscribed", T0 - timedelta(days=1), channel="wecom")
    sequence_enroll(sequence=seq, lead_ids=[lead.pk], anchor_at=T0, now=T0)
    tick(T0)
    tick(T0 + timedelta(minutes=1))
    event(lead, "unsubscribed", T0 + timedelta(hours=1), channel="sms")  # and out again
    tick(T0 + timedelta(days=1, minutes=1))
    assert states(lead) == [
        (0, "sent", ""),
        (1, "skipped", "opted_out:wecom"),
        (2, "skipped", "opted_out:sms"),
    ]


def test_a_channel_without_settings_skips_not_configured(settings):
    settings.NURTURE_CHANNEL_ADAPTERS = {"console": "tests.sequences.recording.RecordingAdapter"}
    from channels.registry import adapters_reset

    adapters_reset()
    seq = make([{"day": 0, "send_time": None, "channel": "wecom"}])
    lead = LeadFactory()
    sequence_enroll(sequence=seq, lead_ids=[lead.pk], anchor_at=T0, now=T0)
    tick(T0)
    assert states(lead) == [(0, "skipped", "not_configured")]


# --- Completion and tasks.


def test_completion_by_temperature_hot_to_an_sdr_warm_to_the_next_sequence_cold_tagged():
    sdr_group = Group.objects.create(name="sdr")
    away = Group.objects.create(name="sdr_unavailable")
    sdr1, sdr2, gone = (
        UserFactory(username="sdr1"),
        UserFactory(username="sdr2"),
        UserFactory(username="away"),
    )
    for user in (sdr1, sdr2, gone):
        user.groups.add(sdr_group)
    gone.groups.add(away)
    follow_up = make([{"day": 1}], name="下一阶段")
    seq = make(
        [{"day": 0, "send_time": None}],
        quiet_hours=None,
        on_complete={
            "hot": {"action": "assign_sdr"},
            "warm": {"action": "enroll", "sequence": follow_up.pk},
            "cold": {"action": "tag", "tag": "value:low"},
        },
    )
    hot1, hot2, warm, cold = LeadFactory(), LeadFactory(), LeadFactory(), LeadFactory()
    sequence_enroll(sequence=seq, lead_ids=[hot1.pk, hot2.pk, warm.pk, cold.pk], anchor_at=T1, now=T1)
    # T1 is later than the rows the test database was made with, so the scoring thresholds are older
    # than the first tick's full rescoring, and the second tick rescores nobody.
    tick(T1)  # sends the one step (and rescores everyone: the first tick of the day)
    for lead, temperature in ((hot1, "hot"), (hot2, "hot"), (warm, "warm"), (cold, "cold")):
        Lead.objects.filter(pk=lead.pk).update(temperature=temperature)
    tick(T1 + timedelta(minutes=1))
    owners = set(Lead.objects.filter(pk__in=[hot1.pk, hot2.pk]).values_list("owner__username", flat=True))
    assert owners == {"sdr1", "sdr2"}
    assert set(OutboxMessage.objects.filter(type="lead.hot").values_list("lead_id", flat=True)) == {
        hot1.pk,
        hot2.pk,
    }
    assert Enrollment.objects.get(lead=warm, sequence=follow_up).state == "active"
    assert LeadTag.objects.filter(lead=cold, tag__name="value:low").exists()
    # … and the tag moves it down a value pool at the next tick (industry known: medium → low).
    in_value = PoolMembership.objects.filter(lead=cold, pool__family="value", left_at__isnull=True)
    assert list(in_value.values_list("pool__slug", flat=True)) == ["value-medium"]
    tick(T1 + timedelta(minutes=2))
    assert list(in_value.values_list("pool__slug", flat=True)) == ["value-low"]
    assert set(Enrollment.objects.filter(sequence=seq).values_list("state", flat=True)) == {"completed"}


def test_a_task_step_opens_a_task_for_the_owner_and_escalates_after_its_deadline():
    Group.objects.create(name="sdr_manager").user_set.add(UserFactory(username="boss"))
    owner = UserFactory(username="owner")
    seq = make(
        [{"day": 0, "send_time": "10:00", "channel": "call", "mode": "task", "text": "回访 {{ lead.name }}"}]
    )
    lead = LeadFactory(owner=owner)
    sequence_enroll(sequence=seq, lead_ids=[lead.pk], anchor_at=T0, now=T0)
    tick(datetime(2026, 12, 1, 10, 0, tzinfo=SH))
    task = Touch.objects.get(lead=lead)
    assert (task.state, task.assignee, task.mode) == ("task_open", owner, "task")
    tick(datetime(2026, 12, 2, 9, 59, tzinfo=SH))
    assert not OutboxMessage.objects.filter(type="task.escalated").exists()
    tick(datetime(2026, 12, 2, 10, 1, tzinfo=SH))
    tick(datetime(2026, 12, 2, 10, 2, tzinfo=SH))  # escalated once
    escalated = OutboxMessage.objects.get(type="task.escalated")
    assert escalated.lead_id == lead.pk and escalated.data["touch"] == task.pk


# --- Validation.


def test_a_bad_sequence_is_refused_with_the_paths():
    with pytest.raises(SequenceError) as caught:
        make(
            [
                {"day": -1},
                {"day": 2, "condition": {"all": [{"tag": "need:x"}, {"event": "x", "within_days": 0}]}},
                {"day": 3, "else_position": 0, "channel": "fax"},
            ],
            trigger={"type": "pool_entered", "pool": "nope"},
            timezone="Mars/Olympus",
        )
    errors = caught.value.errors
    assert set(errors) >= {
        "trigger.pool",
        "timezone",
        "steps[0].day",
        "steps[1].condition",
        "steps[2].else_position",
        "steps[2].channel",
    }
    assert "all[1].within_days" in errors["steps[1].condition"]
    assert not Event.objects.exists()


def test_merging_two_leads_active_in_one_sequence_keeps_one_journey():
    seq = make([{"day": 0, "send_time": None}, {"day": 2}])
    web = lead_upsert(data={"phone": "13900001234", "name": "李娜"}, now=T0).lead
    wecom = lead_upsert(data={"wecom_external_userid": "wmLINA", "name": "李娜"}, now=T0).lead
    sequence_enroll(sequence=seq, lead_ids=[web.pk, wecom.pk], anchor_at=T0, now=T0)
    tick(T0)
    # One payload names both identities: the leads merge into the older one.
    merged = lead_upsert(data={"phone": "13900001234", "wecom_external_userid": "wmLINA"}, now=T0).lead
    assert merged.pk == web.pk
    enrollments = Enrollment.objects.filter(lead=web).order_by("pk")
    assert [(e.state, e.end_reason) for e in enrollments] == [("active", ""), ("exited", "merged")]
    tick(datetime(2026, 12, 3, 10, 0, tzinfo=SH))
    assert Touch.objects.filter(lead=web, step__position=1, state="sent").count() == 1


def test_editing_a_live_sequence_keeps_past_touches_and_applies_from_the_next_step():
    seq = make([{"day": 0, "send_time": None, "text": "旧欢迎"}, {"day": 2, "text": "旧第二步"}])
    lead = LeadFactory()
    sequence_enroll(sequence=seq, lead_ids=[lead.pk], anchor_at=T0, now=T0)
    tick(T0)
    sent = Touch.objects.get(lead=lead)
    sequence_save(
        sequence=seq,
        data={},
        steps=[{"day": 0, "send_time": None, "text": "新欢迎"}, {"day": 2, "text": "新第二步"}],
    )
    sent.refresh_from_db()
    assert (sent.step.text, sent.rendered) == ("新欢迎", "旧欢迎")  # the step is the same row, edited
    tick(datetime(2026, 12, 3, 10, 0, tzinfo=SH))
    assert Touch.objects.get(lead=lead, step__position=1).rendered == "新第二步"


def test_changing_the_trigger_restarts_its_cursor():
    seq = make([{"day": 0, "send_time": None}], trigger={"type": "wecom_added"})
    tick(T0)
    assert Sequence.objects.get(pk=seq.pk).trigger_cursor is not None
    sequence_save(sequence=seq, data={"trigger": {"type": "event", "event": "webinar_registered"}})
    assert Sequence.objects.get(pk=seq.pk).trigger_cursor is None


def test_a_hot_lead_goes_to_the_available_sdr_with_the_fewest_leads():
    sdr_group = Group.objects.create(name="sdr")
    busy, free = UserFactory(username="busy"), UserFactory(username="free")
    for user in (busy, free):
        user.groups.add(sdr_group)
    for _ in range(3):
        LeadFactory(owner=busy)
    seq = make(
        [{"day": 0, "send_time": None}], quiet_hours=None, on_complete={"hot": {"action": "assign_sdr"}}
    )
    lead = LeadFactory()
    sequence_enroll(sequence=seq, lead_ids=[lead.pk], anchor_at=T1, now=T1)
    tick(T1)
    Lead.objects.filter(pk=lead.pk).update(temperature="hot")
    tick(T1 + timedelta(minutes=1))
    assert Lead.objects.get(pk=lead.pk).owner == free
