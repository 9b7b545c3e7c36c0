"""Call tasks: a touch on the `call` channel becomes one call task for the lead's owner with the
rendered talking points, the touch waits until the call is logged (then `sent`) or cancelled
(`skipped`); logging records `call_logged`; a call back opens the next task."""

from __future__ import annotations

import io
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.core.management import call_command

from channels.adapters.base import OutgoingMessage, SendStatus
from channels.adapters.call import CallAdapter
from channels.calls import CallLogError, call_log, call_task_cancel
from channels.models import CallTask
from leads.models import Event
from sequences.models import Touch
from sequences.services import sequence_enroll, sequence_save
from tests.factories import LeadFactory, UserFactory

SH = ZoneInfo("Asia/Shanghai")
T0 = datetime(2027, 4, 6, 9, 0, tzinfo=SH)
pytestmark = pytest.mark.django_db


def tick(at: datetime) -> None:
    with time_machine.travel(at, tick=False):
        call_command("tick", "--now", at.isoformat(), stdout=io.StringIO())


def call_sequence():
    return sequence_save(
        data={"name": "电话回访", "status": "active", "quiet_hours": None},
        steps=[
            {"day": 0, "send_time": "10:00", "channel": "call", "text": "问 {{ lead.name }} 的预算和时间"}
        ],
    )


def enrolled_lead(owner=None):
    lead = LeadFactory(name="王磊", owner=owner)
    sequence_enroll(sequence=call_sequence(), lead_ids=[lead.pk], anchor_at=T0, now=T0)
    return lead


def test_a_call_touch_makes_one_task_for_the_owner_and_waits_for_the_call():
    sdr = UserFactory(username="sdr_li")
    lead = enrolled_lead(owner=sdr)
    due = T0.replace(hour=10)
    tick(due)
    tick(due + timedelta(minutes=1))  # dispatch runs again: still one task
    task = CallTask.objects.get()
    touch = Touch.objects.get()
    assert task.lead_id == lead.pk and task.assignee_id == sdr.pk and task.touch_id == touch.pk
    assert task.script == "问 王磊 的预算和时间" and task.due_at == due and task.state == "open"
    assert touch.state == "awaiting_confirm" and touch.provider_ref == f"call:{task.pk}"


def test_a_lead_without_owner_gets_an_unassigned_task():
    enrolled_lead()
    tick(T0.replace(hour=10))
    assert CallTask.objects.get().assignee_id is None


def test_sending_the_same_touch_twice_makes_one_task():
    lead = enrolled_lead()
    tick(T0.replace(hour=10))
    touch = Touch.objects.get()
    message = OutgoingMessage(
        touch_id=touch.pk,
        idempotency_key=touch.idempotency_key,
        channel="call",
        lead_id=lead.pk,
        lead={},
        text="另一份话术",
        due_at=touch.due_at,
    )
    adapter = CallAdapter()
    first = adapter.send(message)
    second = adapter.send_batch([message, message])[touch.pk]
    assert CallTask.objects.count() == 1
    assert first.provider_ref == second.provider_ref == f"call:{CallTask.objects.get().pk}"
    assert first.status == SendStatus.AWAITING_CONFIRM
    assert CallTask.objects.get().script == "问 王磊 的预算和时间"  # the first task stands


def test_logging_the_call_records_call_logged_and_the_touch_ends_sent():
    sdr = UserFactory(username="sdr_wu")
    lead = enrolled_lead(owner=sdr)
    tick(T0.replace(hour=10))
    task = CallTask.objects.get()
    at = T0.replace(hour=15)
    follow = call_log(
        task=task, lead=lead, outcome="connected", notes="下月采购", call_back_at=None, by=sdr, now=at
    )
    assert follow is None
    task.refresh_from_db()
    assert (task.state, task.outcome, task.notes, task.done_at) == ("done", "connected", "下月采购", at)
    event = Event.objects.get(lead=lead, type="call_logged")
    assert event.occurred_at == at
    assert {k: event.properties[k] for k in ("outcome", "notes", "by")} == {
        "outcome": "connected",
        "notes": "下月采购",
        "by": "sdr_wu",
    }
    touch = Touch.objects.get()
    assert touch.state == "sent" and touch.sent_at == at
    with pytest.raises(CallLogError):
        call_log(task=task, lead=lead, outcome="connected", notes="", call_back_at=None, by=sdr, now=at)
    assert Event.objects.filter(type="call_logged").count() == 1


def test_the_confirm_poll_sees_a_logged_call_through_reconcile():
    lead = enrolled_lead()
    tick(T0.replace(hour=10))
    task = CallTask.objects.get()
    touch = Touch.objects.get()
    message = OutgoingMessage(
        touch_id=touch.pk,
        idempotency_key=touch.idempotency_key,
        channel="call",
        lead_id=lead.pk,
        lead={},
        text="",
    )
    adapter = CallAdapter()
    assert adapter.reconcile(message, touch.provider_ref).status == SendStatus.AWAITING_CONFIRM
    CallTask.objects.filter(pk=task.pk).update(state="done")
    assert adapter.reconcile(message, touch.provider_ref).status == SendStatus.SENT
    CallTask.objects.filter(pk=task.pk).update(state="cancelled")
    assert adapter.reconcile(message, touch.provider_ref).status == SendStatus.SKIPPED_POLICY
    CallTask.objects.all().delete()
    assert adapter.reconcile(message, touch.provider_ref) is None  # no task: the dispatcher sends again


def test_a_cancelled_call_skips_its_touch():
    enrolled_lead()
    tick(T0.replace(hour=10))
    task = CallTask.objects.get()
    assert call_task_cancel(task_ids=[task.pk], now=T0.replace(hour=11)) == 1
    assert CallTask.objects.get().state == "cancelled"
    touch = Touch.objects.get()
    assert touch.state == "skipped" and touch.skip_reason == "policy:cancelled"
    assert call_task_cancel(task_ids=[task.pk], now=T0.replace(hour=11)) == 0


def test_a_call_back_opens_the_next_task_for_the_same_person():
    sdr = UserFactory(username="sdr_he")
    lead = enrolled_lead(owner=sdr)
    tick(T0.replace(hour=10))
    task = CallTask.objects.get()
    later = T0 + timedelta(days=2)
    follow = call_log(
        task=task,
        lead=lead,
        outcome="call_back",
        notes="周四再打",
        call_back_at=later,
        by=sdr,
        now=T0.replace(hour=12),
    )
    assert follow is not None and follow.state == "open" and follow.due_at == later
    assert follow.assignee_id == sdr.pk and follow.touch_id is None and follow.script == task.script
    assert Touch.objects.get().state == "sent"
    with pytest.raises(CallLogError):
        call_log(task=follow, lead=lead, outcome="call_back", notes="", call_back_at=None, by=sdr, now=later)


def test_a_call_made_without_a_task_is_still_logged():
    lead = LeadFactory()
    at = T0.replace(hour=16)
    call_log(task=None, lead=lead, outcome="no_answer", notes="", call_back_at=None, by=None, now=at)
    assert Event.objects.get(lead=lead, type="call_logged").properties["outcome"] == "no_answer"
    other = CallTask.objects.create(lead=LeadFactory(), due_at=at)
    with pytest.raises(CallLogError):
        call_log(task=other, lead=lead, outcome="connected", notes="", call_back_at=None, by=None, now=at)


def test_the_admin_lists_call_tasks_and_logs_an_outcome(admin_client):
    sdr = UserFactory(username="sdr_qian")
    lead = enrolled_lead(owner=sdr)
    tick(T0.replace(hour=10))
    task = CallTask.objects.get()
    page = admin_client.get(f"/admin/nurture_channels/calltask/?state=open&assignee__id__exact={sdr.pk}")
    assert page.status_code == 200 and page.context["cl"].result_count == 1
    answer = admin_client.post(
        f"/admin/nurture_channels/calltask/{task.pk}/change/",
        {
            "assignee": sdr.pk,
            "script": task.script,
            "due_at_0": "2027-04-06",
            "due_at_1": "10:00:00",
            "outcome": "connected",
            "notes": "同意演示",
            "call_back_at_0": "",
            "call_back_at_1": "",
        },
        follow=True,
    )
    assert answer.status_code == 200
    task.refresh_from_db()
    assert task.state == "done" and task.notes == "同意演示"
    assert Event.objects.get(lead=lead, type="call_logged").properties["by"] == "admin"
    assert Touch.objects.get().state == "sent"
    other = CallTask.objects.create(lead=lead, due_at=T0)
    admin_client.post(
        "/admin/nurture_channels/calltask/", {"action": "log_no_answer", "_selected_action": [other.pk]}
    )
    assert CallTask.objects.get(pk=other.pk).outcome == "no_answer"


def test_a_sequence_staff_task_on_the_call_channel_is_a_call_task_too():
    sdr = UserFactory(username="sdr_wang")
    lead = LeadFactory(name="李娜", owner=sdr)
    seq = sequence_save(
        data={"name": "回访任务", "status": "active", "quiet_hours": None},
        steps=[{"day": 0, "send_time": "10:00", "channel": "call", "mode": "task", "text": "按 BANT 回访"}],
    )
    sequence_enroll(sequence=seq, lead_ids=[lead.pk], anchor_at=T0, now=T0)
    tick(T0.replace(hour=10))
    tick(T0.replace(hour=10, minute=1))
    touch = Touch.objects.get()
    task = CallTask.objects.get()
    assert touch.state == "task_open" and touch.assignee_id == sdr.pk
    assert (task.touch_id, task.assignee_id, task.script) == (touch.pk, sdr.pk, "按 BANT 回访")

    # Logging the call closes the sequence's task as well.
    call_log(task=task, lead=lead, outcome="connected", by=sdr, now=T0.replace(hour=11))
    touch.refresh_from_db()
    assert touch.state == "task_done"


def test_marking_the_staff_task_done_closes_its_call_task():
    from sequences.services import task_done

    lead = LeadFactory()
    seq = sequence_save(
        data={"name": "回访任务", "status": "active", "quiet_hours": None},
        steps=[{"day": 0, "send_time": None, "channel": "call", "mode": "task", "text": "回访"}],
    )
    sequence_enroll(sequence=seq, lead_ids=[lead.pk], anchor_at=T0, now=T0)
    tick(T0)
    assert task_done(touch=Touch.objects.get(), now=T0 + timedelta(hours=1))
    task = CallTask.objects.get()
    assert task.state == "done" and task.outcome == ""
