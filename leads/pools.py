"""Pools: set-based evaluation of membership, full (in id ranges) and incremental (dirty leads only).

Every statement here is one SQL statement over a range or a set of leads: joiners are inserted with
`INSERT … SELECT`, leavers closed with `UPDATE … WHERE lead_id NOT IN (SELECT …)`. Nothing loops over
leads in Python. A tick that runs twice, or two at once, change nothing the second time: the open
membership row is unique per lead and pool, and dirty leads are claimed with SKIP LOCKED.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, Max, Min, OuterRef, Q, QuerySet
from django.utils.timezone import now as timezone_now

from leads.models import DirtyLead, Lead, Pool, PoolMembership, PoolRun, Stage, StageChange
from leads.rules import RuleError, rule_compile, rule_pools, rule_register_pool_compiler, rule_validate
from nurture.outbox import outbox_put

logger = logging.getLogger(__name__)

FULL_BATCH = 100_000
DIRTY_BATCH = 10_000
# Lifecycle stages that joining these pools moves a lead forward to, and from which stages.
STAGE_POOLS: dict[str, tuple[str, tuple[str, ...]]] = {
    "mil": (Stage.MIL, (Stage.RL,)),
    "mql": (Stage.MQL, (Stage.RL, Stage.MIL)),
}


def _pool_member_q(slug: str, now: datetime) -> Q:
    return Q(
        Exists(PoolMembership.objects.filter(lead=OuterRef("pk"), pool__slug=slug, left_at__isnull=True))
    )


rule_register_pool_compiler(_pool_member_q)


# --- Saving a pool: the rule validates and refers to no cycle of pools.


def pool_check(*, slug: str, rule: Any, family: str = "") -> None:
    """Raise RuleError if the rule is malformed, names an unknown pool or makes a cycle of pools."""
    rule_validate(rule)
    rules = {p.slug: p.rule for p in Pool.objects.all()}
    rules[slug] = rule
    for name in rule_pools(rule):
        if name not in rules:
            raise RuleError("pool", f"no pool '{name}'")

    def visit(current: str, trail: tuple[str, ...]) -> None:
        for referenced in rule_pools(rules.get(current)):
            if referenced in trail:
                cycle = " → ".join((*trail[trail.index(referenced) :], referenced))
                raise RuleError("pool", f"pools refer to each other in a cycle: {cycle}")
            visit(referenced, (*trail, referenced))

    visit(slug, (slug,))


def pools_in_order(pools: Sequence[Pool]) -> list[Pool]:
    """Pools ordered so that a pool comes after the pools its rule refers to."""
    by_slug = {p.slug: p for p in pools}
    ordered: list[Pool] = []
    placed: set[str] = set()

    def place(pool: Pool, trail: frozenset[str]) -> None:
        if pool.slug in placed or pool.slug in trail:
            return
        for name in sorted(rule_pools(pool.rule)):
            if name in by_slug:
                place(by_slug[name], trail | {pool.slug})
        placed.add(pool.slug)
        ordered.append(pool)

    for pool in sorted(pools, key=lambda p: (p.family, p.priority, p.slug)):
        place(pool, frozenset())
    return ordered


def pool_target(*, pool: Pool, now: datetime, family: Sequence[Pool] = ()) -> Q:
    """The `Q` of the leads that belong in the pool now; in a family, minus those of earlier tiers."""
    target = rule_compile(pool.rule, now=now)
    for higher in family:
        if higher.pk != pool.pk and (higher.priority, higher.slug) < (pool.priority, pool.slug):
            target &= ~rule_compile(higher.rule, now=now)
    return target


# --- Dirty leads: the queue of the incremental evaluation.


def leads_mark_dirty(*, lead_ids: Iterable[int], now: datetime | None = None) -> int:
    """Queue leads for the next incremental evaluation (one statement; already queued ones stay)."""
    ids = sorted({int(i) for i in lead_ids if i is not None})
    if not ids:
        return 0
    at = connection.ops.adapt_datetimefield_value(now or timezone_now())
    table = DirtyLead._meta.db_table
    with connection.cursor() as cursor:
        for start in range(0, len(ids), 5000):
            chunk = ids[start : start + 5000]
            values = ", ".join(["(%s, %s)"] * len(chunk))
            params = [value for lead_id in chunk for value in (lead_id, at)]
            cursor.execute(
                f"INSERT INTO {table} (lead_id, marked_at) VALUES {values} ON CONFLICT (lead_id) DO NOTHING",
                params,
            )
    return len(ids)


def leads_mark_dirty_where(*, leads: QuerySet[Lead], now: datetime | None = None) -> None:
    """Queue every lead of a queryset, in one `INSERT … SELECT` (for set-based writers)."""
    select_sql, params = _sql(leads.values("id"))
    at = connection.ops.adapt_datetimefield_value(now or timezone_now())
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {DirtyLead._meta.db_table} (lead_id, marked_at) "
            f"SELECT d.id, %s FROM ({select_sql}) AS d WHERE true ON CONFLICT (lead_id) DO NOTHING",
            (at, *params),
        )


def _claim_dirty(limit: int) -> list[int]:
    """Take up to `limit` dirty leads off the queue, skipping those another tick holds."""
    table = DirtyLead._meta.db_table
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                f"DELETE FROM {table} WHERE lead_id IN (SELECT lead_id FROM {table} ORDER BY lead_id "
                f"LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING lead_id",
                [limit],
            )
            return sorted(row[0] for row in cursor.fetchall())
        cursor.execute(f"SELECT lead_id FROM {table} ORDER BY lead_id LIMIT %s", [limit])
        ids = [row[0] for row in cursor.fetchall()]
        if ids:
            DirtyLead.objects.filter(lead_id__in=ids).delete()
        return ids


# --- Evaluation.


@dataclass
class Outcome:
    joined: list[int]
    left: list[int]


def _sql(queryset: QuerySet) -> tuple[str, tuple[Any, ...]]:
    return queryset.query.sql_with_params()


def _apply(*, pool: Pool, scope: Q, target: Q, now: datetime) -> Outcome:
    """Within `scope` (an id range or a set of ids): open rows for joiners, close rows of leavers."""
    members = Lead.objects.filter(scope).filter(target).values("id")
    open_rows = PoolMembership.objects.filter(lead=OuterRef("pk"), pool=pool, left_at__isnull=True)
    joiners_sql, joiners_params = _sql(members.filter(~Exists(open_rows)))
    members_sql, members_params = _sql(members)
    scope_sql, scope_params = _sql(Lead.objects.filter(scope).values("id"))
    table = PoolMembership._meta.db_table
    at = connection.ops.adapt_datetimefield_value(now)
    with connection.cursor() as cursor:
        cursor.execute(
            # "WHERE true" keeps SQLite from reading ON CONFLICT as a join constraint.
            f"INSERT INTO {table} (lead_id, pool_id, joined_at) "
            f"SELECT j.id, %s, %s FROM ({joiners_sql}) AS j WHERE true "
            f"ON CONFLICT (lead_id, pool_id) WHERE left_at IS NULL DO NOTHING RETURNING lead_id",
            (pool.pk, at, *joiners_params),
        )
        joined = [row[0] for row in cursor.fetchall()]
        cursor.execute(
            f"UPDATE {table} SET left_at = %s WHERE pool_id = %s AND left_at IS NULL "
            f"AND lead_id IN ({scope_sql}) AND lead_id NOT IN ({members_sql}) RETURNING lead_id",
            (at, pool.pk, *scope_params, *members_params),
        )
        left = [row[0] for row in cursor.fetchall()]
    outbox_put(type="pool.joined", lead_ids=joined, occurred_at=now, data={"pool": pool.slug})
    outbox_put(type="pool.left", lead_ids=left, occurred_at=now, data={"pool": pool.slug})
    return Outcome(joined=joined, left=left)


def _stages_follow(*, pool: Pool, joined: list[int], now: datetime) -> int:
    """Joining the MIL or MQL pool moves the lifecycle stage forward, never backwards."""
    if pool.slug not in STAGE_POOLS or not joined:
        return 0
    to_stage, from_stages = STAGE_POOLS[pool.slug]
    moving = Lead.objects.filter(pk__in=joined, stage__in=from_stages)
    before = dict(moving.values_list("pk", "stage"))
    reason = f"joined pool {pool.slug}"
    outbox_put(
        type="lead.stage_changed",
        lead_ids=before,
        occurred_at=now,
        data={"to": to_stage, "reason": reason},
        data_by_lead={lead_id: {"from": stage} for lead_id, stage in before.items()},
    )
    if to_stage == Stage.MQL:
        outbox_put(type="lead.mql", lead_ids=before, occurred_at=now, data={"reason": reason})
    select_sql, params = _sql(moving.values("id", "stage"))
    at = connection.ops.adapt_datetimefield_value(now)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {StageChange._meta.db_table} (lead_id, from_stage, to_stage, reason, actor, at) "
            f"SELECT m.id, m.stage, %s, %s, 'engine', %s FROM ({select_sql}) AS m",
            (to_stage, reason, at, *params),
        )
    return moving.update(stage=to_stage, updated_at=timezone_now())


def _record(
    *, pool: Pool, kind: str, started_at: datetime, started: float, evaluated: int | None, outcome: Outcome
) -> PoolRun:
    return PoolRun.objects.create(
        pool=pool,
        kind=kind,
        started_at=started_at,
        seconds=time.monotonic() - started,
        evaluated=evaluated,
        joined=len(outcome.joined),
        left=len(outcome.left),
        size=PoolMembership.objects.filter(pool=pool, left_at__isnull=True).count(),
    )


def _family(pool: Pool, pools: Sequence[Pool]) -> list[Pool]:
    return [p for p in pools if pool.family and p.family == pool.family]


def pool_evaluate_full(
    *, pool: Pool, now: datetime, pools: Sequence[Pool] | None = None, batch: int = FULL_BATCH
) -> PoolRun:
    """Evaluate the pool over every lead, in id ranges of `batch` so memory stays flat at any size."""
    pools = list(pools if pools is not None else Pool.objects.filter(active=True))
    started_at, started = timezone_now(), time.monotonic()
    target = pool_target(pool=pool, now=now, family=_family(pool, pools))
    bounds = Lead.objects.aggregate(low=Min("pk"), high=Max("pk"))
    outcome = Outcome(joined=[], left=[])
    low, high = bounds["low"], bounds["high"]
    if low is not None and high is not None:
        for start in range(low, high + 1, batch):
            with transaction.atomic():
                part = _apply(pool=pool, scope=Q(pk__gte=start, pk__lt=start + batch), target=target, now=now)
                _stages_follow(pool=pool, joined=part.joined, now=now)
            outcome.joined += part.joined
            outcome.left += part.left
    return _record(
        pool=pool,
        kind=PoolRun.Kind.FULL,
        started_at=started_at,
        started=started,
        evaluated=None,
        outcome=outcome,
    )


def pools_evaluate_dirty(*, now: datetime, limit: int = DIRTY_BATCH) -> dict[str, int]:
    """Re-evaluate every active pool for the leads marked dirty, `limit` at a time, until none is left."""
    pools = pools_in_order(list(Pool.objects.filter(active=True)))
    totals = {"evaluated": 0, "joined": 0, "left": 0}
    if not pools:
        return totals
    while True:
        # Claim and evaluate in one transaction: a crash puts the leads back on the queue.
        with transaction.atomic():
            ids = _claim_dirty(limit)
            if not ids:
                break
            for pool in pools:
                started_at, started = timezone_now(), time.monotonic()
                target = pool_target(pool=pool, now=now, family=_family(pool, pools))
                outcome = _apply(pool=pool, scope=Q(pk__in=ids), target=target, now=now)
                _stages_follow(pool=pool, joined=outcome.joined, now=now)
                if outcome.joined or outcome.left:
                    _record(
                        pool=pool,
                        kind=PoolRun.Kind.INCREMENTAL,
                        started_at=started_at,
                        started=started,
                        evaluated=len(ids),
                        outcome=outcome,
                    )
                totals["joined"] += len(outcome.joined)
                totals["left"] += len(outcome.left)
        totals["evaluated"] += len(ids)
        if len(ids) < limit:
            break
    return totals


def pools_due_for_full(*, now: datetime) -> list[Pool]:
    """Pools whose rule changed since their last full run, or whose last full run is too old
    (time passing changes rules such as `days_since` and `within_days` without any write)."""
    every = timedelta(minutes=getattr(settings, "NURTURE_POOL_FULL_EVERY_MINUTES", 60))
    due = []
    for pool in Pool.objects.filter(active=True):
        last = pool.runs.filter(kind=PoolRun.Kind.FULL).aggregate(at=Max("started_at"))["at"]
        if last is None or last < now - every or (pool.rule_changed_at and pool.rule_changed_at > last):
            due.append(pool)
    return pools_in_order(due)


def pools_tick(now: datetime) -> dict[str, int]:
    """Tick step: incremental evaluation of dirty leads, then full evaluation of the pools that are due."""
    report = pools_evaluate_dirty(now=now)
    active = list(Pool.objects.filter(active=True))
    full = pools_due_for_full(now=now)
    for pool in full:
        run = pool_evaluate_full(pool=pool, now=now, pools=active)
        report["joined"] += run.joined
        report["left"] += run.left
    report["full"] = len(full)
    return report


def pool_members(*, pool: Pool) -> QuerySet[Lead]:
    """The leads in the pool now."""
    return Lead.objects.filter(
        Exists(PoolMembership.objects.filter(lead=OuterRef("pk"), pool=pool, left_at__isnull=True))
    )
