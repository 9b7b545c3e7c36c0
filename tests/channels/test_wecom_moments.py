"""WeCom moments against the fake WeCom over real HTTP: the leads whose touch of a step is due on a
local date are tagged with that step and date's corp tag, and exactly them; the moment's visible range
carries that tag and their members; an interrupted batch resumes without tagging or posting twice;
reconcile follows the job to the moment and each member's publication; end to end through the tick."""

from __future__ import annotations

import io
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.core.management import call_command

from channels.adapters.base import OutgoingMessage, PermanentError, RetryableError, SendStatus
from channels.adapters.wecom_moment import TAG_GROUP, WecomMomentAdapter
from channels.models import MomentTask
from sequences.confirm import touches_confirm_poll
from sequences.models import Touch, TouchState
from sequences.services import sequence_enroll, sequence_save
from tests.channels.fake_wecom import error
from tests.factories import LeadFactory

SH = ZoneInfo("Asia/Shanghai")
T0 = datetime(2027, 3, 3, 10, 0, tzinfo=SH)
ADD = "externalcontact/add_moment_task"
MARK = "externalcontact/mark_tag"
pytestmark = pytest.mark.django_db


def message(
    touch_id: int, ext: str, member: str, *, step_id: int = 7, due_at: datetime = T0
) -> OutgoingMessage:
    return OutgoingMessage(
        touch_id=touch_id,
        idempotency_key=f"k{touch_id}",
        channel="wecom_moment",
        lead_id=touch_id,
        lead={"name": f"客户{touch_id}", "wecom_external_userid": ext, "wecom_follow_user": member},
        text="春季新品发布会回顾：三大亮点一次看懂",
        link="https://nurture.example.com/c/launch/",
        content_title="春季新品发布会回顾",
        step_id=step_id,
        due_at=due_at,
        timezone="Asia/Shanghai",
    )


def crowd(fake, member: str, n: int, *, first: int, **kw) -> list[OutgoingMessage]:
    out = []
    for i in range(n):
        ext = f"wm{member}{first + i}"
        fake.befriend(member, ext)
        out.append(message(first + i, ext, member, **kw))
    return out


def pairs(messages: list[OutgoingMessage]) -> set[tuple[str, str]]:
    return {(m.lead["wecom_follow_user"], m.lead["wecom_external_userid"]) for m in messages}


def test_the_due_leads_are_tagged_and_the_moment_is_visible_to_that_tag_only(fake_wecom):
    due = crowd(fake_wecom, "zhangsan", 3, first=1) + crowd(fake_wecom, "lisi", 2, first=10)
    crowd(fake_wecom, "zhangsan", 2, first=50)  # contacts of the same member whose touch is not due
    outcomes = WecomMomentAdapter().send_batch(due)

    (tag_call,) = fake_wecom.calls("externalcontact/add_corp_tag")
    assert tag_call.json == {"group_name": TAG_GROUP, "tag": [{"name": "m7-2027-03-03"}]}
    tag_id = fake_wecom.tag_id(TAG_GROUP, "m7-2027-03-03")
    assert fake_wecom.tagged(tag_id) == pairs(due)
    assert all(c.json["add_tag"] == [tag_id] for c in fake_wecom.calls(MARK))
    assert len(fake_wecom.calls(MARK)) == 5

    (post,) = fake_wecom.calls(ADD)
    assert post.json == {
        "text": {"content": "春季新品发布会回顾：三大亮点一次看懂"},
        "visible_range": {
            "sender_list": {"user_list": ["lisi", "zhangsan"]},
            "external_contact_list": {"tag_list": [tag_id]},
        },
        "attachments": [
            {
                "msgtype": "link",
                "link": {"title": "春季新品发布会回顾", "url": "https://nurture.example.com/c/launch/"},
            }
        ],
    }
    task = MomentTask.objects.get()
    assert (task.state, task.tag_id, task.local_date.isoformat()) == (
        MomentTask.State.POSTED,
        tag_id,
        "2027-03-03",
    )
    assert task.jobid in fake_wecom.moment_jobs
    assert {tid: (o.status, o.provider_ref) for tid, o in outcomes.items()} == {
        m.touch_id: (SendStatus.AWAITING_CONFIRM, f"moment:{task.pk}") for m in due
    }


def test_each_step_and_local_date_is_its_own_moment_and_tag(fake_wecom):
    late = datetime(2027, 3, 3, 23, 30, tzinfo=SH)
    after_midnight = late + timedelta(hours=1)  # the next local day (16:30 UTC on the 3rd)
    batch = (
        crowd(fake_wecom, "zhangsan", 2, first=1, due_at=late)
        + crowd(fake_wecom, "zhangsan", 2, first=10, due_at=after_midnight)
        + crowd(fake_wecom, "zhangsan", 1, first=20, step_id=8, due_at=late)
    )
    WecomMomentAdapter().send_batch(batch)
    names = {"m7-2027-03-03": batch[0:2], "m7-2027-03-04": batch[2:4], "m8-2027-03-03": batch[4:5]}
    for name, messages in names.items():
        assert fake_wecom.tagged(fake_wecom.tag_id(TAG_GROUP, name)) == pairs(messages)
    posts = fake_wecom.calls(ADD)
    assert sorted(p.json["visible_range"]["external_contact_list"]["tag_list"][0] for p in posts) == sorted(
        fake_wecom.tag_id(TAG_GROUP, name) for name in names
    )
    assert MomentTask.objects.count() == 3


def test_an_existing_tag_of_that_name_is_found_and_reused(fake_wecom):
    fake_wecom.tag_groups.append(
        {
            "group_id": "etGROUP",
            "group_name": TAG_GROUP,
            "create_time": 0,
            "order": 0,
            "tag": [{"id": "etEXISTING", "name": "m7-2027-03-03", "create_time": 0, "order": 0}],
        }
    )
    batch = crowd(fake_wecom, "zhangsan", 2, first=1)
    WecomMomentAdapter().send_batch(batch)
    assert len(fake_wecom.calls("externalcontact/get_corp_tag_list")) == 1
    assert fake_wecom.tagged("etEXISTING") == pairs(batch)
    assert fake_wecom.calls(ADD)[0].json["visible_range"]["external_contact_list"]["tag_list"] == [
        "etEXISTING"
    ]


def test_a_customer_who_is_not_a_contact_fails_and_is_left_out_of_the_moment(fake_wecom):
    batch = [*crowd(fake_wecom, "zhangsan", 2, first=1), message(3, "wmSTRANGER", "zhangsan")]
    outcomes = WecomMomentAdapter().send_batch(batch)
    assert isinstance(outcomes[3], PermanentError) and outcomes[3].code == "not_friend"
    assert outcomes[1].status == outcomes[2].status == SendStatus.AWAITING_CONFIRM
    assert MomentTask.objects.get().touch_ids == [1, 2]
    assert len(fake_wecom.calls(ADD)) == 1


def test_an_interrupted_tagging_resumes_where_it_stopped_and_posts_once(fake_wecom):
    batch = crowd(fake_wecom, "zhangsan", 4, first=1)
    marks = {"n": 0}
    real_mark = fake_wecom.handlers[MARK]

    def busy_on_the_third(request):
        marks["n"] += 1
        return error(-1) if marks["n"] == 3 else real_mark(request)

    fake_wecom.handler(MARK, busy_on_the_third)
    first = WecomMomentAdapter().send_batch(batch)
    assert all(isinstance(o, RetryableError) for o in first.values())
    assert not fake_wecom.calls(ADD)
    task = MomentTask.objects.get()
    assert (task.state, task.marked_ids) == (MomentTask.State.TAGGING, [1, 2])

    second = WecomMomentAdapter().send_batch(batch)  # the same touches, retried
    marked = [c.json["external_userid"] for c in fake_wecom.calls(MARK)]
    assert marked == ["wmzhangsan1", "wmzhangsan2", "wmzhangsan3", "wmzhangsan3", "wmzhangsan4"]
    assert len(fake_wecom.calls(ADD)) == 1
    assert {o.provider_ref for o in second.values()} == {f"moment:{task.pk}"}

    third = WecomMomentAdapter().send_batch(batch)  # as if the results had been lost again
    assert len(fake_wecom.calls(ADD)) == 1
    assert {o.provider_ref for o in third.values()} == {f"moment:{task.pk}"}
    assert MomentTask.objects.count() == 1


def test_a_moment_created_whose_answer_was_lost_is_found_and_not_posted_twice(fake_wecom):
    batch = crowd(fake_wecom, "zhangsan", 2, first=1)
    real_add = fake_wecom.handlers[ADD]

    def created_but_the_answer_is_lost(request):
        real_add(request)
        return 504, "Gateway Timeout"

    fake_wecom.provider.route("POST", f"/cgi-bin/{ADD}", created_but_the_answer_is_lost)
    first = WecomMomentAdapter().send_batch(batch)
    assert all(isinstance(o, RetryableError) for o in first.values())
    assert len(fake_wecom.moments) == 1  # WeCom did create it
    assert MomentTask.objects.get().state == MomentTask.State.POSTING

    fake_wecom.handler(ADD, real_add)
    second = WecomMomentAdapter().send_batch(batch)
    assert len(fake_wecom.moments) == 1
    task = MomentTask.objects.get()
    assert (task.state, task.moment_id) == (MomentTask.State.POSTED, next(iter(fake_wecom.moments)))
    assert {o.status for o in second.values()} == {SendStatus.AWAITING_CONFIRM}


def test_a_later_batch_of_the_same_step_and_date_is_a_second_part_with_its_own_tag(fake_wecom):
    first = crowd(fake_wecom, "zhangsan", 2, first=1)
    later = crowd(fake_wecom, "zhangsan", 2, first=10)
    WecomMomentAdapter().send_batch(first)
    outcomes = WecomMomentAdapter().send_batch(later)
    part2 = MomentTask.objects.get(part=2)
    assert part2.tag_name == "m7-2027-03-03-2"
    assert fake_wecom.tagged(part2.tag_id) == pairs(later)
    assert fake_wecom.tagged(fake_wecom.tag_id(TAG_GROUP, "m7-2027-03-03")) == pairs(first)
    assert len(fake_wecom.calls(ADD)) == 2
    assert {o.provider_ref for o in outcomes.values()} == {f"moment:{part2.pk}"}


def test_reconcile_follows_the_job_to_the_moment_and_each_members_publication(fake_wecom):
    fake_wecom.moment_job_status = 1  # WeCom is still creating the task
    batch = crowd(fake_wecom, "zhangsan", 2, first=1) + crowd(fake_wecom, "lisi", 1, first=10)
    outcomes = WecomMomentAdapter().send_batch(batch)
    items = [(m, outcomes[m.touch_id].provider_ref) for m in batch]
    adapter = WecomMomentAdapter()
    assert {o.status for o in adapter.reconcile_batch(items).values()} == {SendStatus.AWAITING_CONFIRM}
    (job_call,) = fake_wecom.calls("externalcontact/get_moment_task_result")
    task = MomentTask.objects.get()
    assert (job_call.method, job_call.query["jobid"]) == ("GET", task.jobid)
    assert not fake_wecom.calls("externalcontact/get_moment_task")

    fake_wecom.moment_jobs[task.jobid]["status"] = 3
    assert {o.status for o in adapter.reconcile_batch(items).values()} == {SendStatus.AWAITING_CONFIRM}
    task.refresh_from_db()
    moment_id = fake_wecom.moment_jobs[task.jobid]["moment_id"]
    assert task.moment_id == moment_id

    fake_wecom.publish(moment_id, "zhangsan")
    result = adapter.reconcile_batch(items)
    assert {tid: o.status for tid, o in result.items()} == {
        1: SendStatus.SENT,
        2: SendStatus.SENT,
        10: SendStatus.AWAITING_CONFIRM,
    }
    assert len(fake_wecom.calls("externalcontact/get_moment_task_result")) == 2  # not asked again
    assert fake_wecom.calls("externalcontact/get_moment_task")[-1].json == {
        "moment_id": moment_id,
        "cursor": "",
        "limit": 1000,
    }
    fake_wecom.publish(moment_id, "lisi")
    assert adapter.reconcile_batch(items)[10].status == SendStatus.SENT
    task.refresh_from_db()
    assert task.state == MomentTask.State.PUBLISHED


def test_a_touch_without_reference_is_found_in_its_moment_or_sent_again(fake_wecom):
    batch = crowd(fake_wecom, "zhangsan", 2, first=1)
    WecomMomentAdapter().send_batch(batch[:1])
    task = MomentTask.objects.get()
    found = WecomMomentAdapter().reconcile(batch[0], "")
    assert (found.status, found.provider_ref) == (SendStatus.AWAITING_CONFIRM, f"moment:{task.pk}")
    assert WecomMomentAdapter().reconcile(batch[1], "") is None


def test_a_lead_without_wecom_contact_is_refused(fake_wecom):
    adapter = WecomMomentAdapter()
    assert adapter.policy_check(message(1, "", "zhangsan"), T0).reason == "no_wecom_contact"
    assert adapter.policy_check(message(1, "wm1", ""), T0).reason == "no_wecom_contact"
    assert adapter.policy_check(message(1, "wm1", "zhangsan"), T0).allowed


# --- End to end.


def tick(at: datetime) -> None:
    with time_machine.travel(at, tick=False):
        call_command("tick", "--now", at.isoformat(), stdout=io.StringIO())


def test_end_to_end_one_moment_for_the_due_leads_then_sent_when_published(fake_wecom):
    leads = [LeadFactory(wecom_external_userid=f"wmE{i}", wecom_follow_user="zhangsan") for i in range(3)]
    fake_wecom.befriend("zhangsan", *(lead.wecom_external_userid for lead in leads))
    bystander = LeadFactory(wecom_external_userid="wmBY", wecom_follow_user="zhangsan")
    fake_wecom.befriend("zhangsan", "wmBY")
    seq = sequence_save(
        data={"name": "朋友圈", "status": "active", "quiet_hours": None},
        steps=[{"day": 0, "send_time": None, "channel": "wecom_moment", "text": "春季新品发布会回顾"}],
    )
    sequence_enroll(sequence=seq, lead_ids=[lead.pk for lead in leads], anchor_at=T0, now=T0)
    tick(T0)
    task = MomentTask.objects.get()
    touches = Touch.objects.filter(channel="wecom_moment")
    assert {(t.state, t.provider_ref) for t in touches} == {
        (TouchState.AWAITING_CONFIRM, f"moment:{task.pk}")
    }
    assert fake_wecom.tagged(task.tag_id) == {("zhangsan", lead.wecom_external_userid) for lead in leads}
    assert ("zhangsan", bystander.wecom_external_userid) not in fake_wecom.tagged(task.tag_id)
    (post,) = fake_wecom.calls(ADD)
    assert post.json["visible_range"]["external_contact_list"]["tag_list"] == [task.tag_id]
    assert post.json["text"]["content"] == "春季新品发布会回顾"

    fake_wecom.publish(fake_wecom.moment_jobs[task.jobid]["moment_id"], "zhangsan")
    with time_machine.travel(T0 + timedelta(minutes=10), tick=False):
        touches_confirm_poll(now=T0 + timedelta(minutes=10))
    assert set(touches.values_list("state", flat=True)) == {TouchState.SENT}
    tick(T0 + timedelta(minutes=20))
    assert len(fake_wecom.calls(ADD)) == 1


def test_the_admin_lists_moments_read_only(fake_wecom, client):
    from django.contrib.auth import get_user_model

    WecomMomentAdapter().send_batch(crowd(fake_wecom, "zhangsan", 2, first=1))
    task = MomentTask.objects.get()
    admin = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(admin)
    listing = client.get("/admin/nurture_channels/momenttask/")
    assert listing.status_code == 200
    assert "m7-2027-03-03" in listing.content.decode()
    page = client.get(f"/admin/nurture_channels/momenttask/{task.pk}/change/")
    assert page.status_code == 200
    assert 'name="tag_name"' not in page.content.decode()  # nothing to edit
    assert client.get("/admin/nurture_channels/momenttask/add/").status_code == 403


def test_a_moment_links_the_contents_own_page_not_one_leads_tracked_link(fake_wecom, settings):
    from content.models import ContentAsset

    settings.NURTURE_PUBLIC_URL = "https://nurture.example.com"
    asset = ContentAsset.objects.create(
        slug="spring-launch",
        title="春季新品发布会回顾",
        form="article",
        awareness="solution_aware",
        funnel="mofu",
    )
    leads = [LeadFactory(wecom_external_userid=f"wmL{i}", wecom_follow_user="lisi") for i in range(2)]
    fake_wecom.befriend("lisi", *(lead.wecom_external_userid for lead in leads))
    seq = sequence_save(
        data={"name": "朋友圈内容", "status": "active", "quiet_hours": None},
        steps=[
            {
                "day": 0,
                "send_time": None,
                "channel": "wecom_moment",
                "text": "《{{ asset.title }}》",
                "content_id": asset.pk,
            }
        ],
    )
    sequence_enroll(sequence=seq, lead_ids=[lead.pk for lead in leads], anchor_at=T0, now=T0)
    tick(T0)
    (post,) = fake_wecom.calls(ADD)
    assert post.json["text"]["content"] == "《春季新品发布会回顾》"
    (attachment,) = post.json["attachments"]
    assert attachment["link"]["url"] == "https://nurture.example.com/p/spring-launch/"


@pytest.mark.parametrize(
    ("step", "field"),
    [
        ({"text": "{{ lead.name }}，新品发布会回顾"}, "steps[0].text"),
        ({"text": "回顾：{{ link }}"}, "steps[0].text"),
        ({"text": "{% if lead.industry %}同行{% endif %}都在看"}, "steps[0].text"),
        ({"text": "本周推荐", "recommended": True}, "steps[0].content"),
    ],
)
def test_a_moment_step_with_anything_of_one_lead_is_refused(step, field):
    from sequences.validation import SequenceError

    with pytest.raises(SequenceError) as refused:
        sequence_save(
            data={"name": "朋友圈", "status": "paused"}, steps=[{"day": 0, "channel": "wecom_moment", **step}]
        )
    assert field in refused.value.errors
