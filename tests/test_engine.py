"""The engine's tick: the management command, its record, and a real Celery worker running it."""

import io
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from nurture.models import TickRun
from tests.workers import celery_worker_start, celery_worker_stop, child_env

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
    worker = celery_worker_start(child_env())
    try:
        from nurture.tasks import engine_tick

        engine_tick.delay()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not TickRun.objects.exists():
            time.sleep(0.2)
        assert TickRun.objects.count() == 1, "the worker did not run the tick within 60 s"
    finally:
        output = celery_worker_stop(worker)
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
    # sequence steps, six of the SLA, none per lead: 10 and 200 leads take the same (about 70 today).
    with django_assert_max_num_queries(80):
        call_command("tick", "--now", "2026-12-01T10:01:00+08:00", stdout=io.StringIO())
