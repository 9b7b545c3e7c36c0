"""Pools: set-based membership with history, families, dirty-only evaluation, stage following."""

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils.timezone import now as timezone_now

from leads.models import DirtyLead, Lead, Pool, PoolMembership, PoolRun, StageChange
from leads.pools import (
    _batches_at_once,
    leads_mark_dirty,
    pool_check,
    pool_evaluate_full,
    pools_evaluate_dirty,
    pools_in_order,
)
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


def _counts(report):
    # Scoring, which runs first on each batch of dirty leads, adds counts of its own to the report.
    return {key: report[key] for key in ("evaluated", "joined", "left")}


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
    pool = _pool("makers", {"field": "industry", "op": "eq", "value": "制造"})
    a, b = LeadFactory(industry="制造"), LeadFactory(industry="制造")
    leads_mark_dirty(lead_ids=[a.pk])
    assert _counts(pools_evaluate_dirty(now=now)) == {"evaluated": 1, "joined": 1, "left": 0}
    assert _members(pool) == {a.pk}  # b changed too but nobody said so
    assert not DirtyLead.objects.exists()

    Lead.objects.filter(pk=a.pk).update(industry="教育")
    leads_mark_dirty(lead_ids=[a.pk, b.pk])
    import leads.pools as pools_module

    def crash(**kwargs):
        raise RuntimeError("worker killed")

    # After the batch's writes (the run's record comes last), so they must roll back.
    monkeypatch.setattr(pools_module, "_record", crash)
    with pytest.raises(RuntimeError):
        pools_evaluate_dirty(now=now)
    assert set(DirtyLead.objects.values_list("lead_id", flat=True)) == {a.pk, b.pk}
    assert _members(pool) == {a.pk}
    monkeypatch.undo()
    assert _counts(pools_evaluate_dirty(now=now)) == {"evaluated": 2, "joined": 1, "left": 1}
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
    pool = _pool("makers", {"field": "industry", "op": "eq", "value": "制造"})
    a, b = LeadFactory(industry="制造"), LeadFactory(industry="制造")
    pool_evaluate_full(pool=pool, now=now)
    lead_merge(survivor=a, merged=b, why="same person", now=now + timedelta(minutes=1))
    rows = PoolMembership.objects.filter(pool=pool, lead=a)
    assert rows.count() == 2 and rows.filter(left_at__isnull=True).count() == 1
    assert pools_evaluate_dirty(now=now + timedelta(minutes=2))["evaluated"] == 1
    assert _members(pool) == {a.pk}


def test_each_joiner_leaver_and_stage_move_writes_its_outbox_rows_in_the_same_batch():
    from nurture.models import OutboxMessage

    now = timezone_now()
    mil = _pool("mil", {"field": "phone", "op": "is_set", "value": True})
    mql = _pool("mql", {"all": [{"pool": "mil"}, {"bant_gte": 2}]})
    raw = LeadFactory(stage="rl")
    qualified = LeadFactory(stage="rl", bant_budget=True, bant_need=True)
    won = LeadFactory(stage="won", bant_budget=True, bant_need=True)
    nobody = LeadFactory(stage="rl", phone=None)
    pools = pools_in_order([mil, mql])
    for pool in pools:
        pool_evaluate_full(pool=pool, now=now, pools=pools, batch=2)  # several batches

    def rows(lead):
        return list(OutboxMessage.objects.filter(lead_id=lead.pk).order_by("id").values_list("type", "data"))

    assert rows(raw) == [
        ("pool.joined", {"pool": "mil"}),
        ("lead.stage_changed", {"to": "mil", "reason": "joined pool mil", "from": "rl"}),
    ]
    assert rows(qualified) == [
        ("pool.joined", {"pool": "mil"}),
        ("lead.stage_changed", {"to": "mil", "reason": "joined pool mil", "from": "rl"}),
        ("pool.joined", {"pool": "mql"}),
        ("lead.stage_changed", {"to": "mql", "reason": "joined pool mql", "from": "mil"}),
        ("lead.mql", {"reason": "joined pool mql"}),
    ]
    assert rows(won) == [("pool.joined", {"pool": "mil"}), ("pool.joined", {"pool": "mql"})]
    assert rows(nobody) == []
    assert set(OutboxMessage.objects.values_list("occurred_at", flat=True)) == {now}
    assert StageChange.objects.filter(lead=qualified, actor="engine").count() == 2

    Lead.objects.filter(pk=qualified.pk).update(bant_need=False)
    leads_mark_dirty(lead_ids=[qualified.pk])
    later = now + timedelta(minutes=1)
    assert _counts(pools_evaluate_dirty(now=later)) == {"evaluated": 1, "joined": 0, "left": 1}
    assert rows(qualified)[-1] == ("pool.left", {"pool": "mql"})
    assert Lead.objects.get(pk=qualified.pk).stage == "mql"  # leaving never moves the stage back


def test_family_tiers_follow_a_lead_that_moves_between_them_in_one_evaluation():
    now = timezone_now()
    high = _pool("high", {"tag": "need:*"}, family="value", priority=10)
    medium = _pool(
        "medium", {"field": "industry", "op": "is_set", "value": True}, family="value", priority=20
    )
    low = _pool("low", {"field": "phone", "op": "is_set", "value": True}, family="value", priority=30)
    # A lower tier whose slug sorts first still comes after the tiers above it.
    assert [p.slug for p in pools_in_order([low, medium, high])] == ["high", "medium", "low"]
    a = LeadFactory(industry="制造")
    pools = [high, medium, low]
    for pool in pools_in_order(pools):
        pool_evaluate_full(pool=pool, now=now, pools=pools)
    assert (_members(high), _members(medium), _members(low)) == (set(), {a.pk}, set())

    # Up: in one incremental evaluation the lead joins the high tier and leaves the medium one.
    lead_tags_change(lead=a, add=["need:私域运营"], now=now)
    leads_mark_dirty(lead_ids=[a.pk])
    pools_evaluate_dirty(now=now + timedelta(minutes=1))
    assert (_members(high), _members(medium), _members(low)) == ({a.pk}, set(), set())

    # Down two tiers at once.
    lead_tags_change(lead=a, remove=["need:私域运营"], now=now)
    Lead.objects.filter(pk=a.pk).update(industry="")
    leads_mark_dirty(lead_ids=[a.pk])
    pools_evaluate_dirty(now=now + timedelta(minutes=2))
    assert (_members(high), _members(medium), _members(low)) == (set(), set(), {a.pk})
    # And a full pass agrees with the incremental one.
    for pool in pools_in_order(pools):
        run = pool_evaluate_full(pool=pool, now=now + timedelta(minutes=3), pools=pools)
        assert (run.joined, run.left) == (0, 0)


def test_a_pool_node_compiles_to_the_pool_id_and_an_unknown_pool_has_nobody(django_assert_num_queries):
    from leads.rules import rule_compile

    now = timezone_now()
    scored = _pool("scored", {"score_gte": 50})
    inside, outside = LeadFactory(score=80), LeadFactory(score=10)
    pool_evaluate_full(pool=scored, now=now)
    sql = str(Lead.objects.filter(rule_compile({"pool": "scored"}, now=now)).query)
    assert 'leads_pool"' not in sql and f'pool_id" = {scored.pk}' in sql
    assert set(Lead.objects.filter(rule_compile({"pool": "scored"}, now=now))) == {inside}
    assert set(Lead.objects.filter(rule_compile({"not": {"pool": "scored"}}, now=now))) == {outside}
    Pool.objects.filter(pk=scored.pk).delete()
    assert not Lead.objects.filter(rule_compile({"pool": "scored"}, now=now)).exists()
    assert Lead.objects.filter(rule_compile({"not": {"pool": "scored"}}, now=now)).count() == 2


def test_a_full_pass_that_changes_many_rows_analyzes_and_goes_on(monkeypatch):
    import leads.pools as pools_module

    monkeypatch.setattr(pools_module, "ANALYZE_AFTER", 2)
    now = timezone_now()
    mil = _pool("mil", {"field": "phone", "op": "is_set", "value": True})
    leads = [LeadFactory(stage="rl") for _ in range(3)]
    with CaptureQueriesContext(connection) as queries:
        run = pool_evaluate_full(pool=mil, now=now)  # inside the test's transaction, like a tick's caller
    assert (run.joined, run.size) == (3, 3)
    analyzed = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("ANALYZE")]
    if connection.vendor == "postgresql":
        assert analyzed == ["ANALYZE leads_poolmembership"]
    assert set(Lead.objects.values_list("stage", flat=True)) == {"mil"}
    Lead.objects.filter(pk__in=[lead.pk for lead in leads]).update(phone=None)
    assert pool_evaluate_full(pool=mil, now=now + timedelta(minutes=1)).left == 3


def _runs_at(pool, at):
    """A full pass of the pool as of `at` (the schedule reads when the last one started)."""
    PoolRun.objects.create(pool=pool, kind="full", started_at=at, seconds=0, joined=0, left=0, size=0)


def test_every_pool_has_a_nightly_full_pass_and_time_dependent_ones_an_hourly_one(settings):
    from leads.pools import pools_due_for_full

    settings.NURTURE_POOL_NIGHTLY_HOUR = 3
    settings.NURTURE_POOL_TIME_EVERY_MINUTES = 60
    settings.TIME_ZONE = "Asia/Shanghai"
    plain = _pool("scored", {"score_gte": 50})
    silent = _pool("silent", {"days_since": "last_inbound_at", "gte": 14})
    reader = _pool("silent-scored", {"all": [{"pool": "silent"}, {"pool": "scored"}]})
    high = _pool("high", {"event": "form_submitted", "within_days": 7}, family="value", priority=10)
    low = _pool("low", {"score_gte": 1}, family="value", priority=20)

    def due(now):
        return [p.slug for p in pools_due_for_full(now=now)]

    evening = datetime(2026, 12, 1, 22, 0, tzinfo=ZoneInfo("Asia/Shanghai"))
    assert set(due(evening)) == {"scored", "silent", "silent-scored", "high", "low"}  # never evaluated
    for pool in (plain, silent, reader, high, low):
        _runs_at(pool, evening)
    assert due(evening + timedelta(minutes=30)) == []
    # An hour on: the time-dependent pools, the pool reading one and the lower tier of one.
    assert set(due(evening + timedelta(minutes=61))) == {"silent", "silent-scored", "high", "low"}
    for pool in (silent, reader, high, low):
        _runs_at(pool, evening + timedelta(minutes=61))
    # After 03:00 local time every pool is due once, then not again that night.
    night = evening.replace(day=2, hour=3, minute=5)
    assert set(due(night)) == {"scored", "silent", "silent-scored", "high", "low"}
    for pool in (plain, silent, reader, high, low):
        _runs_at(pool, night)
    assert due(night + timedelta(minutes=30)) == []
    # A rule change makes the pool and its readers due, in order.
    Pool.objects.filter(pk=plain.pk).update(rule_changed_at=night + timedelta(minutes=40))
    assert due(night + timedelta(minutes=45)) == ["scored", "silent-scored"]


def test_leads_whose_time_condition_turned_are_marked_dirty_each_tick(settings):
    from leads.pools import pools_mark_time_crossers
    from tests.factories import EventFactory

    settings.NURTURE_TICK_SECONDS = 60
    now = timezone_now()
    _pool("silent", {"days_since": "last_inbound_at", "gte": 14})
    _pool("webinar", {"event": "webinar_attended", "within_days": 30})
    turned = LeadFactory(last_inbound_at=now - timedelta(days=14, seconds=30))
    long_ago = LeadFactory(last_inbound_at=now - timedelta(days=20))
    recent = LeadFactory(last_inbound_at=now - timedelta(days=2))
    left_window = LeadFactory()
    EventFactory(lead=left_window, type="webinar_attended", occurred_at=now - timedelta(days=30, seconds=10))
    in_window = LeadFactory()
    EventFactory(lead=in_window, type="webinar_attended", occurred_at=now - timedelta(days=3))
    DirtyLead.objects.all().delete()
    assert pools_mark_time_crossers(now=now) == 2
    assert set(DirtyLead.objects.values_list("lead_id", flat=True)) == {turned.pk, left_window.pk}
    assert long_ago.pk and recent.pk and in_window.pk
    # The incremental evaluation then moves them: the silent lead joins now, not at the next full pass.
    pools_evaluate_dirty(now=now)
    silent = Pool.objects.get(slug="silent")
    assert _members(silent) == {turned.pk}


def test_tag_nodes_compile_to_tag_ids_when_known_and_unknown_tags_match_nobody():
    from leads.rules import rule_compile, rule_tag_ids_known

    now = timezone_now()
    a, b = LeadFactory(), LeadFactory()
    lead_tags_change(lead=a, add=["need:私域运营"], now=now)
    rules = [
        {"tag": "need:*"},
        {"tag": "need:私域运营"},
        {"tag": "need:nobody-has-it"},
        {"tag": "ghost:*"},
        {"not": {"tag": "ghost:*"}},
    ]
    with rule_tag_ids_known(rules):
        compiled = [rule_compile(rule, now=now) for rule in rules]
        sql = str(Lead.objects.filter(compiled[0]).query)
    assert 'JOIN "leads_tag"' not in sql and '"tag_id" IN (' in sql
    found = [set(Lead.objects.filter(q).values_list("pk", flat=True)) for q in compiled]
    assert found == [{a.pk}, {a.pk}, set(), set(), {a.pk, b.pk}]
    # Without the ids the same rules give the same leads, through the join on names.
    assert [
        set(Lead.objects.filter(rule_compile(r, now=now)).values_list("pk", flat=True)) for r in rules
    ] == found


def test_a_full_pass_evaluates_its_batches_at_once_on_connections_of_their_own(transactional_db):
    if connection.vendor != "postgresql":
        pytest.skip("batches run at once on PostgreSQL only")
    Pool.objects.all().delete()
    now = timezone_now()
    mil = _pool("mil", {"field": "phone", "op": "is_set", "value": True})
    leads = [LeadFactory(phone=f"+86139{n:08d}" if n % 3 else None) for n in range(40)]
    phoned = {lead.pk for lead in leads if lead.phone}
    assert _batches_at_once(3, 7) == 3  # no outer transaction here: threads, each with a connection
    run = pool_evaluate_full(pool=mil, now=now, batch=6, workers=3)
    assert (run.joined, run.left, run.size) == (len(phoned), 0, len(phoned))
    assert _members(mil) == phoned
    # Every batch's side effects, once: the stage moves (rl → mil) and their history.
    assert set(Lead.objects.filter(stage="mil").values_list("pk", flat=True)) == phoned
    assert StageChange.objects.filter(to_stage="mil").count() == len(phoned)
    # The same again at once changes nothing; one after the other agrees.
    Lead.objects.filter(pk__in=sorted(phoned)[:5]).update(phone=None)
    run = pool_evaluate_full(pool=mil, now=now + timedelta(minutes=1), batch=6, workers=3)
    assert (run.joined, run.left, run.size) == (0, 5, len(phoned) - 5)
    assert pool_evaluate_full(pool=mil, now=now + timedelta(minutes=2), batch=6, workers=1).size == run.size
    # Inside an outer transaction the batches run one after the other on its connection.
    from django.db import transaction

    with transaction.atomic():
        assert _batches_at_once(3, 7) == 1
        Lead.objects.filter(pk=sorted(phoned)[0]).update(phone="+8613900000999")
        assert pool_evaluate_full(pool=mil, now=now + timedelta(minutes=3), batch=6, workers=3).joined == 1


def test_an_incremental_run_records_the_size_it_leaves_without_counting_the_pool():
    now = timezone_now()
    pool = _pool("manufacturing", {"field": "industry", "op": "eq", "value": "制造"})
    leads = [LeadFactory(industry="制造") for _ in range(3)] + [LeadFactory(industry="教育")]
    # No run yet: the first incremental run counts the open rows.
    leads_mark_dirty(lead_ids=[lead.pk for lead in leads], now=now)
    pools_evaluate_dirty(now=now)
    assert PoolRun.objects.get(pool=pool, kind="incremental").size == 3
    assert pool_evaluate_full(pool=pool, now=now + timedelta(minutes=1)).size == 3

    def incremental(**changes):
        for pk, industry in changes.items():
            Lead.objects.filter(pk=leads[int(pk[1:])].pk).update(industry=industry)
        leads_mark_dirty(lead_ids=[leads[int(pk[1:])].pk for pk in changes], now=now)
        with CaptureQueriesContext(connection) as queries:
            pools_evaluate_dirty(now=now + timedelta(minutes=2))
        counted = 'COUNT(*) AS "__count" FROM "leads_poolmembership"'
        assert not any(counted in q["sql"] for q in queries.captured_queries)
        return (
            PoolRun.objects.filter(pool=pool, kind="incremental").order_by("-started_at", "-id").first().size
        )

    assert incremental(l3="制造") == 4
    assert incremental(l0="零售", l1="零售") == 2
    assert incremental(l0="制造") == 3
    assert len(_members(pool)) == 3
