"""Who sees and does what: an SDR sees the unassigned hot queue and its own leads, never another SDR's,
on any URL; managers see the team; marketers and anonymous users are kept out."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tests.workspace.conftest import hot_lead
from workspace.services import lead_claim

pytestmark = pytest.mark.django_db

LEAD_POSTS = {
    "claim": {},
    "release": {},
    "call": {"outcome": "connected", "notes": "x"},
    "note": {"text": "hello"},
    "bant": {"budget": "on"},
    "sql": {"override_reason": "boss said so"},
    "close": {"kind": "invalid"},
}


def test_anonymous_is_sent_to_log_in(client):
    response = client.get(reverse("workspace:queue"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("workspace:login"))


def test_marketer_gets_403(client_for, marketer):
    assert client_for(marketer).get(reverse("workspace:queue")).status_code == 403


def test_sdr_cannot_read_or_act_on_another_sdrs_lead(client_for, sdr_a, sdr_b):
    lead = hot_lead(name="李雷")
    lead_claim(lead=lead, sdr=sdr_b)
    a = client_for(sdr_a)
    assert a.get(reverse("workspace:lead", args=[lead.pk])).status_code == 403
    for name, data in LEAD_POSTS.items():
        response = a.post(reverse(f"workspace:{name}", args=[lead.pk]), data)
        # Claiming a taken lead is refused with a message, not done; everything else is 403.
        if name == "claim":
            assert response.status_code == 302
        else:
            assert response.status_code == 403, name
    lead.refresh_from_db()
    assert lead.owner == sdr_b
    assert lead.stage == "mql"
    assert not lead.notes.exists()
    assert not lead.events.filter(type="call_logged").exists()
    # Nor does A see B's lead in its queue.
    body = a.get(reverse("workspace:queue")).content.decode()
    assert "李雷" not in body


def test_sdr_sees_unassigned_hot_leads_and_its_own(client_for, sdr_a, sdr_b):
    free = hot_lead(name="韩梅梅")
    mine = hot_lead(name="王小明", score=95)
    lead_claim(lead=mine, sdr=sdr_a)
    cold = hot_lead(name="冷线索", temperature="cold")
    a = client_for(sdr_a)
    body = a.get(reverse("workspace:queue")).content.decode()
    assert "韩梅梅" in body and "王小明" in body and "冷线索" not in body
    assert a.get(reverse("workspace:lead", args=[free.pk])).status_code == 200
    assert a.get(reverse("workspace:lead", args=[mine.pk])).status_code == 200
    # A cold lead nobody owns is not in the queue: not A's to read.
    assert a.get(reverse("workspace:lead", args=[cold.pk])).status_code == 403
    # An unassigned lead can be read but not worked before claiming it.
    assert a.post(reverse("workspace:note", args=[free.pk]), {"text": "x"}).status_code == 403


def test_manager_sees_and_acts_on_the_team(client_for, sdr_a, manager):
    lead = hot_lead(name="张伟")
    lead_claim(lead=lead, sdr=sdr_a)
    m = client_for(manager)
    assert "张伟" in m.get(reverse("workspace:queue")).content.decode()
    assert m.get(reverse("workspace:lead", args=[lead.pk])).status_code == 200
    assert m.get(reverse("workspace:team")).status_code == 200
    assert m.post(reverse("workspace:note", args=[lead.pk]), {"text": "经理备注"}).status_code == 302
    assert lead.notes.get().text == "经理备注"


def test_sdr_cannot_open_the_team_or_reassign(client_for, sdr_a, sdr_b):
    lead = hot_lead()
    lead_claim(lead=lead, sdr=sdr_b)
    a = client_for(sdr_a)
    assert a.get(reverse("workspace:team")).status_code == 403
    assert a.post(reverse("workspace:reassign"), {"lead": [lead.pk], "sdr": sdr_a.pk}).status_code == 403
    lead.refresh_from_db()
    assert lead.owner == sdr_b


def test_manager_reassigns_from_the_team_page_and_the_sdrs_are_told(client_for, sdr_a, sdr_b, manager):
    from workspace.models import Assignment, Notification

    lead = hot_lead(name="周杰")
    lead_claim(lead=lead, sdr=sdr_a)
    m = client_for(manager)
    response = m.post(
        reverse("workspace:reassign"), {"lead": [lead.pk], "sdr": sdr_b.pk, "next": "https://evil.example/"}
    )
    assert response["Location"] == reverse("workspace:team")  # no open redirect
    lead.refresh_from_db()
    assert lead.owner == sdr_b
    current = Assignment.objects.get(lead=lead, ended_at__isnull=True)
    assert (current.sdr, current.via, current.by) == (sdr_b, "manager", manager)
    assert Notification.objects.filter(user=sdr_a, kind="reassigned").exists()
    assert Notification.objects.filter(user=sdr_b, kind="assigned").exists()
    # A's inbox says so; A no longer reads the lead.
    assert "周杰" in client_for(sdr_a).get(reverse("workspace:inbox")).content.decode()
    assert client_for(sdr_a).get(reverse("workspace:lead", args=[lead.pk])).status_code == 403


def test_the_team_table_counts_what_each_sdr_did(client_for, sdr_a, sdr_b, manager):
    from leads.models import RecycleReason
    from workspace.services import lead_mark_sql, lead_return_to_nurture

    qualified, returned, late = hot_lead(), hot_lead(), hot_lead()
    for lead in (qualified, returned):
        lead_claim(lead=lead, sdr=sdr_a)
    lead_claim(lead=late, sdr=sdr_b)
    lead_mark_sql(lead=qualified, by=sdr_a, override_reason="老板拍板")
    lead_return_to_nurture(lead=returned, by=sdr_a, reason=RecycleReason.objects.get(code="no_budget"))
    body = client_for(manager).get(reverse("workspace:team"), HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    row_a = body.split('data-sdr="sdr_a"')[1].split("</tr>")[0]
    assert "暂无预算 1" in row_a
    assert "100%" in row_a  # both followed up (qualified, returned) within the SLA
