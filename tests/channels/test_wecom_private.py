"""WeCom private messages (企业群发 to single customers) against the fake WeCom over real HTTP: one task
for identical content of one member's leads (split at 10,000), one per lead for personalised content,
awaiting the member's confirmation; the two-phase reconcile (0 waiting, 1 sent, 2 not a friend, 3
quota); a send whose result was lost is found again instead of sent twice; WeCom's per-customer quota
as a policy check in one query; and all of it end to end through the dispatcher."""

from __future__ import annotations

import io
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.core.management import call_command

from channels.adapters.base import OutgoingMessage, PermanentError, RetryableError, SendStatus
from channels.adapters.wecom import WecomAdapter, parse_ref
from sequences.confirm import touches_confirm_poll
from sequences.models import Enrollment, Touch, TouchState
from sequences.sending import touches_reconcile
from sequences.services import sequence_enroll, sequence_save
from tests.factories import LeadFactory

SH = ZoneInfo("Asia/Shanghai")
T0 = datetime(2027, 3, 3, 10, 0, tzinfo=SH)  # a Wednesday
ADD = "externalcontact/add_msg_template"
RESULT = "externalcontact/get_groupmsg_send_result"


def message(touch_id: int, ext: str, *, member: str = "zhangsan", **over) -> OutgoingMessage:
    data = {
        "touch_id": touch_id,
        "idempotency_key": f"k{touch_id}",
        "channel": "wecom",
        "lead_id": touch_id,
        "lead": {"name": f"客户{touch_id}", "wecom_external_userid": ext, "wecom_follow_user": member},
        "text": "新版制造业数字化白皮书已发布，欢迎查阅",
        "link": "https://nurture.example.com/c/whitepaper/",
        "content_title": "制造业数字化白皮书",
        "due_at": T0,
    }
    data.update(over)
    return OutgoingMessage(**data)


def customers(fake, member: str, n: int, *, start: int = 1) -> list[OutgoingMessage]:
    exts = [f"wm{member}{i:05d}" for i in range(start, start + n)]
    fake.befriend(member, *exts)
    return [
        message(start + i + (0 if member == "zhangsan" else 100_000), ext, member=member)
        for i, ext in enumerate(exts)
    ]


# --- Sending.


def test_identical_content_for_one_members_leads_is_one_task_awaiting_confirmation(fake_wecom):
    messages = customers(fake_wecom, "zhangsan", 3)
    outcomes = WecomAdapter().send_batch(messages)
    (call,) = fake_wecom.calls(ADD)
    assert call.json == {
        "chat_type": "single",
        "external_userid": ["wmzhangsan00001", "wmzhangsan00002", "wmzhangsan00003"],
        "sender": "zhangsan",
        "text": {"content": "新版制造业数字化白皮书已发布，欢迎查阅"},
        "attachments": [
            {
                "msgtype": "link",
                "link": {"title": "制造业数字化白皮书", "url": "https://nurture.example.com/c/whitepaper/"},
            }
        ],
    }
    (msgid,) = fake_wecom.group_msgs
    assert {touch_id: (o.status, parse_ref(o.provider_ref)) for touch_id, o in outcomes.items()} == {
        m.touch_id: (SendStatus.AWAITING_CONFIRM, (msgid, "zhangsan")) for m in messages
    }


def test_two_members_are_two_tasks_and_personalised_content_one_task_per_lead(fake_wecom):
    same = customers(fake_wecom, "zhangsan", 2) + customers(fake_wecom, "lisi", 2)
    WecomAdapter().send_batch(same)
    calls = fake_wecom.calls(ADD)
    assert sorted((c.json["sender"], len(c.json["external_userid"])) for c in calls) == [
        ("lisi", 2),
        ("zhangsan", 2),
    ]
    personal = [
        message(200 + i, m.lead["wecom_external_userid"], text=f"{m.lead['name']}，您好：白皮书已发布")
        for i, m in enumerate(customers(fake_wecom, "zhangsan", 3, start=10))
    ]
    outcomes = WecomAdapter().send_batch(personal)
    calls = fake_wecom.calls(ADD)[2:]
    assert [c.json["external_userid"] for c in calls] == [[m.lead["wecom_external_userid"]] for m in personal]
    assert [c.json["text"]["content"] for c in calls] == [m.text for m in personal]
    assert len({o.provider_ref for o in outcomes.values()}) == 3


def test_more_than_ten_thousand_customers_are_split_into_tasks_of_ten_thousand(fake_wecom):
    messages = customers(fake_wecom, "zhangsan", 10_001)
    outcomes = WecomAdapter().send_batch(messages)
    assert [len(c.json["external_userid"]) for c in fake_wecom.calls(ADD)] == [10_000, 1]
    assert len(outcomes) == 10_001
    assert all(o.status == SendStatus.AWAITING_CONFIRM for o in outcomes.values())


def test_a_customer_in_fail_list_fails_as_not_a_friend_the_others_wait(fake_wecom):
    messages = customers(fake_wecom, "zhangsan", 2)
    messages.append(message(3, "wmSTRANGER"))  # not zhangsan's contact
    outcomes = WecomAdapter().send_batch(messages)
    assert isinstance(outcomes[3], PermanentError)
    assert outcomes[3].code == "not_friend"
    assert outcomes[1].status == outcomes[2].status == SendStatus.AWAITING_CONFIRM


def test_frequency_limit_is_retryable_for_the_batch_and_stops_further_calls(fake_wecom):
    messages = customers(fake_wecom, "zhangsan", 2) + customers(fake_wecom, "lisi", 2)
    fake_wecom.fail(ADD, 45009)
    outcomes = WecomAdapter().send_batch(messages)
    assert len(fake_wecom.calls(ADD)) == 1
    assert all(isinstance(o, RetryableError) and o.retry_after == 60 for o in outcomes.values())
    assert len(outcomes) == 4


def test_touches_the_rate_limit_would_hold_too_long_are_left_for_the_queue(fake_wecom, settings):
    class Throttled(WecomAdapter):
        rate = (0.01, 1)  # one call, then one every 100 s

        def rate_key(self) -> str:
            return "wecom:test-throttled"

    settings.NURTURE_RATE_MAX_WAIT_SECONDS = 0.1
    messages = customers(fake_wecom, "zhangsan", 2) + customers(fake_wecom, "lisi", 2)
    outcomes = Throttled().send_batch(messages)
    (call,) = fake_wecom.calls(ADD)
    sent = {m.touch_id for m in messages if m.lead["wecom_follow_user"] == call.json["sender"]}
    assert set(outcomes) == sent  # the other member's touches go back to the queue, not lost


def test_an_expired_token_during_a_send_is_refreshed_and_sent_once(fake_wecom):
    WecomAdapter().send_batch(customers(fake_wecom, "zhangsan", 1))
    fake_wecom.expire_tokens()
    outcomes = WecomAdapter().send_batch(customers(fake_wecom, "zhangsan", 1, start=2))
    assert outcomes[2].status == SendStatus.AWAITING_CONFIRM
    assert len(fake_wecom.group_msgs) == 2  # the refused call created nothing; the retry created one
    assert len(fake_wecom.calls("gettoken")) == 2


def test_another_errcode_fails_the_tasks_touches(fake_wecom):
    messages = customers(fake_wecom, "zhangsan", 2)
    fake_wecom.fail(ADD, 40058)
    outcomes = WecomAdapter().send_batch(messages)
    assert {o.code for o in outcomes.values()} == {"wecom_40058"}


# --- Reconcile.


def test_reconcile_maps_waiting_sent_not_a_friend_and_quota(fake_wecom):
    messages = customers(fake_wecom, "zhangsan", 4)
    outcomes = WecomAdapter().send_batch(messages)
    ref = outcomes[1].provider_ref
    items = [(m, outcomes[m.touch_id].provider_ref) for m in messages]
    assert {o.status for o in WecomAdapter().reconcile_batch(items).values()} == {SendStatus.AWAITING_CONFIRM}
    msgid, _ = parse_ref(ref)
    fake_wecom.confirm(msgid, {"wmzhangsan00002": 2, "wmzhangsan00003": 3})
    fake_wecom.group_msgs[msgid].status["wmzhangsan00004"] = 0  # not sent yet
    result = WecomAdapter().reconcile_batch(items)
    assert result[1].status == SendStatus.SENT
    assert isinstance(result[2], PermanentError) and result[2].code == "not_friend"
    assert (result[3].status, result[3].reason) == (SendStatus.SKIPPED_POLICY, "quota")
    assert result[4].status == SendStatus.AWAITING_CONFIRM
    asked = fake_wecom.calls(RESULT)[-1].json
    assert asked == {"msgid": msgid, "userid": "zhangsan", "limit": 1000, "cursor": ""}
    assert len(fake_wecom.calls(RESULT)) == 2  # one per poll for the whole task


def test_reconcile_reads_every_page_of_a_large_task(fake_wecom):
    messages = customers(fake_wecom, "zhangsan", 2500)
    outcomes = WecomAdapter().send_batch(messages)
    msgid, _ = parse_ref(outcomes[1].provider_ref)
    fake_wecom.confirm(msgid)
    result = WecomAdapter().reconcile_batch([(m, outcomes[m.touch_id].provider_ref) for m in messages])
    assert all(o.status == SendStatus.SENT for o in result.values())
    assert [c.json["cursor"] for c in fake_wecom.calls(RESULT)] == ["", "1000", "2000"]


@time_machine.travel(T0 + timedelta(minutes=5), tick=False)
def test_a_send_whose_result_was_lost_is_found_by_content_and_not_sent_again(fake_wecom):
    messages = customers(fake_wecom, "zhangsan", 3)
    sent = WecomAdapter().send_batch(messages[:2])  # … and the worker died before recording it
    other = message(9, "wmzhangsan00003", text="另一条消息")
    WecomAdapter().send_batch([other])
    adapter = WecomAdapter()
    result = adapter.reconcile(messages[0], "")
    assert (result.status, result.provider_ref) == (SendStatus.AWAITING_CONFIRM, sent[1].provider_ref)
    assert adapter.reconcile(messages[2], "") is None  # its content was never sent to it: send again
    listed = fake_wecom.calls("externalcontact/get_groupmsg_list_v2")[0].json
    assert listed["chat_type"] == "single" and listed["filter_type"] == 0
    assert listed["start_time"] <= int((T0 - timedelta(minutes=59)).timestamp())
    fake_wecom.confirm(parse_ref(sent[1].provider_ref)[0])
    assert adapter.reconcile(messages[1], "").status == SendStatus.SENT
    assert len(fake_wecom.calls(ADD)) == 2


def test_a_lookup_that_fails_is_an_error_not_a_none(fake_wecom):
    fake_wecom.fail("externalcontact/get_groupmsg_list_v2", 45009)
    with pytest.raises(RetryableError):
        WecomAdapter().reconcile(customers(fake_wecom, "zhangsan", 1)[0], "")


# --- Policy.


def test_a_lead_without_wecom_contact_is_refused_before_any_call(fake_wecom, db):
    adapter = WecomAdapter()
    verdicts = adapter.policy_check_batch(
        [message(1, ""), message(2, "wm1", member=""), message(3, "wm3")], T0
    )
    assert [(v.allowed, v.reason) for v in verdicts.values()] == [
        (False, "no_wecom_contact"),
        (False, "no_wecom_contact"),
        (True, ""),
    ]
    assert not fake_wecom.provider.requests


def _history(lead, times: list[datetime], *, channel: str = "wecom", state: str = "sent") -> None:
    seq = sequence_save(
        data={"name": f"历史 {lead.pk} {channel} {len(times)}", "status": "active", "quiet_hours": None},
        steps=[{"day": 0, "send_time": None, "channel": channel, "text": "x"}],
    )
    sequence_enroll(sequence=seq, lead_ids=[lead.pk], anchor_at=T0 - timedelta(days=60), now=T0)
    enrollment = Enrollment.objects.get(sequence=seq, lead=lead)
    Touch.objects.bulk_create(
        Touch(
            enrollment=enrollment,
            sequence=seq,
            lead=lead,
            channel=channel,
            due_at=at,
            sent_at=at,
            state=state,
            idempotency_key=f"hist-{lead.pk}-{seq.pk}-{i}",
        )
        for i, at in enumerate(times)
    )


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("period", "used_up", "still_free"),
    [
        # the default rule: as many a month as the month has days (March: 31)
        ("month", [T0 - timedelta(hours=h) for h in range(31)], [T0 - timedelta(hours=h) for h in range(30)]),
        # 7 a natural week (Monday to Sunday)
        (
            "week",
            [T0 - timedelta(hours=h) for h in range(7)],
            [T0 - timedelta(days=2, hours=h) for h in range(6)],
        ),
        ("day", [T0 - timedelta(hours=1)], [T0 - timedelta(hours=11)]),  # 23:00 the day before
    ],
)
def test_the_customer_quota_counts_this_leads_wecom_touches_of_the_period_in_one_query(
    fake_wecom, settings, django_assert_num_queries, period, used_up, still_free
):
    settings.WECOM_CUSTOMER_CAP_PERIOD = period
    full, free, other = LeadFactory(), LeadFactory(), LeadFactory()
    _history(full, used_up)
    _history(free, [*still_free, T0 - timedelta(days=40)])
    _history(other, used_up, channel="sms")  # other channels do not count
    _history(other, used_up, channel="wecom", state="failed")  # nor failed ones
    batch = [  # (touch ids of touches not in the table: the batch's own touches are not counted)
        message(10**9 + 1, "wm1", lead_id=full.pk),
        message(10**9 + 2, "wm2", lead_id=free.pk),
        message(10**9 + 3, "wm2", lead_id=free.pk),  # a second touch of the same lead in this batch
        message(10**9 + 4, "wm4", lead_id=other.pk),
    ]
    with django_assert_num_queries(1):
        verdicts = WecomAdapter().policy_check_batch(batch, T0)
    assert [(v.allowed, v.reason) for v in verdicts.values()] == [
        (False, "quota"),
        (True, ""),
        (False, "quota"),
        (True, ""),
    ]


# --- End to end through the dispatcher.


def tick(at: datetime) -> None:
    with time_machine.travel(at, tick=False):
        call_command("tick", "--now", at.isoformat(), stdout=io.StringIO())


def wecom_leads(fake, member: str, n: int) -> list:
    leads = [LeadFactory(wecom_external_userid=f"wm{member}{i}", wecom_follow_user=member) for i in range(n)]
    fake.befriend(member, *(lead.wecom_external_userid for lead in leads))
    return leads


def enroll(leads, text: str) -> None:
    seq = sequence_save(
        data={"name": f"企微 {text[:8]}", "status": "active", "quiet_hours": None},
        steps=[{"day": 0, "send_time": None, "channel": "wecom", "text": text}],
    )
    sequence_enroll(sequence=seq, lead_ids=[lead.pk for lead in leads], anchor_at=T0, now=T0)


@pytest.mark.django_db
def test_end_to_end_one_task_per_member_confirmed_in_the_app_then_sent(fake_wecom):
    zhang, li = wecom_leads(fake_wecom, "zhangsan", 3), wecom_leads(fake_wecom, "lisi", 1)
    enroll(zhang + li, "新版白皮书已发布，欢迎查阅")
    tick(T0)
    touches = Touch.objects.filter(channel="wecom").order_by("pk")
    assert {t.state for t in touches} == {TouchState.AWAITING_CONFIRM}
    calls = fake_wecom.calls(ADD)
    assert sorted((c.json["sender"], len(c.json["external_userid"])) for c in calls) == [
        ("lisi", 1),
        ("zhangsan", 3),
    ]
    for msgid, msg in fake_wecom.group_msgs.items():
        if msg.sender == "zhangsan":
            fake_wecom.confirm(msgid, {"wmzhangsan2": 3})  # that customer's quota was used elsewhere
    touches_confirm_poll(now=T0 + timedelta(minutes=10))
    states = {t.lead.wecom_external_userid: (t.state, t.skip_reason) for t in touches.select_related("lead")}
    assert states == {
        "wmzhangsan0": (TouchState.SENT, ""),
        "wmzhangsan1": (TouchState.SENT, ""),
        "wmzhangsan2": (TouchState.SKIPPED, "policy:quota"),
        "wmlisi0": (TouchState.AWAITING_CONFIRM, ""),  # lisi has not confirmed yet
    }


@pytest.mark.django_db
def test_end_to_end_personalised_text_is_one_task_per_lead(fake_wecom):
    leads = wecom_leads(fake_wecom, "zhangsan", 3)
    enroll(leads, "{{ lead.name }}，您好：新版白皮书已发布")
    tick(T0)
    calls = fake_wecom.calls(ADD)
    assert len(calls) == 3
    assert sorted(c.json["text"]["content"] for c in calls) == sorted(
        f"{lead.name}，您好：新版白皮书已发布" for lead in leads
    )
    assert set(Touch.objects.values_list("state", flat=True)) == {TouchState.AWAITING_CONFIRM}


@pytest.mark.django_db
def test_end_to_end_a_worker_dying_after_the_call_does_not_send_twice(fake_wecom, settings):
    leads = wecom_leads(fake_wecom, "zhangsan", 2)
    enroll(leads, "新版白皮书已发布，欢迎查阅")
    tick(T0)
    (msgid,) = fake_wecom.group_msgs
    # as if the worker had died between WeCom's answer and recording it
    Touch.objects.update(state=TouchState.SENDING, provider_ref="", claimed_at=T0)
    later = T0 + timedelta(minutes=settings.NURTURE_SENDING_LEASE_MINUTES + 1)
    with time_machine.travel(later, tick=False):
        counts = touches_reconcile(now=later)
    assert counts == {"reconciled": 2, "requeued": 0}
    assert {(t.state, parse_ref(t.provider_ref)[0]) for t in Touch.objects.all()} == {
        (TouchState.AWAITING_CONFIRM, msgid)
    }
    tick(later + timedelta(minutes=1))
    assert len(fake_wecom.calls(ADD)) == 1


@pytest.mark.django_db
def test_end_to_end_a_lead_without_wecom_contact_is_skipped_with_the_reason(fake_wecom):
    lead = LeadFactory()
    enroll([lead], "新版白皮书已发布")
    tick(T0)
    touch = Touch.objects.get()
    assert (touch.state, touch.skip_reason) == (TouchState.SKIPPED, "policy:no_wecom_contact")
    assert not fake_wecom.calls(ADD)
