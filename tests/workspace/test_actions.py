"""What an SDR does on a lead: claim (two at once: one wins), log calls, qualify (BANT or an override)
with `lead.sql` to the CRM, return to nurturing into the reason's sequence, close as unreachable or
invalid; and the query counts of the queue, the lead page and the tick."""

from __future__ import annotations

import threading

import pytest
from django.db import connection
from django.urls import reverse

from leads.models import Lead, RecycleReason
from nurture.models import OutboxMessage
from sequences.models import Enrollment
from sequences.services import sequence_save
from tests.factories import EventFactory
from tests.workspace.conftest import hot_lead
from workspace.models import Assignment
from workspace.services import ClaimLost, WorkspaceError, lead_claim, lead_mark_sql, workspace_tick

pytestmark = pytest.mark.django_db


@pytest.mark.django_db(transaction=True)
def test_two_sdrs_claiming_at_once_one_wins_the_other_is_told(sdr_a, sdr_b):
    if connection.vendor != "postgresql":
        pytest.skip("row locks: PostgreSQL")
    lead = hot_lead()
    barrier = threading.Barrier(2)
    results: dict[str, str] = {}

    def claim(sdr):
        try:
            barrier.wait()
            lead_claim(lead=Lead.objects.get(pk=lead.pk), sdr=sdr)
            results[sdr.username] = "won"
        except ClaimLost as exc:
            results[sdr.username] = exc.message
        finally:
            connection.close()

    for _ in range(5):  # a few rounds: the race is real each time
        Assignment.objects.filter(lead=lead).delete()
        Lead.objects.filter(pk=lead.pk).update(owner=None)
        results.clear()
        threads = [threading.Thread(target=claim, args=(s,)) for s in (sdr_a, sdr_b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert list(results.values()).count("won") == 1
        loser = next(name for name, r in results.items() if r != "won")
        assert "Already claimed" in results[loser] or "已被" in results[loser]
        assert Assignment.objects.filter(lead=lead, ended_at__isnull=True).count() == 1
        assert Lead.objects.get(pk=lead.pk).owner.username != loser


def test_claim_in_the_browser_flow_tells_the_loser(client_for, sdr_a, sdr_b):
    lead = hot_lead()
    assert client_for(sdr_b).post(reverse("workspace:claim", args=[lead.pk])).status_code == 302
    response = client_for(sdr_a).post(
        reverse("workspace:claim", args=[lead.pk]), follow=True, HTTP_ACCEPT_LANGUAGE="en"
    )
    assert "Already claimed by" in response.content.decode()


def test_mark_sql_needs_bant_3_or_a_reason_and_tells_the_crm(client_for, sdr_a):
    lead = hot_lead(bant_budget=True, bant_need=True)
    lead_claim(lead=lead, sdr=sdr_a)
    c = client_for(sdr_a)
    response = c.post(reverse("workspace:sql", args=[lead.pk]), follow=True, HTTP_ACCEPT_LANGUAGE="en")
    assert "BANT is 2/4" in response.content.decode()
    assert Lead.objects.get(pk=lead.pk).stage == "mql"
    c.post(reverse("workspace:bant", args=[lead.pk]), {"budget": "on", "need": "on", "timeline": "on"})
    lead.refresh_from_db()
    assert lead.bant_count == 3
    c.post(reverse("workspace:sql", args=[lead.pk]))
    lead.refresh_from_db()
    assert lead.stage == "sql"
    assert lead.stage_changes.get(to_stage="sql").by == sdr_a
    assert OutboxMessage.objects.filter(type="lead.sql", lead_id=lead.pk).count() == 1
    assert Assignment.objects.get(lead=lead).end_reason == "sql"


def test_an_override_reason_qualifies_below_bant_3(sdr_a):
    lead = hot_lead()
    lead_claim(lead=lead, sdr=sdr_a)
    with pytest.raises(WorkspaceError):
        lead_mark_sql(lead=lead, by=sdr_a)
    lead_mark_sql(lead=lead, by=sdr_a, override_reason="客户CEO亲自来电，预算已批")
    lead.refresh_from_db()
    assert lead.stage == "sql"
    assert "客户CEO亲自来电" in lead.stage_changes.get(to_stage="sql").reason


def test_return_to_nurture_enrolls_the_reasons_sequence(client_for, sdr_a):
    later = sequence_save(data={"name": "下季度再联系培育", "status": "active"}, steps=[{"day": 30}])
    other = sequence_save(data={"name": "竞品客户培育", "status": "active"}, steps=[{"day": 7}])
    RecycleReason.objects.filter(code="timing_later").update(sequence=later)
    RecycleReason.objects.filter(code="competitor").update(sequence=other)
    lead = hot_lead()
    lead_claim(lead=lead, sdr=sdr_a)
    reason = RecycleReason.objects.get(code="timing_later")
    c = client_for(sdr_a)
    c.post(reverse("workspace:return", args=[lead.pk]), {"reason": reason.pk, "note": "明年Q1再谈"})
    lead.refresh_from_db()
    assert lead.stage == "recycled"
    assert lead.owner is None
    assert lead.lead_tags.filter(tag__name="recycle:timing_later").exists()
    assert list(Enrollment.objects.filter(lead=lead).values_list("sequence__name", flat=True)) == [
        "下季度再联系培育"
    ]
    assert Assignment.objects.get(lead=lead).end_reason == "returned"
    assert "明年Q1再谈" in lead.notes.get().text
    # A lead page of a lead no longer the SDR's (back with marketing, not hot): 403.
    Lead.objects.filter(pk=lead.pk).update(temperature="warm")
    assert c.get(reverse("workspace:lead", args=[lead.pk])).status_code == 403


def test_the_return_reasons_are_the_marketers_list(client_for, sdr_a):
    RecycleReason.objects.create(code="merger", label="公司并购中", tag_name="recycle:merger", position=5)
    RecycleReason.objects.filter(code="no_need").update(active=False)
    lead = hot_lead()
    lead_claim(lead=lead, sdr=sdr_a)
    body = client_for(sdr_a).get(reverse("workspace:lead", args=[lead.pk])).content.decode()
    assert "公司并购中" in body and "暂无预算" in body and "暂无需求" not in body


def test_unreachable_and_invalid(client_for, sdr_a):
    a, b = hot_lead(), hot_lead()
    for lead in (a, b):
        lead_claim(lead=lead, sdr=sdr_a)
    c = client_for(sdr_a)
    c.post(reverse("workspace:close", args=[a.pk]), {"kind": "unreachable"})
    c.post(reverse("workspace:close", args=[b.pk]), {"kind": "invalid"})
    a.refresh_from_db()
    b.refresh_from_db()
    assert (a.stage, a.owner, a.do_not_contact) == ("recycled", None, False)
    assert (b.stage, b.owner, b.do_not_contact) == ("lost", None, True)
    assert a.lead_tags.filter(tag__name="线索:无法联系").exists()


def test_log_a_call_back_opens_a_task(client_for, sdr_a):
    lead = hot_lead()
    lead_claim(lead=lead, sdr=sdr_a)
    c = client_for(sdr_a)
    c.post(
        reverse("workspace:call", args=[lead.pk]),
        {"outcome": "call_back", "notes": "下周二下午再打", "call_back_at": "2030-01-08T15:00"},
    )
    event = lead.events.get(type="call_logged")
    assert event.properties["outcome"] == "call_back" and event.properties["by"] == "sdr_a"
    task = lead.call_tasks.get(state="open")
    assert task.assignee == sdr_a
    page = c.get(reverse("workspace:lead", args=[lead.pk])).content.decode()
    assert "下周二下午再打" in page
    # A call back needs a time; the error names it and nothing is logged.
    response = c.post(reverse("workspace:call", args=[lead.pk]), {"outcome": "call_back"}, follow=True)
    assert lead.events.filter(type="call_logged").count() == 1
    assert response.status_code == 200


def test_queue_and_lead_page_queries_are_bounded(client_for, sdr_a, django_assert_max_num_queries):
    leads = [hot_lead(score=80 + i) for i in range(30)]
    for lead in leads[:10]:
        lead_claim(lead=lead, sdr=sdr_a)
        EventFactory.create_batch(5, lead=lead, type="content_viewed", properties={"title": "线上获客白皮书"})
    c = client_for(sdr_a)
    with django_assert_max_num_queries(25):
        assert c.get(reverse("workspace:queue")).status_code == 200
    with django_assert_max_num_queries(40):
        assert c.get(reverse("workspace:lead", args=[leads[0].pk])).status_code == 200


def test_the_tick_queries_do_not_grow_with_the_leads(sdr_a, sdr_b, manager, django_assert_max_num_queries):
    from tests.workspace.conftest import at

    for _ in range(20):
        lead_claim(lead=hot_lead(), sdr=sdr_a)
    workspace_tick(at("2030-01-07 10:00"))  # everything breaches at once
    with django_assert_max_num_queries(30):
        workspace_tick(at("2030-01-07 10:01"))
