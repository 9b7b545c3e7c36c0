"""Pools: set-based evaluation of membership, full (in id ranges) and incremental (dirty leads only).

On PostgreSQL one batch (an id range, or the claimed dirty leads) is one SQL statement: data-modifying
CTEs select the members, insert the joiners, close the leavers' rows, move the stage of MIL/MQL
joiners and write the outbox rows of all of that, without a lead id coming back to Python. SQLite (the
embedded demo, `make test` without DATABASE_URL) runs the same steps as separate statements. Nothing
loops over leads in Python. A tick that runs twice, or two at once, change nothing the second time:
the open membership row is unique per lead and pool, and dirty leads are claimed with SKIP LOCKED.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, Max, Min, OuterRef, Q, QuerySet, Subquery
from django.utils import timezone
from django.utils.timezone import now as timezone_now

from leads.models import DirtyLead, Event, Lead, Pool, PoolMembership, PoolRun, Stage, StageChange
from leads.rules import (
    RuleError,
    rule_compile,
    rule_pools,
    rule_register_pool_compiler,
    rule_tag_ids_known,
    rule_validate,
)
from nurture.models import OutboxMessage
from nurture.outbox import outbox_put

logger = logging.getLogger(__name__)

# Leads per statement of a full pass: NURTURE_POOL_FULL_BATCH (250,000). Each statement pays once for
# hashing what its rule reads (the open rows of a pool, the leads with a tag of a group …), so fewer
# are faster, up to a point: at 1M leads the steady pass of all pools took 17.7 s in 250,000-lead
# statements and 24 s in 500,000 (the planner turned silent-14-days and value-medium into per-lead
# loops), and smaller ones hold fewer row locks when many leads join at once.
DIRTY_BATCH = 10_000
# Per batch statement (one at a time per evaluation): the members of 250,000 leads hash in memory.
BATCH_WORK_MEM = "64MB"
# A full pass that opened or closed at least this many rows re-analyzes the memberships: a pool that
# grew from empty would otherwise be planned as nearly empty by the next statement that reads it.
ANALYZE_AFTER = 10_000
# Lifecycle stages that joining these pools moves a lead forward to, and from which stages.
STAGE_POOLS: dict[str, tuple[str, tuple[str, ...]]] = {
    "mil": (Stage.MIL, (Stage.RL,)),
    "mql": (Stage.MQL, (Stage.RL, Stage.MIL)),
}


# slug → id of the pools an evaluation has loaded, so `{"pool": slug}` compiles without a query.
_POOL_IDS: ContextVar[dict[str, int] | None] = ContextVar("pool_ids", default=None)


@contextmanager
def _ids_known(pools: Sequence[Pool]) -> Iterator[None]:
    """Compile rules with the ids of the pools and tags they name (one query for the tags)."""
    token = _POOL_IDS.set({p.slug: p.pk for p in pools})
    try:
        with rule_tag_ids_known(p.rule for p in pools):
            yield
    finally:
        _POOL_IDS.reset(token)


def _member_q(pool_id: int) -> Q:
    """Open membership of the pool, by id: a join through the pool's slug hid from the planner which
    pool it reads, and it planned for the wrong size."""
    return Q(
        Exists(PoolMembership.objects.filter(lead=OuterRef("pk"), pool_id=pool_id, left_at__isnull=True))
    )


def _pool_member_q(slug: str, now: datetime) -> Q:
    known = _POOL_IDS.get()
    if known is not None and slug in known:
        pool_id: int | None = known[slug]
    else:
        pool_id = Pool.objects.filter(slug=slug).values_list("pk", flat=True).first()
    if pool_id is None:
        return Q(pk__isnull=True)  # no such pool (any more): nobody is in it (SQL that says false)
    return _member_q(pool_id)


rule_register_pool_compiler(_pool_member_q)

# Other apps' work on dirty leads (scoring) runs first in each claimed batch, in the same transaction,
# so the pools read fresh scores. A handler gets the ids, `now`, (`events=`) those of them marked by
# new events and (`since=`) for those the earliest new event's time when known, and returns counts for
# the report.
DirtyHandler = Callable[..., dict[str, int]]
_DIRTY_HANDLERS: list[DirtyHandler] = []


def dirty_leads_register(handler: DirtyHandler) -> DirtyHandler:
    if handler not in _DIRTY_HANDLERS:
        _DIRTY_HANDLERS.append(handler)
    return handler


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
        # The pools a rule names, and the earlier tiers of its family (`pool_target` reads their
        # memberships), are evaluated first.
        for name in sorted(rule_pools(pool.rule) | {p.slug for p in _higher_tiers(pool, pools)}):
            if name in by_slug:
                place(by_slug[name], trail | {pool.slug})
        placed.add(pool.slug)
        ordered.append(pool)

    for pool in sorted(pools, key=lambda p: (p.family, p.priority, p.slug)):
        place(pool, frozenset())
    return ordered


def _higher_tiers(pool: Pool, family: Iterable[Pool]) -> list[Pool]:
    """The pools of the pool's family that come before it (lower priority, then slug)."""
    return [
        p
        for p in family
        if pool.family
        and p.family == pool.family
        and p.pk is not None
        and p.pk != pool.pk
        and (p.priority, p.slug) < (pool.priority, pool.slug)
    ]


def pool_target(*, pool: Pool, now: datetime, family: Sequence[Pool] = ()) -> Q:
    """The `Q` of the leads that belong in the pool now; in a family, minus the members of earlier tiers.

    "Not in an earlier tier" reads the earlier tiers' open memberships rather than their rules negated:
    `pools_in_order` evaluates them first (in one transaction for dirty leads, pool by pool in a full
    pass), so their membership is already current when this pool is evaluated, and one index probe
    replaces re-evaluating each earlier rule.
    """
    target = rule_compile(pool.rule, now=now)
    for higher in _higher_tiers(pool, family):
        target &= ~_member_q(higher.pk)
    return target


# --- Dirty leads: the queue of the incremental evaluation.


def leads_mark_dirty(
    *,
    lead_ids: Iterable[int],
    now: datetime | None = None,
    events: bool = False,
    since: Mapping[int, datetime] | None = None,
) -> int:
    """Queue leads for the next incremental evaluation (one statement; already queued ones stay).
    `events`: they have new events, so their score ledger is rebuilt too; `since` (lead → the earliest
    new event's time) lets the rebuild start at that local day, a lead without it is rebuilt whole.
    Marks of one lead before its evaluation add up: the earliest `since`, none if one had none."""
    ids = sorted({int(i) for i in lead_ids if i is not None})
    if not ids:
        return 0
    at = connection.ops.adapt_datetimefield_value(now or timezone_now())
    table = DirtyLead._meta.db_table
    least = "LEAST" if connection.vendor == "postgresql" else "MIN"
    old, new = f"{table}.events_since", "excluded.events_since"
    conflict = (
        f"DO UPDATE SET events = true, events_since = CASE WHEN NOT {table}.events THEN {new} "
        f"WHEN {old} IS NULL OR {new} IS NULL THEN NULL ELSE {least}({old}, {new}) END "
        f"WHERE NOT {table}.events OR ({old} IS NOT NULL AND ({new} IS NULL OR {new} < {old}))"
        if events
        else "DO NOTHING"
    )
    first = {
        int(lead_id): connection.ops.adapt_datetimefield_value(when)
        for lead_id, when in (since or {}).items()
        if events and when is not None
    }
    with connection.cursor() as cursor:
        for start in range(0, len(ids), 5000):
            chunk = ids[start : start + 5000]
            values = ", ".join(["(%s, %s, %s, %s)"] * len(chunk))
            params = [value for lead_id in chunk for value in (lead_id, at, events, first.get(lead_id))]
            cursor.execute(
                f"INSERT INTO {table} (lead_id, marked_at, events, events_since) VALUES {values} "
                f"ON CONFLICT (lead_id) {conflict}",
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


@dataclass(frozen=True)
class Claimed:
    """Dirty leads taken off the queue: their ids, those marked by new events, and for those the
    earliest new event's time (absent: rebuild the ledger from the first event)."""

    ids: list[int]
    events: list[int]
    events_since: dict[int, datetime]


def _claim_dirty(limit: int) -> Claimed:
    """Take up to `limit` dirty leads off the queue, skipping those another tick holds."""
    table = DirtyLead._meta.db_table
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                f"DELETE FROM {table} WHERE lead_id IN (SELECT lead_id FROM {table} ORDER BY lead_id "
                f"LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING lead_id, events, events_since",
                [limit],
            )
            rows = sorted(cursor.fetchall())
        else:
            rows = list(
                DirtyLead.objects.order_by("lead_id").values_list("lead_id", "events", "events_since")[:limit]
            )
            if rows:
                DirtyLead.objects.filter(lead_id__in=[lead_id for lead_id, _, _ in rows]).delete()
    return Claimed(
        ids=[lead_id for lead_id, _, _ in rows],
        events=[lead_id for lead_id, events, _ in rows if events],
        events_since={lead_id: since for lead_id, events, since in rows if events and since is not None},
    )


# --- Evaluation.


@dataclass(frozen=True)
class Scope:
    """The leads one statement evaluates: an id range [low, high) in a full pass, or the dirty ids."""

    low: int | None = None
    high: int | None = None
    ids: Sequence[int] | None = None

    def q(self) -> Q:
        if self.ids is not None:
            return Q(pk__in=self.ids)
        return Q(pk__gte=self.low, pk__lt=self.high)

    def on_lead_id(self, column: str) -> tuple[str, list[Any]]:
        """The same scope as SQL on a `lead_id` column (PostgreSQL)."""
        if self.ids is not None:
            return f"{column} = ANY(%s)", [list(self.ids)]
        return f"{column} >= %s AND {column} < %s", [self.low, self.high]


@dataclass
class Outcome:
    joined: int = 0
    left: int = 0
    moved: int = 0
    members: int | None = None  # in scope after the batch, when the statement counted them

    def __iadd__(self, other: Outcome) -> Outcome:
        self.joined += other.joined
        self.left += other.left
        self.moved += other.moved
        self.members = None if self.members is None or other.members is None else self.members + other.members
        return self


def _sql(queryset: QuerySet) -> tuple[str, tuple[Any, ...]]:
    return queryset.query.sql_with_params()


def _apply(*, pool: Pool, scope: Scope, target: Q, now: datetime) -> Outcome:
    """Within `scope`: open rows for joiners, close rows of leavers, move MIL/MQL joiners' stage, and
    write the outbox rows of each, in the caller's transaction."""
    if connection.vendor == "postgresql":
        return _apply_in_one_statement(pool=pool, scope=scope, target=target, now=now)
    return _apply_step_by_step(pool=pool, scope=scope, target=target, now=now)


def _apply_in_one_statement(*, pool: Pool, scope: Scope, target: Q, now: datetime) -> Outcome:
    """PostgreSQL: the whole batch as one statement of data-modifying CTEs (they all see the snapshot
    taken before it, and each runs once); no lead id leaves the database.

    Joiners and leavers are set differences (EXCEPT) of the members and the open rows, which
    PostgreSQL computes by hashing or sorting both sides once. An anti-join was planned as a nested
    loop over the membership table whenever its statistics said it was empty, and that table grows
    while the statement inserts: the first 250,000-lead batch of a new pool took 204 s instead of 1.
    Rows are then found by id (`= ANY(ARRAY(…))`), index probes whatever the estimates say."""
    members_sql, members_params = _sql(Lead.objects.filter(scope.q()).filter(target).values("id"))
    in_scope, scope_params = scope.on_lead_id("m.lead_id")
    memberships = PoolMembership._meta.db_table
    at = connection.ops.adapt_datetimefield_value(now)
    recorded_at = connection.ops.adapt_datetimefield_value(timezone_now())
    pool_data = json.dumps({"pool": pool.slug})
    ctes = [
        ("members", f"MATERIALIZED ({members_sql})", list(members_params)),
        (
            "open_rows",
            f"MATERIALIZED (SELECT m.lead_id FROM {memberships} m "
            f"WHERE m.pool_id = %s AND m.left_at IS NULL AND {in_scope})",
            [pool.pk, *scope_params],
        ),
        (
            "joined",
            f"(INSERT INTO {memberships} (lead_id, pool_id, joined_at) "
            "SELECT j.id, %s, %s FROM (SELECT id FROM members EXCEPT SELECT lead_id FROM open_rows) j "
            "ON CONFLICT (lead_id, pool_id) WHERE left_at IS NULL DO NOTHING RETURNING lead_id)",
            [pool.pk, at],
        ),
        (
            "gone",
            f"(UPDATE {memberships} m SET left_at = %s WHERE m.pool_id = %s AND m.left_at IS NULL "
            "AND m.lead_id = ANY(ARRAY(SELECT lead_id FROM open_rows EXCEPT SELECT id FROM members)) "
            "RETURNING m.lead_id)",
            [at, pool.pk],
        ),
    ]
    # The outbox rows, in the order the step-by-step path writes them: per lead, joining comes before
    # the stage change it causes.
    outbox = [
        (
            "SELECT 'pool.joined', lead_id, %s::jsonb, %s::timestamptz, %s::timestamptz FROM joined",
            [pool_data],
        ),
        ("SELECT 'pool.left', lead_id, %s::jsonb, %s::timestamptz, %s::timestamptz FROM gone", [pool_data]),
    ]
    moves = pool.slug in STAGE_POOLS
    if moves:
        to_stage, from_stages = STAGE_POOLS[pool.slug]
        reason = f"joined pool {pool.slug}"
        leads = Lead._meta.db_table
        # Joined with itself, the lead table gives the stage before the update for the history.
        ctes.append(
            (
                "moved",
                f"(UPDATE {leads} l SET stage = %s, updated_at = %s FROM {leads} b "
                "WHERE l.id = ANY(ARRAY(SELECT lead_id FROM joined)) AND b.id = l.id "
                "AND l.stage = ANY(%s) RETURNING l.id, b.stage)",
                [str(to_stage), recorded_at, [str(s) for s in from_stages]],
            )
        )
        ctes.append(
            (
                "history",
                f"(INSERT INTO {StageChange._meta.db_table} "
                "(lead_id, from_stage, to_stage, reason, actor, at) "
                "SELECT id, stage, %s, %s, 'engine', %s FROM moved)",
                [str(to_stage), reason, at],
            )
        )
        outbox.append(
            (
                "SELECT 'lead.stage_changed', id, jsonb_build_object('to', %s::text, 'reason', %s::text, "
                "'from', stage), %s::timestamptz, %s::timestamptz FROM moved",
                [str(to_stage), reason],
            )
        )
        if to_stage == Stage.MQL:
            outbox.append(
                (
                    "SELECT 'lead.mql', id, %s::jsonb, %s::timestamptz, %s::timestamptz FROM moved",
                    [json.dumps({"reason": reason})],
                )
            )
    ctes.append(
        (
            "announced",
            f"(INSERT INTO {OutboxMessage._meta.db_table} (type, lead_id, data, occurred_at, created_at) "
            + " UNION ALL ".join(select for select, _ in outbox)
            + ")",
            [value for _, params in outbox for value in (*params, at, recorded_at)],
        )
    )
    counts = "(SELECT count(*) FROM moved)" if moves else "0"
    sql = (
        "WITH "
        + ", ".join(f"{name} AS {body}" for name, body, _ in ctes)
        + f" SELECT (SELECT count(*) FROM joined), (SELECT count(*) FROM gone), {counts}, "
        "(SELECT count(*) FROM members)"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [value for _, _, params in ctes for value in params])
        joined, left, moved, members = cursor.fetchone()
    return Outcome(joined=joined, left=left, moved=moved, members=members)


def _apply_step_by_step(*, pool: Pool, scope: Scope, target: Q, now: datetime) -> Outcome:
    """SQLite: the same writes as separate statements, joiners and leavers passed through Python
    (the embedded demo's few thousand leads)."""
    members = Lead.objects.filter(scope.q()).filter(target).values("id")
    open_rows = PoolMembership.objects.filter(lead=OuterRef("pk"), pool=pool, left_at__isnull=True)
    joiners_sql, joiners_params = _sql(members.filter(~Exists(open_rows)))
    members_sql, members_params = _sql(members)
    scope_sql, scope_params = _sql(Lead.objects.filter(scope.q()).values("id"))
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
    moved = _stages_follow(pool=pool, joined=joined, now=now)
    return Outcome(joined=len(joined), left=len(left), moved=moved)


def _stages_follow(*, pool: Pool, joined: list[int], now: datetime) -> int:
    """Joining the MIL or MQL pool moves the lifecycle stage forward, never backwards (SQLite path)."""
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


def _size_after(*, pool: Pool, kind: str, outcome: Outcome) -> int:
    """The pool's size after a run: counted by a full pass on PostgreSQL (batch by batch); after an
    incremental run, the previous run's size moved by who joined and left (counting the open rows of a
    pool of 885,000 members took 30–80 ms of every tick that changed it). Two ticks evaluating at once
    may each start from the same previous size; the next full pass counts again."""
    if kind == PoolRun.Kind.FULL and outcome.members is not None:
        return outcome.members
    if kind == PoolRun.Kind.INCREMENTAL:
        # The latest run of each kind through the (pool, kind, started_at) index (one query), the later.
        runs = PoolRun.objects.filter(pool=pool).order_by("-started_at")
        latest = {
            f"{each}_{field}": Subquery(runs.filter(kind=each).values(field)[:1])
            for each in PoolRun.Kind.values
            for field in ("started_at", "size")
        }
        row = Pool.objects.filter(pk=pool.pk).values(**latest).first() or {}
        previous = max(
            (
                (row[f"{each}_started_at"], row[f"{each}_size"])
                for each in PoolRun.Kind.values
                if row.get(f"{each}_size") is not None
            ),
            default=None,
        )
        if previous is not None:
            return max(previous[1] + outcome.joined - outcome.left, 0)
    return PoolMembership.objects.filter(pool=pool, left_at__isnull=True).count()


def _record(
    *, pool: Pool, kind: str, started_at: datetime, started: float, evaluated: int | None, outcome: Outcome
) -> PoolRun:
    return PoolRun.objects.create(
        pool=pool,
        kind=kind,
        started_at=started_at,
        seconds=time.monotonic() - started,
        evaluated=evaluated,
        joined=outcome.joined,
        left=outcome.left,
        size=_size_after(pool=pool, kind=kind, outcome=outcome),
    )


def _analyze_after(outcome: Outcome) -> None:
    """After a pass that opened or closed many rows, refresh the planner's statistics of the
    memberships, which the next pools read (`{"pool": …}`, family tiers). The stages moved are left to
    autovacuum: no statement here plans by the stage's statistics."""
    if connection.vendor == "postgresql" and outcome.joined + outcome.left >= ANALYZE_AFTER:
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {PoolMembership._meta.db_table}")


def _batch_settings() -> None:
    """For the rest of this transaction (PostgreSQL): no JIT, room to hash and sort a batch, and index
    probes priced as what they are on a database that fits in memory.

    Each batch's statement is planned anew and costs enough to be JIT-compiled, which took a third of
    a 100,000-lead batch (EXPLAIN ANALYZE: ~0.4 s of 1.2 s) and never paid back within one statement.
    With the default 4 MB of work_mem the anti-joins of a batch spilled their hashes and sorts to disk.
    With the default random_page_cost (4, for spinning disks) the planner sat on the edge between one
    index probe per lead into the events and hashing all 3M `message_out` events per batch, and took
    the second on a freshly loaded copy of the same data: silent-14-days 12 s instead of 3 s at 1M."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL jit = off")
            cursor.execute(f"SET LOCAL work_mem = '{BATCH_WORK_MEM}'")
            cursor.execute("SET LOCAL random_page_cost = 1.1")


def _family(pool: Pool, pools: Sequence[Pool]) -> list[Pool]:
    return [p for p in pools if pool.family and p.family == pool.family]


def _batches_at_once(workers: int, batches: int) -> int:
    """How many batches of a full pass to evaluate at once: several only on PostgreSQL and outside an
    outer transaction (other connections would not see its writes, and it could not be rolled back)."""
    if workers <= 1 or batches <= 1 or connection.vendor != "postgresql" or connection.in_atomic_block:
        return 1
    return min(workers, batches)


def _apply_batch(*, pool: Pool, scope: Scope, target: Q, now: datetime, own_connection: bool) -> Outcome:
    """One batch of a full pass in its own transaction; on a worker thread, on that thread's own
    connection, closed afterwards."""
    try:
        with transaction.atomic():
            _batch_settings()
            return _apply(pool=pool, scope=scope, target=target, now=now)
    finally:
        if own_connection:
            connection.close()


def pool_evaluate_full(
    *,
    pool: Pool,
    now: datetime,
    pools: Sequence[Pool] | None = None,
    batch: int | None = None,
    workers: int | None = None,
) -> PoolRun:
    """Evaluate the pool over every lead, in id ranges of `batch` so each transaction stays bounded,
    `workers` (NURTURE_POOL_FULL_WORKERS) of them at once: the ranges are disjoint, so their
    transactions touch different rows, and each database connection keeps a core busy.

    In a family, the earlier tiers are read by membership: evaluate them first (`pools_in_order`)."""
    pools = list(pools if pools is not None else Pool.objects.filter(active=True))
    batch = batch or settings.NURTURE_POOL_FULL_BATCH
    workers = settings.NURTURE_POOL_FULL_WORKERS if workers is None else workers
    started_at, started = timezone_now(), time.monotonic()
    family = _family(pool, pools)
    bounds = Lead.objects.aggregate(low=Min("pk"), high=Max("pk"))
    outcome = Outcome(members=0)
    low, high = bounds["low"], bounds["high"]
    if low is not None and high is not None:
        scopes = [Scope(low=start, high=start + batch) for start in range(low, high + 1, batch)]
        # One target per batch, compiled here: a worker thread does not see the ids `_ids_known` holds.
        with _ids_known(pools):
            targets = [pool_target(pool=pool, now=now, family=family) for _ in scopes]
        at_once = _batches_at_once(workers, len(scopes))
        if at_once == 1:
            for scope, target in zip(scopes, targets, strict=True):
                outcome += _apply_batch(pool=pool, scope=scope, target=target, now=now, own_connection=False)
        else:
            with ThreadPoolExecutor(max_workers=at_once, thread_name_prefix=f"pool-{pool.slug}") as executor:
                futures = [
                    executor.submit(
                        _apply_batch, pool=pool, scope=scope, target=target, now=now, own_connection=True
                    )
                    for scope, target in zip(scopes, targets, strict=True)
                ]
                for future in futures:
                    outcome += future.result()
    _analyze_after(outcome)
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
    if not pools and not _DIRTY_HANDLERS:
        return totals
    while True:
        # Claim and evaluate in one transaction: a crash puts the leads back on the queue. The pools go
        # in order, so an earlier tier's membership is current when a later one reads it.
        with transaction.atomic():
            claimed = _claim_dirty(limit)
            ids = claimed.ids
            if not ids:
                break
            _batch_settings()
            for handler in _DIRTY_HANDLERS:
                for key, value in handler(
                    ids, now, events=claimed.events, since=claimed.events_since
                ).items():
                    totals[key] = totals.get(key, 0) + value
            # Compiled after the claim: a tag created with a change that made a lead dirty is known.
            with _ids_known(pools):
                targets = {p.pk: pool_target(pool=p, now=now, family=_family(p, pools)) for p in pools}
            for pool in pools:
                started_at, started = timezone_now(), time.monotonic()
                outcome = _apply(pool=pool, scope=Scope(ids=ids), target=targets[pool.pk], now=now)
                if outcome.joined or outcome.left:
                    _record(
                        pool=pool,
                        kind=PoolRun.Kind.INCREMENTAL,
                        started_at=started_at,
                        started=started,
                        evaluated=len(ids),
                        outcome=outcome,
                    )
                totals["joined"] += outcome.joined
                totals["left"] += outcome.left
        totals["evaluated"] += len(ids)
        if len(ids) < limit:
            break
    return totals


def _time_nodes(rule: Any) -> list[dict[str, Any]]:
    """The nodes of a rule whose truth changes with time alone: `days_since`, `event` `within_days`."""
    if not isinstance(rule, dict):
        return []
    if "days_since" in rule or ("event" in rule and "within_days" in rule):
        return [rule]
    children = [*(rule.get("all") or []), *(rule.get("any") or []), rule.get("not")]
    return [node for child in children for node in _time_nodes(child)]


def _dependents(due: set[str], pools: Sequence[Pool]) -> set[str]:
    """`due` and every pool that reads one of them: by `{"pool": …}` or as a later tier of its family."""
    found = set(due)
    while True:
        more = {
            p.slug
            for p in pools
            if p.slug not in found
            and (rule_pools(p.rule) & found or {h.slug for h in _higher_tiers(p, pools)} & found)
        }
        if not more:
            return found
        found |= more


def pools_time_dependent(pools: Sequence[Pool]) -> list[Pool]:
    """Pools whose membership changes with time alone, and the pools that read them."""
    timed = {p.slug for p in pools if _time_nodes(p.rule)}
    slugs = _dependents(timed, pools)
    return [p for p in pools if p.slug in slugs]


def _nightly_mark(now: datetime) -> datetime:
    """The last instant, at or before `now`, when the nightly full pass fell due (site's time zone)."""
    local = timezone.localtime(now)
    mark = local.replace(hour=settings.NURTURE_POOL_NIGHTLY_HOUR, minute=0, second=0, microsecond=0)
    return mark if mark <= local else mark - timedelta(days=1)


def pools_due_for_full(*, now: datetime) -> list[Pool]:
    """The pools to evaluate over every lead now, in order:

    - every pool once a night (after `NURTURE_POOL_NIGHTLY_HOUR`, local time): the safety net for a
      write that did not mark its lead dirty;
    - a pool never evaluated, or whose rule changed since its last full pass;
    - time-dependent pools (`days_since`, `within_days`, and pools that read them) every
      `NURTURE_POOL_TIME_EVERY_MINUTES`: the safety net of `pools_mark_time_crossers` when ticks
      stopped for longer than its window;
    - with any of these, the pools that read it (`{"pool": …}`, later tiers of its family).
    One query whatever the number of pools or leads.
    """
    # The newest full run per pool through the (pool, kind, started_at) index, not an aggregate
    # over every run ever recorded (incremental runs pile up, one per pool and tick that changed it).
    last_full = PoolRun.objects.filter(pool=OuterRef("pk"), kind=PoolRun.Kind.FULL).order_by("-started_at")
    pools = list(
        Pool.objects.filter(active=True).annotate(last_full=Subquery(last_full.values("started_at")[:1]))
    )
    every = timedelta(minutes=settings.NURTURE_POOL_TIME_EVERY_MINUTES)
    nightly = _nightly_mark(now)
    timed = {p.slug for p in pools_time_dependent(pools)}
    due = set()
    for pool in pools:
        last = pool.last_full
        if (
            last is None
            or last < nightly
            or (pool.rule_changed_at and pool.rule_changed_at > last)
            or (pool.slug in timed and last < now - every)
        ):
            due.add(pool.slug)
    due = _dependents(due, pools)
    return pools_in_order([p for p in pools if p.slug in due])


def pools_mark_time_crossers(*, now: datetime) -> int:
    """Mark dirty the leads whose time-dependent rule nodes may have turned since the last ticks, so
    the incremental evaluation moves them within the minute instead of at the next full pass.

    A `days_since` node of N days turns for leads whose date lies within N days before the window of
    the last two tick intervals; an `event` node of `within_days` N for leads with such an event that
    left the window (occurred N days before) or entered it (occurred in it: posted ahead of time).
    Marking too many is harmless (they are evaluated and stay), so the window overlaps the previous
    tick's. One statement per time node of the active pools, whatever the number of leads."""
    # Beat ticks every 60 s (nurture/schedules.py), the in-process scheduler every NURTURE_TICK_SECONDS.
    window = timedelta(seconds=2 * max(settings.NURTURE_TICK_SECONDS, 60))
    nodes = [node for pool in Pool.objects.filter(active=True) for node in _time_nodes(pool.rule)]
    seen: set[str] = set()
    for node in nodes:
        if "days_since" in node:
            column = node["days_since"]
            days = {node[op] for op in ("gte", "gt", "lte", "lt") if op in node}
            crossed = Q(pk__isnull=True)
            for n in sorted(days):
                edge = now - timedelta(days=n)
                crossed |= Q(**{f"{column}__gte": edge - window, f"{column}__lte": edge})
            leads = Lead.objects.filter(crossed)
        else:
            edge = now - timedelta(days=node["within_days"])
            events = Event.objects.filter(type=node["event"]).filter(
                Q(occurred_at__gte=edge - window, occurred_at__lte=edge)
                | Q(occurred_at__gte=now - window, occurred_at__lte=now)
            )
            leads = Lead.objects.filter(pk__in=events.values("lead_id"))
        key = str(leads.query)
        if key not in seen:  # the same node in several pools is swept once
            seen.add(key)
            leads_mark_dirty_where(leads=leads, now=now)
    return len(seen)


def pools_tick(now: datetime) -> dict[str, int]:
    """Tick step: mark the leads time has moved, evaluate the dirty leads, then the full passes due."""
    pools_mark_time_crossers(now=now)
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
