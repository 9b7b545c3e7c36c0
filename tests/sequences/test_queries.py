"""The sequence part of the tick takes the same number of queries for 10 or 200 due leads."""

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from leads.models import Lead
from sequences.engine import sequences_tick
from sequences.models import Sequence, Touch
from sequences.services import sequence_enroll, sequence_save

SH = ZoneInfo("Asia/Shanghai")
T0 = datetime(2027, 3, 1, 9, 0, tzinfo=SH)
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("recording")]


def queries_of_a_busy_tick(n: int) -> int:
    Sequence.objects.all().delete()  # the exit checks are a few statements per sequence
    seq = sequence_save(
        data={"name": "量", "status": "active", "quiet_hours": None, "caps": {"console": 3}},
        steps=[
            {
                "day": 0,
                "send_time": None,
                "text": "你好 {{ lead.name }}",
                "condition": {"field": "name", "op": "is_set", "value": True},
            },
            {"day": 0, "send_time": None, "channel": "call", "mode": "task", "text": "回访"},
            {"day": 1, "send_time": "10:00"},
        ],
    )
    Lead.objects.all().delete()
    Lead.objects.bulk_create([Lead(name=f"客户{i}", phone=f"+86136{n:04d}{i:04d}") for i in range(n)])
    sequence_enroll(sequence=seq, lead_ids=Lead.objects.values_list("pk", flat=True), anchor_at=T0, now=T0)
    sequences_tick(T0)  # day 0: the first step sent
    with CaptureQueriesContext(connection) as context:
        sequences_tick(T0 + timedelta(minutes=1))  # the task step, and the exits/completion checks
    assert Touch.objects.filter(state="sent").count() == n
    assert Touch.objects.filter(state="task_open").count() == n
    return len(context)


def test_the_query_count_does_not_grow_with_the_leads():
    if connection.vendor != "postgresql":
        pytest.skip("SQLite splits bulk statements by its parameter limit (the embedded demo's size)")
    small = queries_of_a_busy_tick(10)
    large = queries_of_a_busy_tick(200)
    assert large == small, (small, large)
    assert large < 60
