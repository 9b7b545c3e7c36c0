"""Pools: set-based membership with history, families, dirty-only evaluation, stage following."""

from datetime import timedelta

import pytest
from django.utils.timezone import now as timezone_now

from leads.models import DirtyLead, Lead, Pool, PoolMembership, PoolRun, StageChange
from leads.pools import leads_mark_dirty, pool_check, pool_evaluate_full, pools_evaluate_dirty, pools_in_order
from leads.rules import RuleError
from leads.services import lead_tags_change
from tests.factories import LeadFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_default_pools(db):
    # These tests build their own pools; the default ones (a data migration) would be evaluated too.
    Pool.objects.all().delete()


def _pool(slug, rule, **kwargs):
    pool_check(slug=slug, rule=rule, family=kwargs.get("family", ""))
    return Pool.objects.create(slug=slug, name=slug, rule=rule, **kwargs)


def _members(pool):
    return set(
        PoolMembership.objects.filter(pool=pool, left_at__isnull=True).values_list("lead_id", flat=True)
    )


def test_join_leave_rejoin_keeps_history():
    now = timezone_now()
    pool = _pool("manufacturing", {"field": "industry", "op": "eq", "value": "制造"})
    a = LeadFactory(industry="制造")
    b = LeadFactory(industry="教育")
    run = pool_evaluate_full(pool=pool, now=now)
    assert (run.joined, run.left, run.size) == (1, 0, 1)
    assert _members(pool) == {a.pk}
    # Evaluating again changes nothing.
    again = pool_evaluate_full(pool=pool, now=now)
    assert (again.joined, again.left) == (0, 0)

    Lead.objects.filter(pk=a.pk).update(industry="零售")
    Lead.objects.filter(pk=b.pk).update(industry="制造")
    run = pool_evaluate_full(pool=pool, now=now + timedelta(minutes=1))
    assert (run.joined, run.left) == (1, 1)
    Lead.objects.filter(pk=a.pk).update(industry="制造")
    pool_evaluate_full(pool=pool, now=now + timedelta(minutes=2))
    rows = list(
        PoolMembership.objects.filter(pool=pool, lead=a)
        .order_by("joined_at")
        .values_list("joined_at", "left_at")
    )
    assert len(rows) == 2 and rows[0][1] is not None and rows[1][1] is None
    assert PoolRun.objects.filter(pool=pool, kind="full").count() == 4


def test_full_evaluation_in_small_id_ranges_gives_the_same_members():
    now = timezone_now()
    pool = _pool("scored", {"score_gte": 50})
    leads = [LeadFactory(score=score) for score in (10, 60, 70, 20, 90, 55, 5)]
    pool_evaluate_full(pool=pool, now=now, batch=2)
    assert _members(pool) == {lead.pk for lead in leads if lead.score >= 50}


def test_family_puts_a_lead_in_the_first_tier_it_meets():
    now = timezone_now()
    high = _pool("high", {"tag": "need:*"}, family="value", priority=10)
    medium = _pool(
        "medium", {"field": "industry", "op": "is_set", "value": True}, family="value", priority=20
    )
    low = _pool("low", {"field": "phone", "op": "is_set", "value": True}, family="value", priority=30)
    a = LeadFactory(industry="制造")
    b = LeadFactory(industry="制造")
    c = LeadFactory(industry="")
    lead_tags_change(lead=a, add=["need:私域运营"], now=now)
    pools = [high, medium, low]
    for pool in pools:
        pool_evaluate_full(pool=pool, now=now, pools=pools)
    assert (_members(high), _members(medium), _members(low)) == ({a.pk}, {b.pk}, {c.pk})


def test_only_dirty_leads_are_evaluated_and_a_crash_leaves_them_queued(monkeypatch):
    now = timezone_now()
    pool = _pool("scored", {"score_gte": 50})
    a, b = LeadFactory(score=80), LeadFactory(score=80)
    leads_mark_dirty(lead_ids=[a.pk])
    assert pools_evaluate_dirty(now=now) == {"evaluated": 1, "joined": 1, "left": 0}
    assert _members(pool) == {a.pk}  # b changed too but nobody said so
    assert not DirtyLead.objects.exists()

    Lead.objects.filter(pk=a.pk).update(score=10)
    leads_mark_dirty(lead_ids=[a.pk, b.pk])
    import leads.pools as pools_module

    def crash(**kwargs):
        raise RuntimeError("worker killed")

    monkeypatch.setattr(pools_module, "_stages_follow", crash)
    with pytest.raises(RuntimeError):
        pools_evaluate_dirty(now=now)
    assert set(DirtyLead.objects.values_list("lead_id", flat=True)) == {a.pk, b.pk}
    assert _members(pool) == {a.pk}
    monkeypatch.undo()
    assert pools_evaluate_dirty(now=now) == {"evaluated": 2, "joined": 1, "left": 1}
    assert _members(pool) == {b.pk}


def test_joining_mil_and_mql_moves_the_stage_forward_only():
    now = timezone_now()
    mil = _pool("mil", {"field": "phone", "op": "is_set", "value": True})
    mql = _pool("mql", {"all": [{"pool": "mil"}, {"bant_gte": 2}]})
    raw = LeadFactory(stage="rl")
    qualified = LeadFactory(stage="rl", bant_budget=True, bant_need=True)
    won = LeadFactory(stage="won", bant_budget=True, bant_need=True)
    pools = pools_in_order([mql, mil])
    assert [p.slug for p in pools] == ["mil", "mql"]
    for pool in pools:
        pool_evaluate_full(pool=pool, now=now, pools=pools)
    stages = dict(Lead.objects.values_list("pk", "stage"))
    assert (stages[raw.pk], stages[qualified.pk], stages[won.pk]) == ("mil", "mql", "won")
    history = list(
        StageChange.objects.filter(lead=qualified).order_by("id").values_list("from_stage", "to_stage")
    )
    assert history == [("rl", "mil"), ("mil", "mql")]


def test_cycles_and_unknown_pools_are_refused():
    _pool("a", {"score_gte": 1})
    _pool("b", {"pool": "a"})
    Pool.objects.filter(slug="a").update(rule={"pool": "b"})
    with pytest.raises(RuleError, match="cycle"):
        pool_check(slug="c", rule={"pool": "a"})
    with pytest.raises(RuleError, match="no pool 'nope'"):
        pool_check(slug="d", rule={"pool": "nope"})
    with pytest.raises(RuleError, match="cycle: e → e"):
        pool_check(slug="e", rule={"not": {"pool": "e"}})


def test_merging_two_members_of_one_pool_keeps_one_open_membership():
    from leads.services import lead_merge

    now = timezone_now()
    pool = _pool("scored", {"score_gte": 50})
    a, b = LeadFactory(score=80), LeadFactory(score=90)
    pool_evaluate_full(pool=pool, now=now)
    lead_merge(survivor=a, merged=b, why="same person", now=now + timedelta(minutes=1))
    rows = PoolMembership.objects.filter(pool=pool, lead=a)
    assert rows.count() == 2 and rows.filter(left_at__isnull=True).count() == 1
    assert pools_evaluate_dirty(now=now + timedelta(minutes=2))["evaluated"] == 1
    assert _members(pool) == {a.pk}
