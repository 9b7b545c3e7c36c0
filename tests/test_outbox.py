"""Transitions are written to the outbox with the change itself, and only when the change commits."""

import io
from decimal import Decimal

import pytest
from django.core.management import call_command

from leads.services import lead_stage_set, lead_tags_change
from nurture.models import OutboxMessage
from tests.factories import LeadFactory

pytestmark = pytest.mark.django_db


def _messages(lead):
    return list(OutboxMessage.objects.filter(lead_id=lead.pk).order_by("id").values_list("type", "data"))


def test_a_crm_write_back_announces_the_stage_change():
    lead = LeadFactory(stage="mql")
    lead_stage_set(lead=lead, stage="sql", reason="BANT 3/4")
    lead_stage_set(lead=lead, stage="won", reason="签约", amount=Decimal("88000"))
    lead_stage_set(lead=lead, stage="won", reason="签约", amount=Decimal("88000"))  # a repeat: nothing new
    assert _messages(lead) == [
        ("lead.stage_changed", {"from": "mql", "to": "sql", "reason": "BANT 3/4"}),
        ("lead.sql", {"reason": "BANT 3/4"}),
        ("lead.stage_changed", {"from": "sql", "to": "won", "reason": "签约", "amount": "88000"}),
    ]


def test_the_tick_announces_pool_joins_and_new_mqls():
    lead = LeadFactory(industry="制造", bant_timeline=True, stage="rl")
    lead_tags_change(lead=lead, add=["need:全渠道获客"], now=lead.created_at)
    call_command("tick", "--now", "2026-11-23T10:00:00+08:00", stdout=io.StringIO())
    types = [t for t, _ in _messages(lead)]
    assert types.count("pool.joined") == 2
    assert {d["pool"] for t, d in _messages(lead) if t == "pool.joined"} == {"mil", "mql"}
    assert ("lead.mql", {"reason": "joined pool mql"}) in _messages(lead)
    assert ("lead.stage_changed", {"from": "mil", "to": "mql", "reason": "joined pool mql"}) in _messages(
        lead
    )
    # The same tick again announces nothing new.
    before = OutboxMessage.objects.count()
    call_command("tick", "--now", "2026-11-23T10:00:00+08:00", stdout=io.StringIO())
    assert OutboxMessage.objects.count() == before


def test_a_crashed_evaluation_announces_nothing(monkeypatch):
    import leads.pools as pools_module
    from leads.pools import leads_mark_dirty, pools_evaluate_dirty

    call_command("tick", "--now", "2026-11-23T10:00:00+08:00", stdout=io.StringIO())
    lead = LeadFactory(phone="+8613900000000")
    leads_mark_dirty(lead_ids=[lead.pk])

    def crash(**kwargs):
        raise RuntimeError("worker killed")

    # After the batch's writes (the run's record comes last), so they must roll back.
    monkeypatch.setattr(pools_module, "_record", crash)
    with pytest.raises(RuntimeError):
        pools_evaluate_dirty(now=lead.created_at)
    assert _messages(lead) == []
