"""Ticks racing each other, and a tick killed mid-way, on PostgreSQL: every lead that becomes hot is
announced exactly once, and the ledger and the scores end as one tick alone would leave them."""

import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.db.models import Count

from leads.models import Lead, Pool
from leads.services import EventInput, event_record_bulk, lead_bulk_upsert
from nurture.models import OutboxMessage
from scoring.models import LeadScore, ScoreEntry, ScoreRun, ScoringRule
from scoring.services import scoring_rule_save

ROOT = Path(__file__).resolve().parent.parent.parent
NOW = datetime(2026, 11, 23, 10, 0, tzinfo=ZoneInfo("Asia/Shanghai"))
LEADS = 1500

pytestmark = pytest.mark.slow


def _tick(at: datetime) -> subprocess.Popen:
    db = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "REDIS_URL": "",
    }
    return subprocess.Popen(
        [sys.executable, "manage.py", "tick", "--now", at.isoformat()],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _events(lead_ids, kind, at, prefix):
    event_record_bulk(
        items=[EventInput(kind, at, {}, f"{prefix}-{lead_id}", lead_id, None) for lead_id in lead_ids]
    )


def test_racing_and_killed_ticks_announce_each_hot_lead_once(transactional_db):
    if connection.vendor != "postgresql":
        pytest.skip("the ticks run in other processes against PostgreSQL")
    ScoringRule.objects.all().delete()
    Pool.objects.all().delete()
    scoring_rule_save(
        rule=ScoringRule(name="开始试用", kind="behaviour", event_type="trial_started", points=50)
    )
    scoring_rule_save(
        rule=ScoringRule(
            name="参加直播", kind="behaviour", event_type="webinar_attended", points=40, half_life_days=3
        )
    )
    scoring_rule_save(
        rule=ScoringRule(
            name="阅读内容", kind="behaviour", event_type="content_viewed", points=5, cap_per_day=10
        )
    )
    results = lead_bulk_upsert(items=[{"phone": f"+86137{n:08d}"} for n in range(LEADS)])
    ids = [result.id for result in results]
    for day in range(3):
        for hour in (1, 2, 3):  # three views a day: 5 + 5, the third over the day's cap
            _events(ids, "content_viewed", NOW - timedelta(days=day, hours=hour), f"view{day}-{hour}")
    _events(ids[::2], "trial_started", NOW - timedelta(hours=2), "trial")
    _events(ids[1::3], "webinar_attended", NOW - timedelta(hours=3), "webinar")

    # The first tick is killed mid-way; two more race it out.
    killed = _tick(NOW)
    deadline = time.monotonic() + 60
    # Killed once its first batch of dirty leads is scored and committed, with the rest still to do.
    while not ScoreRun.objects.exists() and time.monotonic() < deadline and killed.poll() is None:
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    assert killed.wait(timeout=30) == -signal.SIGKILL, "the tick ended before it could be killed"
    assert not ScoreRun.objects.filter(kind="full").exists()
    racing = [_tick(NOW), _tick(NOW)]
    for process in racing:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err.decode()[-2000:]
    # Later ticks announce nothing again.
    for minutes in (1, 2):
        process = _tick(NOW + timedelta(minutes=minutes))
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err.decode()[-2000:]

    # Views earn 10 a day for three days (30), a trial 50, a webinar 40 fading by a 3-day half-life:
    # with the default thresholds (hot from 80) the leads with a trial are hot, the others not.
    expected_hot = set(ids[::2])
    hot = OutboxMessage.objects.filter(type="lead.hot")
    assert set(hot.values_list("lead_id", flat=True)) == expected_hot
    assert not hot.values("lead_id").annotate(n=Count("id")).filter(n__gt=1).exists()
    assert set(Lead.objects.filter(temperature="hot").values_list("pk", flat=True)) == expected_hot
    assert LeadScore.objects.count() == LEADS
    # One entry per event, written once: nine views (the third of each day earns nothing under the
    # day cap but is kept, numbered 3, for a later edit of the cap), trials, webinars.
    assert ScoreEntry.objects.count() == 9 * LEADS + len(ids[::2]) + len(ids[1::3])
    assert ScoreEntry.objects.filter(n=3).count() == 3 * LEADS
    assert set(ScoreEntry.objects.filter(rule__name="阅读内容").values_list("n", "points")) == {
        (1, 5),
        (2, 5),
        (3, 0),
    }
