"""Scoring, set-based: the ledger of behaviour points, and each lead's fit, engagement, score, grade and
temperature, recomputed for the leads marked dirty in every tick and for everyone nightly or when the
scoring model changes.

    score = fit + round(engagement)
    fit = Σ points of the fit rules the lead meets now
    engagement = Σ ledger points × 0.5^(age in days / half-life)   (entries up to `now`)

Every statement works on a scope of leads (a set of ids or an id range), never on one lead in a loop.
The ledger of a scope is rebuilt from the events (the difference written in one transaction), so events
that arrive late or out of order get the same caps as if they had come in order. An entry's points are
worked out from the rule as it is when scores are computed (`entry_points_sql`), so editing a rule's
points, day cap or half-life rescores everyone without rewriting the ledger; only a change of what the
rule counts (event type, properties, cap in total, switched back on) rebuilds that rule's entries.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Case, IntegerField, Max, Min, Q, QuerySet, Value, When
from django.db.models.expressions import RawSQL
from django.db.models.functions import TruncDate
from django.utils.timezone import localtime
from django.utils.timezone import now as timezone_now

from leads.models import Event, Lead, Pool, Temperature
from leads.pools import leads_mark_dirty_where
from leads.rules import RuleError, rule_compile, rule_pools, rule_reads_score, rule_validate
from leads.services import lead_scores_copy
from nurture.outbox import outbox_put
from scoring.models import LeadScore, ScoreEntry, ScoreRun, ScoringRule, ScoringSettings

logger = logging.getLogger(__name__)

FULL_BATCH = 100_000
THRESHOLDS = ("hot_score", "warm_score", "hot_min_engagement", "grade_a", "grade_b", "grade_c")
BATCH_TABLE = "scoring_batch"
LEDGER_TABLE = "scoring_ledger_batch"
EVENTS_CTE = "scope_events"
# PostgreSQL: one advisory lock key for the full pass, so two ticks do not both run it.
FULL_LOCK_KEY = 7_301_001


@dataclass(frozen=True)
class Scope:
    """The leads a statement works on: a set of ids, or the id range [low, high)."""

    ids: Sequence[int] | None = None
    low: int = 0
    high: int = 0

    def q(self, field: str = "pk") -> Q:
        if self.ids is not None:
            return Q(**{f"{field}__in": list(self.ids)})
        return Q(**{f"{field}__gte": self.low, f"{field}__lt": self.high})

    def where(self, column: str) -> tuple[str, list[Any]]:
        """The scope as a condition on a lead id column of raw SQL, with its parameters."""
        if self.ids is None:
            return f"{column} >= %s AND {column} < %s", [self.low, self.high]
        if _pg():
            return f"{column} = ANY(%s)", [list(self.ids)]
        if not self.ids:
            return "1 = 0", []
        return f"{column} IN ({', '.join(['%s'] * len(self.ids))})", list(self.ids)


def _sql(queryset: QuerySet) -> tuple[str, tuple[Any, ...]]:
    return queryset.query.sql_with_params()


def _pg() -> bool:
    return connection.vendor == "postgresql"


def _least(a: str, b: str) -> str:
    return f"LEAST({a}, {b})" if _pg() else f"MIN({a}, {b})"


def _at(value: datetime) -> Any:
    return connection.ops.adapt_datetimefield_value(value)


# --- The scoring model: rules and thresholds.


def scoring_settings_get() -> ScoringSettings:
    settings_row, _ = ScoringSettings.objects.get_or_create(pk=1)
    return settings_row


def scoring_rule_check(*, kind: str, rule: Any, event_type: str, where: Any) -> None:
    """Raise RuleError (with the path of the bad part) unless the rule can be scored."""
    if kind == ScoringRule.Kind.FIT:
        if rule is None:
            raise RuleError("rule", "a fit rule needs a predicate")
        rule_validate(rule)
        known = set(Pool.objects.values_list("slug", flat=True))
        for slug in sorted(rule_pools(rule)):
            if slug not in known:
                raise RuleError("rule", f"no pool '{slug}'")
    elif kind == ScoringRule.Kind.BEHAVIOUR:
        if not event_type.strip():
            raise RuleError("event_type", "a behaviour rule needs an event type")
        node: dict[str, Any] = {"event": event_type}
        if where:
            node["where"] = where
        try:
            rule_validate(node)
        except RuleError as exc:
            path = "event_type" if exc.path == "event" else exc.path
            raise RuleError(path, exc.message) from exc
    else:
        raise RuleError("kind", "must be fit or behaviour")


def _model_changed(*, now: datetime, ledger: bool) -> None:
    """The next tick rescores everyone (`updated_at` moves); with `ledger`, it rebuilds the ledger of
    the rules whose `changed_at` moved first."""
    scoring_settings_get()
    fields: dict[str, datetime] = {"updated_at": timezone_now()}
    if ledger:
        fields["rules_changed_at"] = now
    ScoringSettings.objects.filter(pk=1).update(**fields)


def _ledger_changes(old: ScoringRule | None, new: ScoringRule) -> bool:
    """Whether saving `new` over `old` changes which ledger entries the rule has or what they store.

    A rule's points and day cap are read when scores are computed (`entry_points_sql`), as are its
    half-life and whether it is active, so editing them rescores without a rebuild; except for a rule
    with a cap in total, whose entries keep points that depend on every earlier event."""
    if old is None:
        return new.kind == ScoringRule.Kind.BEHAVIOUR
    if old.kind != new.kind:
        return True
    if new.kind != ScoringRule.Kind.BEHAVIOUR:
        return False
    if (old.event_type, old.where or {}, old.cap_total) != (new.event_type, new.where or {}, new.cap_total):
        return True
    if new.active and not old.active:
        return True  # events that came while it was off have no entries
    return new.cap_total is not None and (old.points, old.cap_per_day) != (new.points, new.cap_per_day)


def scoring_rule_save(*, rule: ScoringRule, now: datetime | None = None) -> ScoringRule:
    """Validate and save a scoring rule; the next tick rescores everyone, after rebuilding the rule's
    ledger entries when the change needs it (`_ledger_changes`)."""
    now = now or timezone_now()
    scoring_rule_check(kind=rule.kind, rule=rule.rule, event_type=rule.event_type, where=rule.where)
    if rule.kind == ScoringRule.Kind.FIT:
        rule.event_type, rule.where, rule.cap_per_day, rule.cap_total, rule.half_life_days = (
            "",
            {},
            None,
            None,
            None,
        )
    else:
        rule.rule = None
    with transaction.atomic():
        old = ScoringRule.objects.filter(pk=rule.pk).first() if rule.pk else None
        ledger = _ledger_changes(old, rule)
        if ledger:
            rule.changed_at = now
        rule.save()
        _model_changed(now=now, ledger=ledger)
    return rule


def scoring_rules_delete(*, rules: QuerySet[ScoringRule], now: datetime | None = None) -> int:
    """Delete scoring rules (their ledger entries go with them); the next tick rescores everyone."""
    with transaction.atomic():
        count, _ = rules.delete()
        _model_changed(now=now or timezone_now(), ledger=False)
    return count


def scoring_settings_save(*, values: ScoringSettings) -> ScoringSettings:
    """Save the thresholds; the next tick recomputes grades and temperatures (`updated_at` moves)."""
    values.full_clean(exclude=["rules_changed_at"])
    row, _ = ScoringSettings.objects.update_or_create(
        pk=1, defaults={name: getattr(values, name) for name in THRESHOLDS}
    )
    return row


# --- The ledger.


def _awarded_sql(rule: ScoringRule, events_sql: str) -> str:
    """Points each event earns after the rule's caps, by window functions over the lead's events in
    time order: `n`-th event of a local day earns what is left of the day cap, and what is left of the
    total cap after the earlier events."""
    step = abs(rule.points)
    day = "d.step"
    if rule.cap_per_day is not None:
        cap = int(rule.cap_per_day)
        day = f"({_least(f'd.n * {step}', str(cap))} - {_least(f'(d.n - 1) * {step}', str(cap))})"
    inner = (
        f"SELECT d.id, d.lead_id, d.occurred_at, d.n, {day} AS day_points FROM ("
        f"SELECT e.id, e.lead_id, e.occurred_at, {step} AS step, ROW_NUMBER() OVER ("
        f"PARTITION BY e.lead_id, e.day ORDER BY e.occurred_at, e.id) AS n FROM ({events_sql}) AS e) AS d"
    )
    if rule.cap_total is None:
        return f"SELECT w.id, w.lead_id, w.occurred_at, w.n, w.day_points AS awarded FROM ({inner}) AS w"
    cap = int(rule.cap_total)
    running = (
        f"SELECT x.*, SUM(x.day_points) OVER (PARTITION BY x.lead_id ORDER BY x.occurred_at, x.id "
        f"ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS run FROM ({inner}) AS x"
    )
    awarded = f"({_least('w.run', str(cap))} - {_least('w.run - w.day_points', str(cap))})"
    return f"SELECT w.id, w.lead_id, w.occurred_at, w.n, {awarded} AS awarded FROM ({running}) AS w"


def _local_day_start(when: datetime, tz: ZoneInfo) -> datetime:
    local = when.astimezone(tz)
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


def _ledger_rebuild(
    *,
    scope: Scope,
    rules: Sequence[ScoringRule],
    only: Collection[int] | None = None,
    since: datetime | None = None,
) -> int:
    """Rewrite the ledger of the scope's leads from their events, every behaviour rule in one INSERT
    (or only the rules `only` names: one edited rule rewrites its own entries, not everyone's);
    returns the entries written.

    With `since`, only from the local day of `since` on: an event numbers and caps only within its own
    day, so earlier days' entries cannot have changed (new events came on or after that day). Rules with
    a cap in total are rebuilt whole, since an event's points there depend on every earlier one."""
    table = ScoreEntry._meta.db_table
    scope_sql, scope_params = scope.where("lead_id")
    if only is not None:
        if not only:
            return 0
        rules = [rule for rule in rules if rule.pk in only]
        scope_sql = f"{scope_sql} AND rule_id IN ({', '.join(str(int(pk)) for pk in sorted(only))})"
    tz = ZoneInfo(settings.TIME_ZONE)
    day_start = _local_day_start(since, tz) if since is not None else None
    totalled_rules = [
        rule for rule in rules if rule.kind == ScoringRule.Kind.BEHAVIOUR and rule.cap_total is not None
    ]
    if day_start is not None:
        # Entries of the days before stay; so do those of rules switched off (they do not count).
        kept = f"at >= %s OR rule_id IN ({', '.join(str(int(r.pk)) for r in totalled_rules) or 'NULL'})"
        scope_sql = f"{scope_sql} AND ({kept})"
        scope_params = [*scope_params, _at(day_start)]
    parts: list[str] = []
    params: list[Any] = []
    types: set[str] = set()
    for rule in rules:
        if rule.kind != ScoringRule.Kind.BEHAVIOUR or not rule.active:
            continue
        # Entries earning nothing now are kept (with their `n`): raising the points or the day cap makes
        # them count without a rebuild. Past a cap in total nothing counts until a rebuild anyway.
        totalled = rule.cap_total is not None
        if totalled and rule.points == 0:
            continue
        types.add(rule.event_type)
        events = Event.objects.filter(type=rule.event_type)
        if day_start is not None and not totalled:
            events = events.filter(occurred_at__gte=day_start)
        for key, value in (rule.where or {}).items():
            events = events.filter(**{f"properties__{key}": value})
        events_sql, events_params = _sql(
            events.annotate(day=TruncDate("occurred_at", tzinfo=tz)).values(
                "id", "lead_id", "occurred_at", "day"
            )
        )
        # Each rule reads the scope's events from `scope_events` (below), read once for every rule:
        # fourteen rules probing the event index for the same leads took most of a dirty lead's rebuild.
        events_sql = events_sql.replace(f'"{Event._meta.db_table}"', f'"{EVENTS_CTE}"')
        sign = 1 if rule.points > 0 else -1
        parts.append(
            f"SELECT a.lead_id, {int(rule.pk)} AS rule_id, a.id AS event_id, {sign} * a.awarded AS points, "
            f"a.n, a.occurred_at FROM ({_awarded_sql(rule, events_sql)}) AS a"
            + (" WHERE a.awarded > 0" if totalled else "")
        )
        params += events_params
    with connection.cursor() as cursor:
        if not parts:
            cursor.execute(f"DELETE FROM {table} WHERE {scope_sql}", scope_params)
            return 0
        # The entries the events earn now, in a temporary table; then only the difference is written:
        # an incremental tick mostly adds the entries of new events and rewrites nothing else.
        on_commit = " ON COMMIT DELETE ROWS" if _pg() else ""
        cursor.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {LEDGER_TABLE} (lead_id bigint, rule_id bigint, "
            f"event_id bigint, points integer, n integer, at timestamp with time zone){on_commit}"
        )
        cursor.execute(f"DELETE FROM {LEDGER_TABLE}")
        events_table = Event._meta.db_table
        event_scope, event_scope_params = scope.where("lead_id")
        event_scope += f" AND type IN ({', '.join(['%s'] * len(types))})"
        event_scope_params = [*event_scope_params, *sorted(types)]
        if day_start is not None:
            # The days from `since` on, and every event of the types a rule capped in total counts.
            whole_types = sorted({rule.event_type for rule in totalled_rules if rule.active})
            marks = ", ".join(["%s"] * len(whole_types)) or "NULL"
            event_scope += f" AND (occurred_at >= %s OR type IN ({marks}))"
            event_scope_params += [_at(day_start), *whole_types]
        cursor.execute(
            f"WITH {EVENTS_CTE} AS {'MATERIALIZED ' if _pg() else ''}("
            f"SELECT id, lead_id, type, occurred_at, properties FROM {events_table} WHERE {event_scope}) "
            f"INSERT INTO {LEDGER_TABLE} (lead_id, rule_id, event_id, points, n, at) "
            f"SELECT u.lead_id, u.rule_id, u.event_id, u.points, u.n, u.occurred_at "
            f"FROM ({' UNION ALL '.join(parts)}) AS u",
            [*event_scope_params, *params],
        )
        if _pg():
            # Statistics for the planner: without them it joins a 600,000-row batch by nested loops.
            cursor.execute(f"ANALYZE {LEDGER_TABLE}")
        cursor.execute(
            f"DELETE FROM {table} WHERE {scope_sql} AND NOT EXISTS (SELECT 1 FROM {LEDGER_TABLE} n "
            f"WHERE n.rule_id = {table}.rule_id AND n.event_id = {table}.event_id)",
            scope_params,
        )
        cursor.execute(
            # Every entry goes through the unique index: a new one is inserted, a changed one updated, an
            # unchanged one left alone (the WHERE of DO UPDATE). "WHERE true" keeps SQLite from reading
            # ON CONFLICT as a join constraint; a concurrent rebuild of the same lead converges.
            f"INSERT INTO {table} (lead_id, rule_id, event_id, points, n, at) "
            f"SELECT n.lead_id, n.rule_id, n.event_id, n.points, n.n, n.at FROM {LEDGER_TABLE} n WHERE true "
            f"ON CONFLICT (rule_id, event_id) DO UPDATE SET points = excluded.points, n = excluded.n, "
            f"lead_id = excluded.lead_id, at = excluded.at "
            f"WHERE {table}.points <> excluded.points OR {table}.lead_id <> excluded.lead_id "
            f"OR {table}.at <> excluded.at OR {table}.n IS NULL OR {table}.n <> excluded.n",
        )
        written = max(cursor.rowcount, 0)
        cursor.execute(f"DELETE FROM {LEDGER_TABLE}")
        return written


# --- Scores.


def entry_points_sql(se: str = "se", r: str = "r") -> str:
    """SQL: what the ledger entry `se` of the rule `r` earns under the rule as it is now, before decay.

    The `n`-th event of a local day earns what is left of the day cap, `LEAST(n × step, cap) −
    LEAST((n − 1) × step, cap)` with step = |points| (the same sum as `_awarded_sql`, which writes the
    entries), negative for a rule of negative points. Entries of a rule with a cap in total, and those
    written before `n` existed, earn the points they were written with."""
    step = f"ABS({r}.points)"
    cap = f"{r}.cap_per_day"
    share = f"({_least(f'{se}.n * {step}', cap)} - {_least(f'({se}.n - 1) * {step}', cap)})"
    day = f"CASE WHEN {cap} IS NULL THEN {step} ELSE {share} END"
    return (
        f"CASE WHEN {se}.n IS NULL OR {r}.cap_total IS NOT NULL THEN {se}.points "
        f"WHEN {r}.points < 0 THEN -({day}) ELSE {day} END"
    )


def _decayed_sql(now_param: str = "%s") -> str:
    """The decayed value of a ledger entry `se` of rule `r` as of the instant in `now_param`."""
    if _pg():
        # In double precision: EXTRACT returns numeric, and POWER over numeric is ten times slower.
        age = f"GREATEST(EXTRACT(EPOCH FROM ({now_param}::timestamptz - se.at))::float8 / 86400.0, 0)"
        points = f"({entry_points_sql()})::float8"
    else:
        age = f"MAX(julianday({now_param}) - julianday(se.at), 0)"
        points = f"({entry_points_sql()}) * 1.0"
    return (
        f"CASE WHEN r.half_life_days IS NULL THEN {points} "
        f"ELSE {points} * POWER(0.5, {age} / r.half_life_days) END"
    )


def _fit_expression(rules: Sequence[ScoringRule], now: datetime) -> Any:
    total: Any = Value(0)
    for rule in rules:
        total = total + Case(
            When(rule_compile(rule.rule, now=now), then=Value(rule.points)),
            default=Value(0),
            output_field=IntegerField(),
        )
    return total


def scores_select(*, scope: Scope, now: datetime) -> tuple[str, list[Any]]:
    """One SELECT of (lead_id, fit, engagement, score, grade, temperature) for the scope, as of `now`.

    The recomputation writes what it returns and the explanation of one lead reads it, so a score and
    its explanation cannot disagree."""
    thresholds = scoring_settings_get()
    fit_rules = list(ScoringRule.objects.filter(kind=ScoringRule.Kind.FIT, active=True).order_by("pk"))
    fit_sql, fit_params = _sql(
        Lead.objects.filter(scope.q())
        .annotate(fit=_fit_expression(fit_rules, now))
        .values("id", "fit")
        .order_by()
    )
    scope_sql, scope_params = scope.where("se.lead_id")
    engagement_sql = (
        f"SELECT se.lead_id, SUM({_decayed_sql()}) AS engagement "
        f"FROM {ScoreEntry._meta.db_table} se JOIN {ScoringRule._meta.db_table} r ON r.id = se.rule_id "
        f"WHERE r.active AND se.at <= %s AND {scope_sql} GROUP BY se.lead_id"
    )
    at = _at(now)
    fence = " OFFSET 0" if _pg() else " LIMIT -1 OFFSET 0"
    sql = (
        "SELECT b.id AS lead_id, b.fit, b.engagement, b.score, "
        "CASE WHEN b.fit >= %s THEN 'A' WHEN b.fit >= %s THEN 'B' WHEN b.fit >= %s THEN 'C' ELSE 'D' END, "
        "CASE WHEN b.score >= %s AND b.engagement >= %s THEN 'hot' WHEN b.score >= %s THEN 'warm' "
        "ELSE 'cold' END "
        "FROM (SELECT f.id, f.fit, COALESCE(e.engagement, 0) AS engagement, "
        "f.fit + CAST(ROUND(COALESCE(e.engagement, 0)) AS integer) AS score "
        # OFFSET 0 keeps the planner from inlining the subqueries: the fit expression (every fit rule,
        # with its EXISTS) would be computed again for each of the five places that read it.
        f"FROM ({fit_sql}{fence}) AS f LEFT JOIN ({engagement_sql}) AS e ON e.lead_id = f.id{fence}) AS b"
    )
    params = [
        thresholds.grade_a,
        thresholds.grade_b,
        thresholds.grade_c,
        thresholds.hot_score,
        thresholds.hot_min_engagement,
        thresholds.warm_score,
        *fit_params,
        at,
        at,
        *scope_params,
    ]
    return sql, params


@dataclass
class ScoreOutcome:
    leads: int = 0
    changed: int = 0
    became_hot: int = 0
    entries: int = 0

    def add(self, other: ScoreOutcome) -> None:
        self.leads += other.leads
        self.changed += other.changed
        self.became_hot += other.became_hot
        self.entries += other.entries


def _batch_table(cursor: Any) -> None:
    # A temporary table per connection, emptied at commit on PostgreSQL and by hand on SQLite.
    on_commit = " ON COMMIT DELETE ROWS" if _pg() else ""
    cursor.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {BATCH_TABLE} (lead_id bigint PRIMARY KEY, fit integer, "
        f"engagement double precision, score integer, grade varchar(1), temperature varchar(8), "
        f"changed boolean NOT NULL DEFAULT false){on_commit}"
    )
    cursor.execute(f"DELETE FROM {BATCH_TABLE}")


def _scores_write(*, scope: Scope, now: datetime, mark_dirty: bool) -> ScoreOutcome:
    """Compute the scope's scores and write what changed: the lead's score row, the score and
    temperature on the lead, and `lead.hot` in the outbox for each lead that became hot."""
    select_sql, params = scores_select(scope=scope, now=now)
    scores = LeadScore._meta.db_table
    at = _at(now)
    outcome = ScoreOutcome()
    with connection.cursor() as cursor:
        _batch_table(cursor)
        cursor.execute(
            f"INSERT INTO {BATCH_TABLE} (lead_id, fit, engagement, score, grade, temperature) {select_sql}",
            params,
        )
        outcome.leads = max(cursor.rowcount, 0)
        if _pg():
            cursor.execute(f"ANALYZE {BATCH_TABLE}")
        cursor.execute(
            f"INSERT INTO {scores} (lead_id, fit, engagement, score, grade, temperature, computed_at) "
            f"SELECT b.lead_id, 0, 0, 0, 'D', 'cold', %s FROM {BATCH_TABLE} b WHERE true "
            f"ON CONFLICT (lead_id) DO NOTHING",
            [at],
        )
        # Changed = what a user sees: score, fit, grade or temperature (the engagement's decimals drift
        # every night and are stored with the next visible change).
        cursor.execute(
            f"UPDATE {BATCH_TABLE} SET changed = true WHERE EXISTS (SELECT 1 FROM {scores} s "
            f"WHERE s.lead_id = {BATCH_TABLE}.lead_id AND (s.fit <> {BATCH_TABLE}.fit "
            f"OR s.score <> {BATCH_TABLE}.score OR s.grade <> {BATCH_TABLE}.grade "
            f"OR s.temperature <> {BATCH_TABLE}.temperature))"
        )
        outcome.changed = max(cursor.rowcount, 0)
        # Became hot: a conditional update, so of two writers at once only one announces it.
        cursor.execute(
            f"UPDATE {scores} SET temperature = 'hot', hot_since = %s FROM {BATCH_TABLE} b "
            f"WHERE {scores}.lead_id = b.lead_id AND b.temperature = 'hot' AND {scores}.temperature <> 'hot' "
            f"RETURNING {scores}.lead_id",
            [at],
        )
        hot = sorted(row[0] for row in cursor.fetchall())
        cursor.execute(
            f"UPDATE {scores} SET fit = b.fit, engagement = b.engagement, score = b.score, grade = b.grade, "
            f"temperature = b.temperature, computed_at = %s, "
            f"hot_since = CASE WHEN b.temperature = 'hot' THEN {scores}.hot_since END "
            f"FROM {BATCH_TABLE} b WHERE {scores}.lead_id = b.lead_id AND b.changed",
            [at],
        )
        lead_scores_copy(source_table=BATCH_TABLE, now=now)
        if hot:
            by_lead = dict(
                LeadScore.objects.filter(lead_id__in=hot).values_list("lead_id", "score").order_by()
            )
            outbox_put(
                type="lead.hot",
                lead_ids=hot,
                occurred_at=now,
                data={"temperature": Temperature.HOT},
                data_by_lead={lead_id: {"score": score} for lead_id, score in by_lead.items()},
            )
        outcome.became_hot = len(hot)
        if mark_dirty and outcome.changed:
            # Pools that read the score see the change at the next incremental evaluation.
            changed = RawSQL(f"SELECT lead_id FROM {BATCH_TABLE} WHERE changed", ())
            leads_mark_dirty_where(leads=Lead.objects.filter(pk__in=changed), now=now)
        cursor.execute(f"DELETE FROM {BATCH_TABLE}")
    return outcome


def _batch_settings() -> None:
    """For the rest of this transaction (PostgreSQL): room to hash and sort a batch (the engagement
    aggregate of 100,000 leads spills to disk with the default 4 MB), and no JIT (each batch's statement
    is planned anew and compiling it costs more than it saves)."""
    if _pg():
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL work_mem = '64MB'")
            cursor.execute("SET LOCAL jit = off")


def _pools_read_score() -> bool:
    return any(
        rule_reads_score(rule) for rule in Pool.objects.filter(active=True).values_list("rule", flat=True)
    )


def _record(
    *, kind: str, started_at: datetime, started: float, now: datetime, outcome: ScoreOutcome, rebuilt: bool
) -> ScoreRun:
    return ScoreRun.objects.create(
        kind=kind,
        started_at=started_at,
        now=now,
        seconds=time.monotonic() - started,
        leads=outcome.leads,
        changed=outcome.changed,
        became_hot=outcome.became_hot,
        ledger_rebuilt=rebuilt,
    )


def scores_update_dirty(
    lead_ids: list[int],
    now: datetime,
    *,
    events: list[int] | None = None,
    since: Mapping[int, datetime] | None = None,
) -> dict[str, int]:
    """Rescore the leads marked dirty (called by the pools' incremental evaluation, in the transaction
    that claimed them, before the pools read the scores). The ledger is rebuilt only for `events`, the
    leads with new events (None: all of them); the others' entries cannot have changed. A lead in
    `since` (the earliest of its new events) is rebuilt from that local day on: in a tick that is the
    day's events, not the lead's whole history."""
    if not lead_ids:
        return {}
    started_at, started = timezone_now(), time.monotonic()
    scope = Scope(ids=lead_ids)
    outcome = ScoreOutcome()
    rebuild = lead_ids if events is None else events
    if rebuild:
        rules = list(ScoringRule.objects.filter(kind=ScoringRule.Kind.BEHAVIOUR, active=True).order_by("pk"))
        since = since or {}
        whole = [lead_id for lead_id in rebuild if lead_id not in since]
        recent = [lead_id for lead_id in rebuild if lead_id in since]
        if whole:
            outcome.entries += _ledger_rebuild(scope=Scope(ids=whole), rules=rules)
        if recent:
            # One statement for all of them, from the earliest of their days.
            first = min(since[lead_id] for lead_id in recent)
            outcome.entries += _ledger_rebuild(scope=Scope(ids=recent), rules=rules, since=first)
    outcome.add(_scores_write(scope=scope, now=now, mark_dirty=False))
    if outcome.changed:
        _record(
            kind=ScoreRun.Kind.INCREMENTAL,
            started_at=started_at,
            started=started,
            now=now,
            outcome=outcome,
            rebuilt=False,
        )
    return {"scored": outcome.leads, "score_changed": outcome.changed, "became_hot": outcome.became_hot}


def scores_recompute_all(
    *,
    now: datetime,
    rebuild_ledger: bool = False,
    rules_changed: Collection[int] | None = None,
    batch: int = FULL_BATCH,
) -> ScoreRun:
    """Rescore every lead as of `now` (nightly: decay moves scores without any write), in id ranges
    of `batch`, each in its own transaction; with `rebuild_ledger` the ledger is rewritten first (only
    the entries of `rules_changed` when given)."""
    started_at, started = timezone_now(), time.monotonic()
    rules = list(ScoringRule.objects.filter(kind=ScoringRule.Kind.BEHAVIOUR, active=True).order_by("pk"))
    mark_dirty = _pools_read_score()
    bounds = Lead.objects.aggregate(low=Min("pk"), high=Max("pk"))
    outcome = ScoreOutcome()
    if bounds["low"] is not None:
        scopes = [
            Scope(low=start, high=start + batch) for start in range(bounds["low"], bounds["high"] + 1, batch)
        ]
        if rebuild_ledger:
            for scope in scopes:
                with transaction.atomic():
                    _batch_settings()
                    outcome.entries += _ledger_rebuild(scope=scope, rules=rules, only=rules_changed)
            if _pg():
                # The ledger may have grown from nothing: the scores' aggregate needs its statistics.
                with connection.cursor() as cursor:
                    cursor.execute(f"ANALYZE {ScoreEntry._meta.db_table}")
        for scope in scopes:
            with transaction.atomic():
                _batch_settings()
                outcome.add(_scores_write(scope=scope, now=now, mark_dirty=mark_dirty))
    run = _record(
        kind=ScoreRun.Kind.FULL,
        started_at=started_at,
        started=started,
        now=now,
        outcome=outcome,
        rebuilt=rebuild_ledger,
    )
    logger.info(
        "scores recomputed for %d leads in %.1fs (%d changed, %d became hot, ledger %s)",
        outcome.leads,
        run.seconds,
        outcome.changed,
        outcome.became_hot,
        f"rebuilt: {outcome.entries} entries" if rebuild_ledger else "kept",
    )
    return run


def scores_due_full(*, now: datetime) -> tuple[bool, bool]:
    """(a full recomputation is due, the ledger must be rebuilt first).

    Due nightly (the first tick after NURTURE_SCORE_NIGHTLY_HOUR, local time), after the thresholds or
    the rules changed, and at the very first tick; the ledger is rebuilt when the rules changed."""
    thresholds = scoring_settings_get()
    last = ScoreRun.objects.filter(kind=ScoreRun.Kind.FULL).order_by("-started_at").first()
    last_rebuild = (
        ScoreRun.objects.filter(kind=ScoreRun.Kind.FULL, ledger_rebuilt=True).order_by("-started_at").first()
    )
    rebuild = last_rebuild is None or (
        thresholds.rules_changed_at is not None and thresholds.rules_changed_at > last_rebuild.started_at
    )
    if last is None or rebuild or thresholds.updated_at > last.started_at:
        return True, rebuild
    local = localtime(now)
    nightly = local.replace(hour=settings.NURTURE_SCORE_NIGHTLY_HOUR, minute=0, second=0, microsecond=0)
    if nightly > local:
        nightly -= timedelta(days=1)
    return last.now < nightly, False


def _rules_changed() -> list[int] | None:
    """The rules edited since the ledger was last rebuilt (None: never rebuilt, so every rule)."""
    last_rebuild = (
        ScoreRun.objects.filter(kind=ScoreRun.Kind.FULL, ledger_rebuilt=True).order_by("-started_at").first()
    )
    if last_rebuild is None:
        return None
    return list(
        ScoringRule.objects.filter(changed_at__gt=last_rebuild.started_at).values_list("pk", flat=True)
    )


def _try_full_lock() -> bool:
    if not _pg():
        return True
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [FULL_LOCK_KEY])
        return bool(cursor.fetchone()[0])


def _full_unlock() -> None:
    if _pg():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [FULL_LOCK_KEY])


def scores_tick(now: datetime) -> dict[str, int]:
    """Tick step: the nightly (or after a change) recomputation of every lead's score. The leads
    marked dirty are rescored earlier in the tick, with the pools' incremental evaluation."""
    due, rebuild = scores_due_full(now=now)
    if not due or not _try_full_lock():
        return {"full": 0}
    try:
        run = scores_recompute_all(now=now, rebuild_ledger=rebuild, rules_changed=_rules_changed())
    finally:
        _full_unlock()
    return {"full": 1, "scored": run.leads, "score_changed": run.changed, "became_hot": run.became_hot}
