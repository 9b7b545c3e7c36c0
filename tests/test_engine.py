"""The engine's tick: the management command, its record, and a real Celery worker running it."""

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from nurture.models import TickRun

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.django_db
def test_tick_command_runs_as_of_now_and_records_it():
    out = io.StringIO()
    call_command("tick", "--now", "2026-12-01T10:00:00+08:00", stdout=out)
    assert "tick 2026-12-01T10:00:00+08:00" in out.getvalue()
    run = TickRun.objects.get()
    assert run.now.isoformat() == "2026-12-01T02:00:00+00:00"
    call_command("tick", "--now", "2026-12-01T10:00:00+08:00", stdout=io.StringIO())
    assert TickRun.objects.count() == 2
    with pytest.raises(CommandError, match="ISO 8601"):
        call_command("tick", "--now", "tomorrow", stdout=io.StringIO())


@pytest.mark.django_db(transaction=True)
def test_a_real_celery_worker_runs_the_tick():
    if not settings.REDIS_URL or connection.vendor != "postgresql":
        pytest.skip("needs REDIS_URL and PostgreSQL: the worker is a separate process")
    db = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "REDIS_URL": settings.REDIS_URL,
    }
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "nurture",
            "worker",
            "--pool=solo",
            "--loglevel=INFO",
            "--without-mingle",
            "--without-gossip",
            "--without-heartbeat",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        from nurture.tasks import engine_tick

        engine_tick.delay()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not TickRun.objects.exists():
            time.sleep(0.2)
        assert TickRun.objects.count() == 1, "the worker did not run the tick within 60 s"
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            output, _ = worker.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            output, _ = worker.communicate()
    assert b"nurture.tasks.engine_tick" in output


@pytest.mark.django_db
@pytest.mark.parametrize("leads", [10, 200])
def test_the_tick_takes_the_same_queries_whatever_the_number_of_leads(leads, django_assert_max_num_queries):
    from leads.services import lead_bulk_upsert

    items = [{"phone": f"+86139{n:08d}", "industry": "制造" if n % 2 else ""} for n in range(leads)]
    lead_bulk_upsert(items=items)
    call_command("tick", "--now", "2026-12-01T10:00:00+08:00", stdout=io.StringIO())  # the first full pass
    lead_bulk_upsert(items=[{**item, "title": "IT经理"} for item in items])  # every lead dirty again
    # About a dozen statements per pool (7 default pools), fifteen of scoring and fifteen of the
    # sequence steps, none per lead: 10 and 200 leads take the same (62 today).
    with django_assert_max_num_queries(70):
        call_command("tick", "--now", "2026-12-01T10:01:00+08:00", stdout=io.StringIO())
