"""`manage.py bench ingest`: the ingest figures, on a throwaway PostgreSQL database."""

from __future__ import annotations

import sys
from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from nurture.bench.database import bench_database, bench_database_refuse_unless_postgresql
from nurture.bench.dispatch import DispatchSizes, bench_dispatch
from nurture.bench.ingest import IngestSizes, bench_ingest, bench_settings
from nurture.bench.pools import PoolsSizes, bench_pools
from nurture.bench.report import API_NOTE, report_table, results_append, results_section
from nurture.bench.workspace import WorkspaceSizes, bench_workspace

QUICK = IngestSizes(leads=2_000, events=2_000, list_leads=20_000, naive_sample=200, list_repeat=5)
QUICK_POOLS = PoolsSizes(leads=2_000, events=20_000, dirty=200, loop=200)
DISPATCH_NOTE = (
    "The machine is shared: other processes on its cores lower the rates and lengthen the ticks, so "
    "read the figures as a lower bound of what an idle machine does."
)
QUICK_DISPATCH = DispatchSizes(touches=2_000, leads=2_000, events=2_000, enrollments=200, enroll=200)
QUICK_WORKSPACE = WorkspaceSizes(leads=2_000, events=20_000, long_events=2_000, repeat=5)
WORKSPACE_NOTE = (
    "Each GET goes through Django's test client in-process (`force_login`: session, middleware, views, "
    "templates), no socket or HTTP server; the queries are counted on one extra GET "
    "(CaptureQueriesContext), not on the timed ones."
)


class Command(BaseCommand):
    help = (
        "Benchmark harness. `ingest`: bulk lead upsert and bulk events through the API, and the "
        "tag-filtered lead list over a big table, each beside the naive way. `pools`: full and "
        "incremental evaluation of the default pools over generated leads and events. `dispatch`: due "
        "touches sent by worker processes (rate, duplicates, lost), the idle tick, enrolling a pool's new "
        "members. `workspace`: the SDR workspace's hot queue, lead page and team page over generated leads "
        "and events. Runs on a database it creates and drops; PostgreSQL only."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "suite", choices=["ingest", "pools", "dispatch", "workspace"], help="what to measure"
        )
        parser.add_argument(
            "--leads",
            type=int,
            default=None,
            help=f"ingest: leads to bulk upsert ({IngestSizes.leads:,}); pools: leads generated "
            f"({PoolsSizes.leads:,}); dispatch: leads under the idle tick ({DispatchSizes.leads:,}); "
            f"workspace: leads generated ({WorkspaceSizes.leads:,})",
        )
        parser.add_argument(
            "--events",
            type=int,
            default=None,
            help=f"ingest: events to post ({IngestSizes.events:,}); pools: events generated "
            f"({PoolsSizes.events:,}); dispatch: events under the idle tick ({DispatchSizes.events:,}); "
            f"workspace: events generated ({WorkspaceSizes.events:,})",
        )
        parser.add_argument(
            "--touches", type=int, default=DispatchSizes.touches, help="dispatch: due touches sent"
        )
        parser.add_argument(
            "--enrollments",
            type=int,
            default=DispatchSizes.enrollments,
            help="dispatch: active enrollments under the idle tick",
        )
        parser.add_argument(
            "--enroll",
            type=int,
            default=DispatchSizes.enroll,
            help="dispatch: leads that enter a pool and are enrolled in one tick",
        )
        parser.add_argument(
            "--dirty", type=int, default=PoolsSizes.dirty, help="pools: dirty leads evaluated"
        )
        parser.add_argument(
            "--loop", type=int, default=PoolsSizes.loop, help="pools: leads the rule_matches loop checks"
        )
        parser.add_argument(
            "--list-leads", type=int, default=IngestSizes.list_leads, help="leads in the table the list reads"
        )
        parser.add_argument(
            "--naive-sample", type=int, default=IngestSizes.naive_sample, help="rows the naive way handles"
        )
        parser.add_argument(
            "--repeat",
            type=int,
            default=IngestSizes.list_repeat,
            help="ingest: list requests timed; workspace: GETs timed per page",
        )
        parser.add_argument("--skip-naive", action="store_true", help="measure only our way")
        parser.add_argument(
            "--http",
            type=int,
            default=0,
            metavar="CLIENTS",
            help="also post the leads and events over real HTTP to gunicorn, from CLIENTS clients at once",
        )
        parser.add_argument("--http-workers", type=int, default=2, help="gunicorn workers for --http")
        parser.add_argument("--quick", action="store_true", help="small sizes (a smoke test of the harness)")
        parser.add_argument(
            "--write-results", action="store_true", help="append a dated section to bench/RESULTS.md"
        )
        parser.add_argument(
            "--results-file",
            type=Path,
            default=Path(settings.BASE_DIR) / "bench" / "RESULTS.md",
            help="where --write-results appends",
        )

    def handle(self, *args: Any, **options: Any) -> str:
        bench_database_refuse_unless_postgresql()
        if options["suite"] == "pools":
            return self._pools(options)
        if options["suite"] == "dispatch":
            return self._dispatch(options)
        if options["suite"] == "workspace":
            return self._workspace(options)
        options["leads"] = options["leads"] or IngestSizes.leads
        options["events"] = options["events"] or IngestSizes.events
        if options["quick"]:
            sizes = IngestSizes(
                **{
                    **QUICK.__dict__,
                    "skip_naive": options["skip_naive"],
                    "http_clients": options["http"],
                    "http_workers": options["http_workers"],
                }
            )
        else:
            sizes = IngestSizes(
                leads=options["leads"],
                events=options["events"],
                list_leads=options["list_leads"],
                naive_sample=options["naive_sample"],
                list_repeat=options["repeat"],
                skip_naive=options["skip_naive"],
                http_clients=options["http"],
                http_workers=options["http_workers"],
            )
        log = self._log(options)
        with bench_database() as name, bench_settings():
            log(f"bench database {name} created and migrated")
            report = bench_ingest(sizes=sizes, log=log)
            section = results_section(report, command=" ".join(["manage.py", *sys.argv[1:]]))
        log(f"bench database {name} dropped")
        self.stdout.write(report_table(report))
        self.stdout.write(API_NOTE)
        if options["write_results"]:
            results_append(options["results_file"], section)
            self.stdout.write(f"appended to {options['results_file']}")
        return ""

    def _log(self, options: dict[str, Any]) -> Any:
        verbose = options["verbosity"] >= 1

        def log(line: str) -> None:
            if verbose:
                self.stderr.write(line)
                self.stderr.flush()

        return log

    def _pools(self, options: dict[str, Any]) -> str:
        if options["quick"]:
            sizes = QUICK_POOLS
        else:
            sizes = PoolsSizes(
                leads=options["leads"] or PoolsSizes.leads,
                events=options["events"] if options["events"] is not None else PoolsSizes.events,
                dirty=options["dirty"],
                loop=options["loop"],
            )
        log = self._log(options)
        with bench_database() as name, bench_settings():
            log(f"bench database {name} created and migrated")
            report = bench_pools(sizes=sizes, log=log)
            section = results_section(
                report, command=" ".join(["manage.py", *sys.argv[1:]]), suite="pools", note=""
            )
        log(f"bench database {name} dropped")
        self.stdout.write(report_table(report))
        if options["write_results"]:
            results_append(options["results_file"], section)
            self.stdout.write(f"appended to {options['results_file']}")
        return ""

    def _dispatch(self, options: dict[str, Any]) -> str:
        if options["quick"]:
            sizes = QUICK_DISPATCH
        else:
            sizes = DispatchSizes(
                touches=options["touches"],
                leads=options["leads"] or DispatchSizes.leads,
                events=options["events"] if options["events"] is not None else DispatchSizes.events,
                enrollments=options["enrollments"],
                enroll=options["enroll"],
            )
        log = self._log(options)
        with bench_database() as name, bench_settings():
            log(f"bench database {name} created and migrated")
            report = bench_dispatch(sizes=sizes, log=log)
            section = results_section(
                report, command=" ".join(["manage.py", *sys.argv[1:]]), suite="dispatch", note=DISPATCH_NOTE
            )
        log(f"bench database {name} dropped")
        self.stdout.write(report_table(report))
        if options["write_results"]:
            results_append(options["results_file"], section)
            self.stdout.write(f"appended to {options['results_file']}")
        return ""

    def _workspace(self, options: dict[str, Any]) -> str:
        if options["quick"]:
            sizes = QUICK_WORKSPACE
        else:
            sizes = WorkspaceSizes(
                leads=options["leads"] or WorkspaceSizes.leads,
                events=options["events"] if options["events"] is not None else WorkspaceSizes.events,
                repeat=options["repeat"],
            )
        log = self._log(options)
        with bench_database() as name, bench_settings():
            log(f"bench database {name} created and migrated")
            report, failures = bench_workspace(sizes=sizes, log=log)
            section = results_section(
                report, command=" ".join(["manage.py", *sys.argv[1:]]), suite="workspace", note=WORKSPACE_NOTE
            )
        log(f"bench database {name} dropped")
        self.stdout.write(report_table(report))
        self.stdout.write(WORKSPACE_NOTE)
        if failures:
            # A page that does not answer 200 measured nothing: no results appended, a clear error.
            raise CommandError("bench workspace: " + "; ".join(failures))
        if options["write_results"]:
            results_append(options["results_file"], section)
            self.stdout.write(f"appended to {options['results_file']}")
        return ""
