"""`bench dispatch`: the sequence engine's figures (issue 5).

1. Due touches sent by two worker processes through a counting no-op adapter: the rate from the
   first batch handed out to the last send, and every idempotency key counted (duplicates, lost).
2. The idle tick (nothing due) over a million leads and 100,000 active enrollments: seconds and the
   number of queries, beside the query count at a tenth of the size.
3. Enrolling 100,000 leads that entered a pool in one tick: `sequences_trigger`, and the whole tick.

Figures 1 and 2's smaller size each run in a database of their own, nested in the command's, so
that every figure starts from what it names and nothing else. The worker processes are started by
`nurture/bench/workers.py`; they count their sends through `nurture/bench/adapters.py`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection
from django.db.models import Count, Max, Min
from django.test.utils import CaptureQueriesContext
from django.utils.timezone import now as timezone_now

from leads.models import Lead, Pool
from leads.pools import leads_mark_dirty, pool_check, pool_evaluate_full
from nurture.bench.data import list_leads_load
from nurture.bench.database import bench_database
from nurture.bench.ingest import Figure, IngestReport
from nurture.bench.pools_data import pools_data_load
from nurture.bench.workers import send_with_celery, send_with_processes
from nurture.engine import tick
from sequences.dispatch import steps_advance
from sequences.models import Enrollment, Sequence, Touch, TouchState
from sequences.services import sequence_enroll, sequence_save
from sequences.triggers import sequences_trigger

Log = Callable[[str], None]
EXIT_STAGES = ("sql", "won", "lost")
MIL = "mil"
IDLE_DIRTY = 20  # leads marked dirty before the idle tick, at every size
# Idle tick queries at the full size ÷ at a tenth: 1 is the same count; the margin is the few statements
# of a lead joining or leaving a pool, which a tick may or may not find.
QUERIES_RATIO = 1.2


@dataclass
class DispatchSizes:
    touches: int = 100_000
    leads: int = 1_000_000
    events: int = 1_000_000
    enrollments: int = 100_000
    enroll: int = 100_000
    workers: int = 2


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms"


def _analyze() -> None:
    """ANALYZE after a bulk load, as autovacuum would have for tables grown at a human pace."""
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


# --- 1. Due touches through two worker processes.


def _dispatch_figures(*, sizes: DispatchSizes, now: datetime, log: Log) -> tuple[list[Figure], list[str]]:
    log(f"dispatch: {sizes.touches:,} leads set-based, a one-step sequence, enrollments…")
    list_leads_load(count=sizes.touches)
    sequence = sequence_save(
        data={"name": "bench: dispatch", "status": "active", "quiet_hours": None},
        steps=[{"day": 0, "send_time": None, "channel": "console", "text": "{{ lead.name }}，资料已备好。"}],
    )
    lead_ids = list(Lead.objects.order_by("pk").values_list("pk", flat=True))
    started = time.perf_counter()
    enrolled = sequence_enroll(
        sequence=sequence, lead_ids=lead_ids, anchor_at=now - timedelta(minutes=1), now=now
    )["enrolled"]
    _analyze()
    enroll_seconds = time.perf_counter() - started
    log(f"dispatch: steps_advance of {len(enrolled):,} due steps…")
    started = time.perf_counter()
    advanced = steps_advance(now=now)
    advance_seconds = time.perf_counter() - started
    due = set(
        Touch.objects.filter(sequence=sequence, state=TouchState.SCHEDULED, due_at__lte=now).values_list(
            "idempotency_key", flat=True
        )
    )
    mode = "Celery workers" if settings.REDIS_URL else "forked processes"
    log(f"dispatch: {len(due):,} due touches to {sizes.workers} {mode}…")
    send = send_with_celery if settings.REDIS_URL else send_with_processes
    run = send(now=now, expected=len(due), sequence=sequence, workers=sizes.workers)
    sends = run.sends
    states = dict(
        Touch.objects.filter(sequence=sequence).values_list("state").annotate(n=Count("pk")).order_by()
    )
    reclaimed = Touch.objects.filter(sequence=sequence, attempts__gt=1).count()
    lost = len(due - set(sends.keys))
    unexpected = len(set(sends.keys) - due)
    span = (sends.last - run.started) if sends.last else 0.0
    sending = (sends.last - sends.first) if sends.last and sends.first else 0.0
    per_worker = " / ".join(f"{n:,}" for n in sorted(sends.workers.values(), reverse=True))
    figures = [
        Figure(
            key="steps_advance",
            label=f"steps_advance: {len(enrolled):,} due steps into touches",
            value=advance_seconds,
            unit="s",
            target=None,
            detail=f"{advanced.get('claimed', 0):,} enrollments claimed in batches of 1,000 (SKIP LOCKED), "
            f"{advanced.get('scheduled', 0):,} touches scheduled, "
            f"{advanced.get('claimed', 0) / advance_seconds if advance_seconds else 0:,.0f} steps/s",
        ),
        Figure(
            key="dispatch",
            label=f"dispatch: {len(due):,} due touches, {sizes.workers} worker processes, no-op adapter",
            value=len(due) / span if span else 0.0,
            unit="touches/s",
            target=2000,
            detail=f"{sends.total:,} sends in {span:.1f} s from the first batch handed out to the last send "
            f"({sending:.1f} s first send to last), {run.batches:,} batches of "
            f"{settings.NURTURE_DISPATCH_BATCH:,}; {sends.duplicates:,} duplicates, {lost:,} lost (every "
            f"idempotency key counted by the adapter: {len(sends.keys):,} keys of {len(due):,} due"
            + (f", {unexpected:,} not due" if unexpected else "")
            + f"); per worker {per_worker}; touches after: "
            + ", ".join(f"{n:,} {state}" for state, n in sorted(states.items()))
            + f", {reclaimed:,} claimed twice; {run.how}",
        ),
    ]
    notes = [
        f"Dispatch data: {sizes.touches:,} leads (INSERT … SELECT generate_series), sequence_enroll of "
        f"{len(enrolled):,} into a one-step sequence (day 0 at once, a one-line template) and ANALYZE in "
        f"{enroll_seconds:.1f} s; the hand-out ("
        + ("sequences_tick(inline=False): exits, triggers, touches_due_ids, publishing" if run.tick_report
           else "touches_due_ids")
        + f") took {run.handout_seconds:.2f} s."
    ]  # fmt: skip
    if run.problem or sends.duplicates or lost or unexpected:
        notes.append(
            f"DISPATCH FAILED: {run.problem or 'every send recorded'}; {sends.duplicates:,} duplicates, "
            f"{lost:,} lost, {unexpected:,} not due."
        )
    return figures, notes


# --- 2. The idle tick.


@dataclass
class IdleTick:
    leads: int
    enrollments: int
    events: int
    load_seconds: float
    first_seconds: float
    first_steps: dict[str, dict[str, int]]
    seconds: float
    queries: int
    slowest: list[tuple[float, str]]
    steps: dict[str, dict[str, int]]


def _idle_data(*, leads: int, events: int, enrollments: int, now: datetime, log: Log) -> IdleTick:
    """Leads, tags and events (COPY), a pool_entered sequence on the MIL pool (no backfill: it has no
    enrollments yet) and a manual nurture sequence holding `enrollments` leads, next step days away."""
    started = time.perf_counter()
    counts = pools_data_load(leads=leads, events=events, now=now, log=log)
    sequence_save(
        data={"name": "bench: welcome", "status": "active", "trigger": {"type": "pool_entered", "pool": MIL}},
        steps=[{"day": 0, "send_time": "10:00", "text": "欢迎 {{ lead.name }}"}, {"day": 3, "text": "案例"}],
    )
    nurture = sequence_save(
        data={"name": "bench: nurture", "status": "active"},
        steps=[{"day": 3, "send_time": "10:00", "text": "白皮书"}, {"day": 7, "send_time": "10:00"}],
    )
    ids = list(
        Lead.objects.exclude(stage__in=EXIT_STAGES)
        .filter(do_not_contact=False)
        .order_by("pk")
        .values_list("pk", flat=True)[:enrollments]
    )
    log(f"idle: sequence_enroll of {len(ids):,} leads…")
    sequence_enroll(sequence=nurture, lead_ids=ids, anchor_at=now, now=now)
    _analyze()
    return IdleTick(
        leads=counts["leads"],
        enrollments=Enrollment.objects.filter(state="active").count(),
        events=counts["events"],
        load_seconds=time.perf_counter() - started,
        first_seconds=0.0,
        first_steps={},
        seconds=0.0,
        queries=0,
        slowest=[],
        steps={},
    )


def _idle_ticks(run: IdleTick, *, now: datetime, log: Log) -> IdleTick:
    """The whole tick twice: the first does the nightly work (every pool's first full pass, the first
    scoring); the second, a minute later, is the steady idle tick, timed with its queries counted."""
    log(f"idle: first tick over {run.leads:,} leads (the nightly work)…")
    first = tick(now=now)
    run.first_seconds, run.first_steps = first.seconds, first.steps
    log("idle: the second tick (nothing due)…")
    # At a million leads every tick finds a few whose time-dependent rules may have turned (the time
    # crossers) and evaluates them; mark as many dirty at every size, so both sizes take that branch.
    low, high = Lead.objects.aggregate(low=Min("pk"), high=Max("pk")).values()
    spread = [low + i * max((high - low + 1) // IDLE_DIRTY, 1) for i in range(IDLE_DIRTY)]
    leads_mark_dirty(lead_ids=Lead.objects.filter(pk__in=spread).values_list("pk", flat=True), now=now)
    with CaptureQueriesContext(connection) as captured:
        started = time.perf_counter()
        second = tick(now=now + timedelta(minutes=1))
        run.seconds = time.perf_counter() - started
    run.steps = second.steps
    run.queries = len(captured.captured_queries)
    timed = sorted(((float(q["time"]), q["sql"]) for q in captured.captured_queries), reverse=True)
    run.slowest = [(seconds, " ".join(sql.split())[:160]) for seconds, sql in timed[:3]]
    run.enrollments = Enrollment.objects.filter(state="active").count()
    return run


def _active_work(steps: dict[str, dict[str, int]]) -> str:
    done = {f"{name}.{key}": n for name, counts in steps.items() for key, n in counts.items() if n}
    return ", ".join(f"{key} {n:,}" for key, n in sorted(done.items())) or "nothing"


# --- 3. Enrolling the leads that entered a pool.


def _enroll_figures(*, sizes: DispatchSizes, now: datetime, log: Log) -> list[Figure]:
    """A bench pool with an active pool_entered sequence whose trigger cursor is set; `enroll` leads
    join it (pool_evaluate_full), then sequences_trigger enrolls them; then as many again, through a
    whole tick."""
    rule = {"field": "source", "op": "eq", "value": "bench-webinar"}
    pool_check(slug="bench-webinar", rule=rule)
    pool = Pool.objects.create(slug="bench-webinar", name="bench: webinar attendees", rule=rule)
    sequence = sequence_save(
        data={"name": "bench: after the webinar", "status": "active",
              "trigger": {"type": "pool_entered", "pool": pool.slug}},
        steps=[{"day": 1, "send_time": "10:00", "text": "{{ lead.name }}，回放在这里"}, {"day": 4}],
    )  # fmt: skip
    pools = list(Pool.objects.filter(active=True))
    pool_evaluate_full(pool=pool, now=now, pools=pools)
    sequences_trigger(now=now)  # the first run sets the trigger cursor: no backfill
    candidates = list(
        Lead.objects.exclude(stage__in=EXIT_STAGES)
        .filter(do_not_contact=False)
        .order_by("-pk")
        .values_list("pk", flat=True)[: 2 * sizes.enroll]
    )
    figures = []
    for round_, (label, moment) in enumerate(
        (("trigger", now + timedelta(minutes=1)), ("tick", now + timedelta(minutes=2)))
    ):
        ids = candidates[round_ * sizes.enroll : (round_ + 1) * sizes.enroll]
        Lead.objects.filter(pk__in=ids).update(source="bench-webinar", updated_at=moment)
        log(f"enroll: {len(ids):,} leads join {pool.slug} (pool_evaluate_full)…")
        started = time.perf_counter()
        joined = pool_evaluate_full(pool=pool, now=moment, pools=pools).joined
        join_seconds = time.perf_counter() - started
        before = Enrollment.objects.filter(sequence=sequence).count()
        started = time.perf_counter()
        if label == "trigger":
            log(f"enroll: sequences_trigger for {joined:,} new members…")
            sequences_trigger(now=moment)
        else:
            log(f"enroll: the whole tick for {joined:,} new members…")
            report = tick(now=moment)
        seconds = time.perf_counter() - started
        enrolled = Enrollment.objects.filter(sequence=sequence).count() - before
        active = Sequence.objects.filter(status="active").exclude(trigger__type="manual").count()
        if label == "trigger":
            figures.append(
                Figure(
                    key="enroll_trigger",
                    label=f"enrolling {joined:,} leads that entered a pool in one tick",
                    value=seconds,
                    unit="s",
                    target=10,
                    detail=f"sequences_trigger: {enrolled:,} enrolled into a pool_entered sequence from "
                    f"{joined:,} new memberships (joined by pool_evaluate_full in {join_seconds:.1f} s), "
                    f"{active} triggered sequences active, {Lead.objects.count():,} leads",
                )
            )
        else:
            figures.append(
                Figure(
                    key="enroll_tick",
                    label=f"the whole tick that enrolls {joined:,} leads from a pool",
                    value=seconds,
                    unit="s",
                    target=None,
                    detail=f"tick(): {enrolled:,} enrolled, "
                    f"{Enrollment.objects.filter(state='active').count():,} active enrollments after; "
                    f"the tick did {_active_work(report.steps)}",
                )
            )
    return figures


# --- The scenario.


def bench_dispatch(*, sizes: DispatchSizes, log: Log) -> IngestReport:
    """Run the sequence engine's figures; 1 and the smaller idle tick in nested databases of their
    own, the rest in the current (throwaway) one."""
    report = IngestReport()
    now = timezone_now()
    with bench_database() as name:
        log(f"dispatch: database {name} created and migrated")
        figures, notes = _dispatch_figures(sizes=sizes, now=now, log=log)
    report.figures += figures
    report.notes += notes

    small_sizes = {
        "leads": max(sizes.leads // 10, 1),
        "events": sizes.events // 10,
        "enrollments": max(sizes.enrollments // 10, 1),
    }
    with bench_database() as name:
        log(f"idle: database {name} created and migrated for a tenth of the size")
        small = _idle_data(**small_sizes, now=now, log=log)
        small = _idle_ticks(small, now=now, log=log)
    log("idle: the full size, in the bench database…")
    full = _idle_data(leads=sizes.leads, events=sizes.events, enrollments=sizes.enrollments, now=now, log=log)
    full = _idle_ticks(full, now=now, log=log)
    slowest = "; ".join(f"{_ms(seconds)} {sql}" for seconds, sql in full.slowest)
    report.figures += [
        Figure(
            key="idle_tick",
            label=f"idle tick, {full.leads:,} leads, {full.enrollments:,} active enrollments",
            value=full.seconds,
            unit="s",
            target=2,
            detail=f"the whole tick() a minute after a first, nothing due, {IDLE_DIRTY} leads marked dirty "
            f"before it: {full.queries} queries; it did {_active_work(full.steps)}; the first tick (nightly "
            f"work: every pool's first full pass, the first scoring) took {full.first_seconds:.1f} s",
        ),
        Figure(
            key="idle_tick_queries",
            label=f"idle tick queries, {full.leads:,} ÷ {small.leads:,} leads",
            value=full.queries / small.queries if small.queries else 0.0,
            unit="×",
            target=QUERIES_RATIO,
            detail=f"{full.queries} queries at {full.leads:,} leads / {full.enrollments:,} enrollments, "
            f"{small.queries} at {small.leads:,} / {small.enrollments:,} ({small.seconds:.2f} s; it did "
            f"{_active_work(small.steps)}); a count growing with the leads would be "
            f"{full.leads / small.leads:.0f}×",
        ),
    ]
    report.notes.append(
        f"Idle data: {full.leads:,} leads with their tags and {full.events:,} events (COPY, as bench pools), "
        f"a pool_entered sequence on MIL and a manual one holding the enrollments (next step on day 3), "
        f"loaded in {full.load_seconds:.0f} s. Slowest statements of the idle tick: {slowest}."
    )
    report.figures += _enroll_figures(sizes=sizes, now=now + timedelta(minutes=2), log=log)
    return report
