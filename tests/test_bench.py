"""The benchmark harness keeps working: each suite runs at `--quick` sizes and reports its figures."""

import os
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the bench runs on PostgreSQL only")
def test_bench_ingest_quick_reports_the_figures():
    out = StringIO()
    call_command("bench", "ingest", "--quick", stdout=out, stderr=StringIO())
    text = out.getvalue()
    for label in (
        "lead bulk upsert (new)",
        "events (10% by identity)",
        "lead list ?tag= on 20% of leads",
        "lead list ?tag= on 0.5% of leads",
    ):
        assert label in text, text
    assert "MISSED" in text or "met" in text  # each figure is shown beside its target
    # The throwaway database is gone and the connection is back on the test database.
    assert "_bench_" not in connection.settings_dict["NAME"]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_database WHERE datname LIKE %s", [f"%\\_bench\\_{os.getpid()}"]
        )
        assert cursor.fetchone()[0] == 0


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the bench runs on PostgreSQL only")
def test_bench_ingest_quick_over_http_reports_its_rows():
    out = StringIO()
    call_command("bench", "ingest", "--quick", "--skip-naive", "--http", "2", stdout=out, stderr=StringIO())
    text = out.getvalue()
    assert "lead bulk upsert (new), HTTP" in text and "events (10% by identity), HTTP" in text, text
    assert "calls failed" not in text, text


def test_bench_refuses_sqlite():
    if connection.vendor == "postgresql":
        pytest.skip("checks the refusal on SQLite")
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="PostgreSQL"):
        call_command("bench", "ingest", "--quick", stdout=StringIO())


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the bench runs on PostgreSQL only")
def test_bench_pools_quick_reports_the_figures():
    out = StringIO()
    call_command("bench", "pools", "--quick", stdout=out, stderr=StringIO())
    text = out.getvalue()
    for label in (
        "full evaluation, all default pools (from empty)",
        "full evaluation, all default pools (again)",
        "MQL full evaluation ÷ one SQL statement",
        "rule_matches per lead",
        "incremental evaluation, 200 dirty leads",
        "first scoring of every lead (the ledger built from every event)",
        "full score recompute after a rule changed",
        "full score recompute (nightly, a day of decay)",
        "incremental rescoring, 200 dirty leads",
        "peak RSS of the process",
    ):
        assert label in text, text
    assert "MISMATCH" not in text, text  # the hand-written statement finds the pool's members
    assert "_bench_" not in connection.settings_dict["NAME"]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the bench runs on PostgreSQL only")
def test_bench_dispatch_quick_reports_the_figures_and_sends_each_touch_once():
    out = StringIO()
    call_command("bench", "dispatch", "--quick", stdout=out, stderr=StringIO())
    text = out.getvalue()
    for label in (
        "steps_advance: 2,000 due steps into touches",
        "dispatch: 2,000 due touches, 2 worker processes, no-op adapter",
        "idle tick, 2,000 leads",
        "idle tick queries, 2,000 ÷ 200 leads",
        "enrolling 200 leads that entered a pool in one tick",
        "the whole tick that enrolls 200 leads from a pool",
    ):
        assert label in text, text
    # Counted by idempotency key in the adapter, whatever the speed of the machine.
    assert "0 duplicates, 0 lost" in text, text
    assert "2,000 keys of 2,000 due" in text and "2,000 sent," in text, text
    assert "DISPATCH FAILED" not in text, text
    assert "_bench_" not in connection.settings_dict["NAME"]
    with connection.cursor() as cursor:  # the nested databases are gone too
        cursor.execute(
            "SELECT count(*) FROM pg_database WHERE datname LIKE %s", [f"%\\_bench\\_{os.getpid()}%"]
        )
        assert cursor.fetchone()[0] == 0


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the bench runs on PostgreSQL only")
def test_bench_workspace_quick_reports_the_pages_and_their_queries():
    out = StringIO()
    call_command("bench", "workspace", "--quick", stdout=out, stderr=StringIO())
    text = out.getvalue()
    for label in (
        "the hot queue as an SDR",
        "the hot queue ?industry=制造",
        "lead page, hot lead with 2,0",  # 2,000 generated on top of its share of the random events
        "lead page, typical lead (10 events)",
        "the team page as a manager",
        "lead page queries, long history ÷ typical",
    ):
        assert label in text, text
    assert "FAILED" not in text, text  # every page answered 200 (a failure also raises CommandError)
    assert "SQL queries taking" in text, text
    assert "_bench_" not in connection.settings_dict["NAME"]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_database WHERE datname LIKE %s", [f"%\\_bench\\_{os.getpid()}"]
        )
        assert cursor.fetchone()[0] == 0
