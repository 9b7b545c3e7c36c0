"""`bench pools`: full and incremental evaluation of the default pools over generated leads and
events, the MQL pool beside one hand-written SQL statement and beside a per-lead `rule_matches` loop,
and the process's peak RSS."""

from __future__ import annotations

import random
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass

from django.db import connection
from django.utils.timezone import now as timezone_now

from leads.models import Lead, Pool, PoolMembership
from leads.pools import leads_mark_dirty, pool_evaluate_full, pools_evaluate_dirty, pools_in_order
from leads.rules import rule_matches
from nurture.bench.ingest import Figure, IngestReport
from nurture.bench.pools_data import pools_data_load
from nurture.bench.scoring import bench_rule_recount, bench_scores

Log = Callable[[str], None]

# The MQL rule of the data migrations, by hand: MIL (a phone, a WeCom id or a wecom_added event), a
# target industry, a need:* tag, and a buying plan (property) or a BANT timeline.
MQL_SQL = """
CREATE TEMP TABLE bench_mql_by_hand AS
SELECT l.id FROM leads_lead l
WHERE (
    (l.phone IS NOT NULL AND l.phone <> '')
    OR (l.wecom_external_userid IS NOT NULL AND l.wecom_external_userid <> '')
    OR EXISTS (SELECT 1 FROM leads_event e WHERE e.lead_id = l.id AND e.type = 'wecom_added')
)
AND l.industry IN ('制造', '信息科技', '金融', '医疗')
AND EXISTS (
    SELECT 1 FROM leads_leadtag lt JOIN leads_tag t ON t.id = lt.tag_id
    WHERE lt.lead_id = l.id AND t."group" = 'need' AND lt.count >= 1
)
AND (
    (l.properties ? 'buying_plan' AND l.properties -> 'buying_plan' NOT IN ('null'::jsonb, '""'::jsonb))
    OR l.bant_timeline
)
"""


@dataclass
class PoolsSizes:
    leads: int = 1_000_000
    events: int = 10_000_000
    dirty: int = 1_000
    loop: int = 10_000


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _size(slug: str) -> int:
    return PoolMembership.objects.filter(pool__slug=slug, left_at__isnull=True).count()


def _evaluate_all(pools: list[Pool], now, log: Log, label: str) -> tuple[float, dict[str, float]]:
    seconds: dict[str, float] = {}
    for pool in pools_in_order(pools):
        log(f"pools: {label} full evaluation of {pool.slug}…")
        started = time.perf_counter()
        pool_evaluate_full(pool=pool, now=now, pools=pools)
        seconds[pool.slug] = time.perf_counter() - started
    return sum(seconds.values()), seconds


def _by_hand_seconds() -> tuple[float, int]:
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS bench_mql_by_hand")
        started = time.perf_counter()
        cursor.execute(MQL_SQL)
        seconds = time.perf_counter() - started
        cursor.execute("SELECT count(*) FROM bench_mql_by_hand")
        count = cursor.fetchone()[0]
        cursor.execute("DROP TABLE bench_mql_by_hand")
    return seconds, count


def bench_pools(*, sizes: PoolsSizes, log: Log) -> IngestReport:
    """Run the pool figures on the current (throwaway) database and return them."""
    report = IngestReport()
    now = timezone_now()
    started = time.perf_counter()
    counts = pools_data_load(leads=sizes.leads, events=sizes.events, now=now, log=log)
    report.notes.append(
        f"Data: {counts['leads']:,} leads, {counts['lead_tags']:,} lead tags and {counts['events']:,} "
        f"events over {90} days, loaded with COPY in {time.perf_counter() - started:.0f} s (indexes and "
        "foreign keys of tags and events put back after), then VACUUM ANALYZE."
    )
    pools = list(Pool.objects.filter(active=True))
    mql = next(p for p in pools if p.slug == "mql")

    # 1. Full evaluation of every default pool: first from empty (everyone joins), then again.
    first, first_each = _evaluate_all(pools, now, log, "first")
    sizes_now = {p.slug: _size(p.slug) for p in pools}
    each = ", ".join(f"{slug} {seconds:.2f} s ({sizes_now[slug]:,})" for slug, seconds in first_each.items())
    report.figures.append(
        Figure(
            key="pools_full_first",
            label="full evaluation, all default pools (from empty)",
            value=first,
            unit="s",
            target=20,
            detail=f"{len(pools)} pools over {counts['leads']:,} leads, every member joins: {each}",
        )
    )
    again, again_each = _evaluate_all(pools, now, log, "second")
    each = ", ".join(f"{slug} {seconds:.2f} s" for slug, seconds in again_each.items())
    report.figures.append(
        Figure(
            key="pools_full_again",
            label="full evaluation, all default pools (again)",
            value=again,
            unit="s",
            target=20,
            detail=f"the nightly re-evaluation, nothing changed: {each}",
        )
    )

    # 2. The MQL pool beside one hand-written SQL statement computing the same membership.
    log("pools: the MQL membership by one hand-written SQL statement…")
    by_hand, by_hand_count = _by_hand_seconds()
    if by_hand_count != sizes_now["mql"]:
        report.notes.append(
            f"MISMATCH: the hand-written MQL statement finds {by_hand_count:,} leads, the pool holds "
            f"{sizes_now['mql']:,}."
        )
    for key, label, seconds in (
        ("mql_vs_sql_first", "MQL full evaluation ÷ one SQL statement (from empty)", first_each["mql"]),
        ("mql_vs_sql_again", "MQL full evaluation ÷ one SQL statement (again)", again_each["mql"]),
    ):
        report.figures.append(
            Figure(
                key=key,
                label=label,
                value=seconds / by_hand if by_hand else 0.0,
                unit="×",
                target=1.5,
                detail=f"pool_evaluate_full {seconds:.2f} s vs CREATE TEMP TABLE AS SELECT {by_hand:.2f} s, "
                f"{by_hand_count:,} members either way",
            )
        )

    # 3. The naive way for contrast: rule_matches per lead, over a sample, projected to every lead.
    loop_n = min(sizes.loop, counts["leads"])
    sample_ids = random.Random(5).sample(range(counts["leads"]), loop_n)
    low = Lead.objects.order_by("pk").values_list("pk", flat=True).first() or 0
    sample = list(Lead.objects.filter(pk__in=[low + i for i in sample_ids]))
    log(f"pools: rule_matches of the MQL rule on {len(sample):,} leads, one by one…")
    started = time.perf_counter()
    matched = sum(rule_matches(mql.rule, lead, now=now) for lead in sample)
    loop_seconds = time.perf_counter() - started
    projected = loop_seconds * counts["leads"] / max(len(sample), 1)
    report.figures.append(
        Figure(
            key="mql_loop",
            label="MQL full evaluation, set-based vs rule_matches per lead",
            value=first_each["mql"],
            unit="s",
            target=None,
            detail=f"{len(sample):,} leads one by one in {loop_seconds:.1f} s ({matched:,} match)",
            naive=projected,
            naive_detail=f"rule_matches per lead, {len(sample):,} leads timed and projected to "
            f"{counts['leads']:,}",
        )
    )

    # 4. Scoring: every lead from scratch, the nightly rescoring, 1,000 dirty leads (before the pools'
    # incremental figure, which then rescores its dirty leads as each tick does, in steady state).
    report.figures += bench_scores(now=now, leads=counts["leads"], dirty=sizes.dirty, log=log)

    # 5. Incremental: 1,000 dirty leads, half of them changed so that some join and some leave.
    dirty_ids = [
        low + i for i in random.Random(6).sample(range(counts["leads"]), min(sizes.dirty, counts["leads"]))
    ]
    changed = dirty_ids[: len(dirty_ids) // 2]
    Lead.objects.filter(pk__in=changed).update(bant_timeline=True)
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE leads_lead SET properties = properties - 'buying_plan', bant_timeline = false "
            "WHERE id = ANY(%s)",
            [dirty_ids[len(changed) : len(changed) + len(changed) // 2]],
        )
    leads_mark_dirty(lead_ids=dirty_ids, now=now)
    log(f"pools: incremental evaluation of {len(dirty_ids):,} dirty leads…")
    started = time.perf_counter()
    totals = pools_evaluate_dirty(now=now)
    dirty_seconds = time.perf_counter() - started
    report.figures.append(
        Figure(
            key="pools_dirty",
            label=f"incremental evaluation, {len(dirty_ids):,} dirty leads",
            value=dirty_seconds,
            unit="s",
            target=1,
            detail=f"pools_evaluate_dirty over {len(pools)} pools after attribute changes, as in each tick "
            f"with the rescoring of the same leads first (their ledger kept: no new events): "
            f"{totals['evaluated']:,} evaluated, {totals.get('scored', 0):,} rescored, "
            f"{totals['joined']:,} joined, {totals['left']:,} left",
        )
    )

    # 5b. The same with new events: 1,000 other leads each read an article (recorded as the API does),
    # so their score ledger is rebuilt before the pools look (an attribute change only rescores).
    from leads.services import EventInput, event_record_bulk

    event_ids = [
        low + i for i in random.Random(8).sample(range(counts["leads"]), min(sizes.dirty, counts["leads"]))
    ]
    event_record_bulk(
        items=[
            EventInput(
                type="content_viewed",
                occurred_at=now,
                properties={"form": "whitepaper"},
                event_id=f"bench-dirty-{lead_id}",
                lead_id=lead_id,
                identity=None,
            )
            for lead_id in event_ids
        ],
        now=now,
    )
    log(f"pools: incremental evaluation of {len(event_ids):,} leads with a new event…")
    started = time.perf_counter()
    totals = pools_evaluate_dirty(now=now)
    event_seconds = time.perf_counter() - started
    report.figures.append(
        Figure(
            key="pools_dirty_events",
            label=f"incremental evaluation, {len(event_ids):,} dirty leads with a new event each",
            value=event_seconds,
            unit="s",
            target=1,
            detail=f"pools_evaluate_dirty over {len(pools)} pools after one content_viewed event per lead "
            f"(event_record_bulk): {totals['evaluated']:,} evaluated, {totals.get('scored', 0):,} rescored "
            f"with their ledger rebuilt, {totals['joined']:,} joined, {totals['left']:,} left",
        )
    )

    # 5c. Last, as it leaves the ledger with millions of deleted entries: a rule that counts other events.
    recount = bench_rule_recount(now=now, log=log)
    if recount is not None:
        report.figures.append(recount)

    # 6. Peak RSS of the process (data generation, evaluation and all).
    report.figures.append(
        Figure(
            key="peak_rss",
            label="peak RSS of the process",
            value=_peak_rss_mb(),
            unit="MB",
            target=300,
            detail="resource.getrusage(RUSAGE_SELF).ru_maxrss at the end (includes the data load)",
        )
    )
    return report
