"""`bench workspace`: the SDR workspace's pages (the hot queue, the lead page, the team table) rendered
through Django's test client over a million leads and ten million events, median and p95 of repeated
GETs and the SQL queries of each."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils.timezone import now as timezone_now

from nurture.bench.ingest import Figure, IngestReport
from nurture.bench.workspace_data import SDRS, WorkspaceData, workspace_data_load

Log = Callable[[str], None]
WARMUPS = 2
PAGE_TARGET_MS = 200
# The queue filtered on the most common industry of the generated leads (14% of them).
QUEUE_INDUSTRY = "制造"


@dataclass
class WorkspaceSizes:
    leads: int = 1_000_000
    events: int = 10_000_000
    long_events: int = 2_000  # the hot lead with a long history
    repeat: int = 21


@dataclass
class PageRun:
    """The timings of one page: milliseconds of each timed GET, its queries, the slowest of them."""

    path: str
    status: int
    ms: list[float] = field(default_factory=list)
    queries: int = 0
    slowest_ms: float = 0.0
    sql_ms: float = 0.0
    slowest_sql: str = ""
    failure: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.ms) if self.ms else 0.0

    @property
    def p95(self) -> float:
        if len(self.ms) < 2:
            return self.median
        return statistics.quantiles(self.ms, n=20, method="inclusive")[18]


def _failure(path: str, response) -> str:
    where = f" → {response['Location']}" if response.has_header("Location") else ""
    return f"GET {path} answered {response.status_code}{where}, not 200"


def page_measure(*, client: Client, path: str, repeat: int) -> PageRun:
    """Two warm-ups, one GET with its queries captured, then `repeat` timed GETs (queries not
    captured: the debug cursor would add its own cost)."""
    run = PageRun(path=path, status=0)
    try:
        return _page_measure(client=client, path=path, repeat=repeat, run=run)
    except Exception as error:  # the test client re-raises the view's exception: report it as a failure
        run.failure = f"GET {path} raised {type(error).__name__}: {str(error)[:300]}"
        return run


def _page_measure(*, client: Client, path: str, repeat: int, run: PageRun) -> PageRun:
    for _ in range(WARMUPS):
        response = client.get(path)
        run.status = response.status_code
        if response.status_code != 200:
            run.failure = _failure(path, response)
            return run
    with CaptureQueriesContext(connection) as captured:
        client.get(path)
    run.queries = len(captured.captured_queries)
    run.sql_ms = sum(float(q["time"]) for q in captured.captured_queries) * 1000
    if captured.captured_queries:
        slowest = max(captured.captured_queries, key=lambda q: float(q["time"]))
        run.slowest_ms, run.slowest_sql = float(slowest["time"]) * 1000, slowest["sql"]
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.get(path)
        run.ms.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            run.status, run.failure = response.status_code, _failure(path, response)
            return run
    return run


def _figure(key: str, label: str, run: PageRun, target: float | None, what: str) -> Figure:
    detail = (
        f"GET {run.path}: {what}; median of {len(run.ms)} after {WARMUPS} warm-ups, p95 {run.p95:,.1f} ms, "
        f"{run.queries} SQL queries taking {run.sql_ms:,.0f} ms together, "
        f"the slowest {run.slowest_ms:,.1f} ms"
    )
    if run.failure:
        # Nothing was measured: no figure beside a target, the status code in the label.
        label, target, detail = f"{label} (FAILED, {run.status})", None, f"REQUEST FAILED: {run.failure}"
    return Figure(key=key, label=label, value=run.median, unit="ms", target=target, detail=detail)


def _slowest_note(label: str, run: PageRun) -> str:
    sql = " ".join(run.slowest_sql.split())
    return f"Slowest query of {label} ({run.slowest_ms:,.1f} ms): {sql[:600]}{'…' if len(sql) > 600 else ''}"


def bench_workspace(*, sizes: WorkspaceSizes, log: Log) -> tuple[IngestReport, list[str]]:
    """Run the workspace figures on the current (throwaway) database; return them and the failures."""
    report = IngestReport()
    now = timezone_now()
    data: WorkspaceData = workspace_data_load(
        leads=sizes.leads, events=sizes.events, long_events=sizes.long_events, now=now, log=log
    )
    report.notes.append(
        f"Data: {data.leads:,} leads, {data.lead_tags:,} lead tags and {data.events:,} events (COPY as in "
        f"`bench pools`, {data.load_seconds:.0f} s), every lead scored with the ledger built "
        f"({data.scoring_seconds:.0f} s) and every default pool evaluated ({data.pools_seconds:.0f} s); then "
        f"{data.hot:,} leads hot ({data.hot_in_queue:,} in the bench SDR's queue), {data.owned:,} owned by "
        f"{SDRS} SDRs with an open assignment and an open call task each, {data.notes:,} notes "
        f"({data.staff_seconds:.0f} s with VACUUM ANALYZE)."
    )
    users = get_user_model()
    sdr, manager = Client(), Client()
    sdr.force_login(users.objects.get(pk=data.sdr_id))
    manager.force_login(users.objects.get(pk=data.manager_id))

    pages = [
        ("queue", "the hot queue as an SDR", sdr, "/workspace/", PAGE_TARGET_MS,
         f"first page (50) of {data.hot_in_queue:,} hot leads unassigned or the SDR's, as the SDR"),
        ("queue_industry", f"the hot queue ?industry={QUEUE_INDUSTRY}", sdr,
         f"/workspace/?industry={QUEUE_INDUSTRY}", PAGE_TARGET_MS,
         "the same queue filtered on the most common industry (14% of the leads)"),
        ("lead_long", f"lead page, hot lead with {data.long_lead_events:,} events", sdr,
         f"/workspace/leads/{data.long_lead_id}/", PAGE_TARGET_MS,
         f"lead {data.long_lead_id}, the SDR's: {data.long_lead_events:,} events, "
         f"{data.long_lead_entries:,} score entries, 40 notes, 4 assignments; profile, score explanation, "
         "pools, tags, timeline, open tasks"),
        ("lead_typical", f"lead page, typical lead ({data.typical_lead_events} events)", sdr,
         f"/workspace/leads/{data.typical_lead_id}/", PAGE_TARGET_MS,
         f"lead {data.typical_lead_id}, hot and nobody's (in the queue), {data.typical_lead_events} events"),
        ("team", "the team page as a manager", manager, "/workspace/team/", None,
         "the SDR team table (10 SDRs and the demo's) as an sdr_manager"),
    ]  # fmt: skip
    runs: dict[str, PageRun] = {}
    failures = []
    for key, label, client, path, target, what in pages:
        log(f"workspace: GET {path} ×{sizes.repeat}…")
        run = page_measure(client=client, path=path, repeat=sizes.repeat)
        runs[key] = run
        report.figures.append(_figure(key, label, run, target, what))
        if run.failure:
            failures.append(run.failure)
        elif run.slowest_sql:
            report.notes.append(_slowest_note(label, run))

    long, typical = runs["lead_long"], runs["lead_typical"]
    if not long.failure and not typical.failure:
        report.figures.append(
            Figure(
                key="lead_queries_ratio",
                label="lead page queries, long history ÷ typical",
                value=long.queries / max(typical.queries, 1),
                unit="×",
                target=1.2,
                detail=f"{long.queries} queries for {data.long_lead_events:,} events vs {typical.queries} "
                f"for {data.typical_lead_events}: a bounded page issues as many whatever the history (the "
                "margin: a related read that runs only when the lead has notes, assignments or tasks)",
            )
        )
    return report, failures
