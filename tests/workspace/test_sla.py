"""The SLA in the tick: follow-up within N working hours of assignment, a warning before, the breach
flagged and escalated, reassignment M working hours later, penalty periods — with the clock pinned."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine

from leads.models import Lead
from nurture.models import OutboxMessage
from tests.workspace.conftest import at, hot_lead, member
from workspace.models import Assignment, Notification, SdrProfile
from workspace.services import (
    WorkspaceError,
    lead_call_log,
    lead_claim,
    leads_assign,
    sdrs_for_round_robin,
    workspace_settings_get,
    workspace_tick,
)

pytestmark = pytest.mark.django_db


def claim_at(lead, sdr, when):
    with time_machine.travel(when, tick=False):
        return lead_claim(lead=lead, sdr=sdr)


def test_friday_afternoon_claim_is_due_monday_morning(sdr_a):
    a = claim_at(hot_lead(), sdr_a, at("2026-12-11 16:00"))  # Friday
    assert a.first_touch_due == at("2026-12-14 11:00")
    # Over the weekend nothing breaches.
    workspace_tick(at("2026-12-13 23:00"))
    a.refresh_from_db()
    assert a.breached_at is None
    workspace_tick(at("2026-12-14 11:01"))
    a.refresh_from_db()
    assert a.breached_at == at("2026-12-14 11:01")


def test_the_working_hours_are_editable(sdr_a):
    s = workspace_settings_get()
    s.sla_working_hours = 2
    s.work_start, s.work_end = s.work_start.replace(hour=10), s.work_end.replace(hour=19)
    s.save()
    a = claim_at(hot_lead(), sdr_a, at("2026-12-07 08:00"))
    assert a.first_touch_due == at("2026-12-07 12:00")


def test_a_logged_call_is_a_follow_up_and_nothing_breaches(sdr_a, manager):
    lead = hot_lead()
    a = claim_at(lead, sdr_a, at("2026-12-07 10:00"))
    with time_machine.travel(at("2026-12-07 11:00"), tick=False):
        lead_call_log(lead=lead, by=sdr_a, outcome="no_answer", notes="没人接")
    a.refresh_from_db()
    assert a.followed_up_at == at("2026-12-07 11:00")
    workspace_tick(at("2026-12-08 10:00"))
    a.refresh_from_db()
    assert a.breached_at is None
    assert not Notification.objects.filter(kind__in=["sla_breached", "escalation"]).exists()


def test_a_message_sent_on_wecom_found_by_the_tick_counts(sdr_a):
    from leads.services import EventInput, event_record_bulk

    lead = hot_lead()
    a = claim_at(lead, sdr_a, at("2026-12-07 10:00"))
    event_record_bulk(
        items=[
            EventInput(
                type="message_out",
                occurred_at=at("2026-12-07 10:30"),
                properties={"text": "您好"},
                event_id="m1",
                lead_id=lead.pk,
                identity=None,
                source="wecom",
            )
        ],
        now=at("2026-12-07 10:30"),
    )
    assert workspace_tick(at("2026-12-07 10:31"))["followed_up"] == 1
    a.refresh_from_db()
    assert a.followed_up_at == at("2026-12-07 10:30")


def test_warning_breach_escalation_and_reassignment(sdr_a, sdr_b, manager):
    lead = hot_lead(name="刘洋", company="华信科技")
    a = claim_at(lead, sdr_a, at("2026-12-07 10:00"))  # due 14:00, reassigned 4 working hours later: 18:00
    workspace_tick(at("2026-12-07 13:10"))
    assert Notification.objects.get(kind="sla_warning").user == sdr_a

    report = workspace_tick(at("2026-12-07 14:01"))
    assert report["breached"] == 1
    a.refresh_from_db()
    assert a.breached_at == at("2026-12-07 14:01")
    assert a.reassign_at == at("2026-12-07 18:00")
    assert Notification.objects.get(kind="sla_breached").user == sdr_a
    escalation = Notification.objects.get(kind="escalation")
    assert escalation.user == manager and "刘洋" in escalation.text
    assert OutboxMessage.objects.filter(type="lead.sla_breached", lead_id=lead.pk).count() == 1

    # The same instant again, or a later minute before 18:00: nothing new.
    workspace_tick(at("2026-12-07 14:01"))
    workspace_tick(at("2026-12-07 17:59"))
    assert Notification.objects.filter(kind__in=["sla_breached", "escalation"]).count() == 2
    assert Lead.objects.get(pk=lead.pk).owner == sdr_a

    assert workspace_tick(at("2026-12-07 18:00"))["reassigned"] == 1
    lead.refresh_from_db()
    assert lead.owner == sdr_b
    a.refresh_from_db()
    assert a.end_reason == "sla" and a.ended_at == at("2026-12-07 18:00")
    new = Assignment.objects.get(lead=lead, ended_at__isnull=True)
    assert new.sdr == sdr_b and new.via == "sla"
    assert new.first_touch_due == at("2026-12-08 13:00")  # after hours: 4 working hours from tomorrow 09:00
    assert Notification.objects.filter(user=sdr_b, kind="assigned").exists()
    assert Notification.objects.filter(user=sdr_a, kind="reassigned").exists()


def test_a_follow_up_after_the_breach_stops_the_reassignment(sdr_a, sdr_b, manager):
    lead = hot_lead()
    a = claim_at(lead, sdr_a, at("2026-12-07 10:00"))
    workspace_tick(at("2026-12-07 14:30"))
    with time_machine.travel(at("2026-12-07 15:00"), tick=False):
        lead_call_log(lead=lead, by=sdr_a, outcome="connected")
    workspace_tick(at("2026-12-08 10:00"))
    lead.refresh_from_db()
    a.refresh_from_db()
    assert lead.owner == sdr_a and a.breached_at is not None and a.ended_at is None


def test_k_breaches_in_14_days_stop_new_leads_until_the_window_clears(sdr_a, sdr_b, manager):
    s = workspace_settings_get()
    assert (s.penalty_breaches, s.penalty_window_days) == (3, 14)
    for day in ("2026-12-01", "2026-12-02", "2026-12-03"):
        claim_at(hot_lead(), sdr_a, at(f"{day} 09:00"))
        workspace_tick(at(f"{day} 13:30"))
    assert Assignment.objects.filter(sdr=sdr_a, breached_at__isnull=False).count() == 3

    now = at("2026-12-04 10:00")
    assert [u.username for u in sdrs_for_round_robin(now=now)] == ["sdr_b"]
    with time_machine.travel(now, tick=False), pytest.raises(WorkspaceError):
        lead_claim(lead=hot_lead(), sdr=sdr_a)
    workspace_tick(now)
    # The first breach (12-01 13:30) leaves the window 14 days later: then only two remain.
    assert SdrProfile.objects.get(user=sdr_a).penalty_until == at("2026-12-15 13:30")
    assigned = leads_assign(lead_ids=[hot_lead().pk, hot_lead().pk], via="auto", now=now)
    assert set(assigned.values()) == {sdr_b.pk}

    later = at("2026-12-15 13:31")
    assert {u.username for u in sdrs_for_round_robin(now=later)} == {"sdr_a", "sdr_b"}
    workspace_tick(later)
    assert SdrProfile.objects.get(user=sdr_a).penalty_until is None


def test_auto_assignment_round_robin_skips_unavailable_sdrs(sdr_a, sdr_b):
    member("sdr_c", "sdr")
    SdrProfile.objects.create(user=sdr_b, available=False)
    from scoring.models import LeadScore

    leads = [hot_lead(score=90 - i) for i in range(4)]
    for lead in leads:
        LeadScore.objects.create(
            lead=lead,
            score=lead.score,
            temperature="hot",
            computed_at=at("2026-12-07 09:00"),
            hot_since=at("2026-12-07 09:00"),
        )
    # Unclaimed for less than the configured 30 minutes: left for the SDRs to claim.
    assert "auto_assigned" not in workspace_tick(at("2026-12-07 09:20"))
    assert workspace_tick(at("2026-12-07 09:31"))["auto_assigned"] == 4
    owners = [Lead.objects.get(pk=lead.pk).owner.username for lead in leads]
    assert sorted(owners) == ["sdr_a", "sdr_a", "sdr_c", "sdr_c"]
    assert owners[0] != owners[1]  # in turn, not in blocks


def test_two_ticks_at_once_notify_once(sdr_a, manager):
    claim_at(hot_lead(), sdr_a, at("2026-12-07 10:00"))
    workspace_tick(at("2026-12-07 14:01"))
    # A second tick at the same instant finds nothing left to do.
    assert workspace_tick(at("2026-12-07 14:01")).get("breached", 0) == 0
    assert Notification.objects.count() == 3  # assigned, breached (SDR), escalation (manager)


def test_reassign_due_uses_working_hours_after_the_deadline(sdr_a, sdr_b, manager):
    a = claim_at(hot_lead(), sdr_a, at("2026-12-11 15:00"))  # Friday: due Monday 10:00
    assert a.first_touch_due == at("2026-12-14 10:00")
    workspace_tick(at("2026-12-14 10:05"))
    a.refresh_from_db()
    assert a.reassign_at == at("2026-12-14 14:00")
    assert a.reassign_at - a.first_touch_due == timedelta(hours=4)


def test_a_crm_write_back_or_another_owner_ends_the_assignment_and_its_clock(sdr_a, sdr_b, manager):
    from leads.services import lead_stage_set, lead_update

    won, moved = hot_lead(), hot_lead()
    claim_at(won, sdr_a, at("2026-12-07 10:00"))
    claim_at(moved, sdr_a, at("2026-12-07 10:00"))
    lead_stage_set(lead=won, stage="sql", reason="CRM: opportunity", actor="crm", now=at("2026-12-07 11:00"))
    lead_update(lead=moved, data={"owner": sdr_b}, now=at("2026-12-07 11:00"))
    assert workspace_tick(at("2026-12-07 11:01"))["ended"] == 2
    assert Assignment.objects.get(lead=won).end_reason == "sql"
    assert Assignment.objects.get(lead=moved).end_reason == "reassigned"
    workspace_tick(at("2026-12-07 15:00"))  # past the deadline: nobody is flagged for leads no longer theirs
    assert not Assignment.objects.filter(breached_at__isnull=False).exists()


def test_open_tasks_follow_the_lead_to_its_new_sdr(sdr_a, sdr_b, manager):
    from channels.models import CallTask
    from workspace.services import leads_reassign

    lead = hot_lead()
    claim_at(lead, sdr_a, at("2026-12-07 10:00"))
    task = CallTask.objects.create(
        lead=lead, assignee=sdr_a, due_at=at("2026-12-08 10:00"), script="确认预算"
    )
    with time_machine.travel(at("2026-12-07 11:00"), tick=False):
        leads_reassign(lead_ids=[lead.pk], sdr=sdr_b, by=manager)
    task.refresh_from_db()
    assert task.assignee == sdr_b
