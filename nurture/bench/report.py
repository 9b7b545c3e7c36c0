"""What the bench prints and what it appends to bench/RESULTS.md."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import django
from django.conf import settings
from django.db import connection
from django.utils import timezone

from nurture.bench.ingest import Figure, IngestReport

API_NOTE = (
    "Through the API = Django's test client (DRF APIClient) in-process: the full middleware stack, "
    "API-key authentication, throttle (Redis), serializers and views, JSON bodies of 1,000 items "
    "encoded before the clock starts; no socket or HTTP server. Rows marked HTTP go over real sockets "
    "to gunicorn, several clients at once (their detail says how many). The naive figures run "
    "in-process without the HTTP layer, so the ratio understates the gain."
)


def machine_facts() -> dict[str, str]:
    """CPU count as `nproc` sees it, RAM from /proc/meminfo, and the software versions."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 0
    ram = "?"
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        postgres = cursor.fetchone()[0]
    return {
        "code": _code_version(),
        "nproc": str(cpus),
        "RAM": ram,
        "PostgreSQL": postgres,
        "Python": platform.python_version(),
        "Django": django.get_version(),
    }


def _code_version() -> str:
    """The commit measured, and whether the work tree had changes on top of it."""
    try:
        described = subprocess.run(
            ["git", "describe", "--always", "--dirty=+uncommitted"],
            cwd=settings.BASE_DIR,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "?"
    return described.stdout.strip() or "?"


def _number(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit in ("s", "×"):
        return f"{value:,.2f} {unit}"
    return f"{value:,.1f} {unit}" if unit in ("ms", "MB") else f"{value:,.0f} {unit}"


def _target(figure: Figure) -> str:
    if figure.target is None:
        return "—"
    sign = "≥" if figure.is_rate else "≤"
    mark = "met" if figure.met else "MISSED"
    return f"{sign} {_number(figure.target, figure.unit)} ({mark})"


def _ratio(figure: Figure) -> str:
    return f"{figure.ratio:,.1f}×" if figure.ratio else "—"


def report_table(report: IngestReport) -> str:
    """A plain-text table for the terminal."""
    rows = [("figure", "ours", "target", "naive", "ours vs naive")]
    rows += [
        (f.label, _number(f.value, f.unit), _target(f), _number(f.naive, f.unit), _ratio(f))
        for f in report.figures
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    details = [
        f"  {f.label}: {f.detail}" + (f"; naive: {f.naive_detail}" if f.naive_detail else "")
        for f in report.figures
    ]
    return "\n".join([*lines, "", *details, *(f"  {note}" for note in report.notes)])


def results_section(
    report: IngestReport, *, command: str, suite: str = "ingest", note: str = API_NOTE
) -> str:
    """A dated Markdown section for bench/RESULTS.md."""
    facts = machine_facts()
    stamp = timezone.localtime().strftime("%Y-%m-%d %H:%M %Z")
    lines = [
        f"## {stamp} — `bench {suite}`",
        "",
        "Machine: " + ", ".join(f"{key} {value}" for key, value in facts.items()) + ".",
        f"Command: `{command}`.",
        "",
        "| figure | ours | target | naive | ours vs naive | what was measured |",
        "| --- | ---: | --- | ---: | ---: | --- |",
    ]
    for f in report.figures:
        what = f.detail + (f"; naive: {f.naive_detail}" if f.naive_detail else "")
        lines.append(
            f"| {f.label} | {_number(f.value, f.unit)} | {_target(f)} | {_number(f.naive, f.unit)} "
            f"| {_ratio(f)} | {what} |"
        )
    lines += ["", *([note] if note else []), *report.notes, ""]
    return "\n".join(lines) + "\n"


def results_append(path: Path, section: str) -> None:
    """Append the section to the results file, starting the file with a title if it is new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_text(
            "# Benchmark results\n\nAppended by `python manage.py bench ingest --write-results`; "
            "newest last. See README.md here for what each figure means.\n\n"
        )
    with path.open("a") as handle:
        handle.write("\n" + section)
