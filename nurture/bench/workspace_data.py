"""Generated data for `bench workspace`: the leads, tags and events of `bench pools` (COPY), one lead
with a long history, every lead scored and every default pool evaluated by the product's own services,
then set-based (INSERT … SELECT, UPDATE … WHERE) what the SDR workspace reads: hot leads, SDRs and a
manager, open assignments of the hot leads they own, notes and open call tasks."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import connection
from django.db.models import Q

from channels.models import CallTask
from leads.demo import DemoContext, demo_users_load
from leads.models import Event, Lead, Pool
from leads.pools import pool_evaluate_full, pools_in_order
from nurture.bench.pools_data import pools_data_load
from scoring.models import LeadScore, ScoreEntry
from scoring.services import scores_recompute_all
from workspace.models import Assignment, LeadNote, SdrProfile

Log = Callable[[str], None]

# One lead in HOT_MODULUS is made hot (~1.5%), one hot lead in OWNED_SHARE is owned by an SDR.
HOT_MODULUS = 67
OWNED_SHARE = 10
SDRS = 10  # the bench SDR and nine colleagues, whose leads stay out of the bench SDR's queue
SDR_USERNAME = "bench-sdr"
MANAGER_USERNAME = "bench-manager"
# The lead with a long history gets these events on top of its share, spread over 90 days.
LONG_HISTORY_TYPES = ["content_viewed", "link_clicked", "email_opened", "message_in", "message_out",
                      "page_view", "form_submitted", "webinar_registered"]  # fmt: skip


@dataclass
class WorkspaceData:
    """What the figures need to know about the generated data."""

    leads: int
    events: int
    lead_tags: int
    hot: int
    hot_in_queue: int
    owned: int
    notes: int
    sdr_id: int
    manager_id: int
    long_lead_id: int
    long_lead_events: int
    long_lead_entries: int
    typical_lead_id: int
    typical_lead_events: int
    load_seconds: float
    scoring_seconds: float
    pools_seconds: float
    staff_seconds: float


def _users(now: datetime) -> tuple[int, list[int], int]:
    """The product's groups (as the demo sets them up, permissions and all), the SDRs and a manager."""
    demo_users_load(DemoContext(now=now, seed=0, rng=random.Random(0)))
    users = get_user_model()
    sdr_group, manager_group = Group.objects.get(name="sdr"), Group.objects.get(name="sdr_manager")
    sdr_ids = []
    for number in range(SDRS):
        username = SDR_USERNAME if number == 0 else f"bench-sdr-{number}"
        user = users.objects.create_user(
            username=username, first_name=f"SDR {number}", last_name="测试", is_staff=True
        )
        user.groups.add(sdr_group)
        SdrProfile.objects.create(user=user, available=True)
        sdr_ids.append(user.pk)
    manager = users.objects.create_user(
        username=MANAGER_USERNAME, first_name="经理", last_name="测试", is_staff=True
    )
    manager.groups.add(manager_group)
    return sdr_ids[0], sdr_ids, manager.pk


def _long_history(lead_id: int, events: int, now: datetime) -> None:
    """`events` events for one lead, of the scoring types, over the last 90 days."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {Event._meta.db_table} "
            "(lead_id, type, occurred_at, properties, source, created_at) "
            "SELECT %s, (%s::text[])[1 + g %% %s], %s - g * (interval '90 days' / %s), "
            "jsonb_build_object('content', 'c' || (g %% 50)), 'bench', %s - g * (interval '90 days' / %s) "
            "FROM generate_series(1, %s) g",
            [lead_id, LONG_HISTORY_TYPES, len(LONG_HISTORY_TYPES), now, events, now, events, events],
        )
        cursor.execute(
            f"UPDATE {Lead._meta.db_table} SET last_event_at = %s, last_inbound_at = %s, "
            "industry = '制造', phone = coalesce(phone, '13900000000') WHERE id = %s",
            [now - timedelta(minutes=5), now - timedelta(minutes=5), lead_id],
        )


def _typical_lead(low: int, mean: int, long_lead_id: int) -> tuple[int, int]:
    """A hot lead nobody owns yet with about the mean number of events: the page an SDR opens from the
    queue most (an SDR sees only the unassigned hot leads and its own)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT e.lead_id, count(*) FROM {Event._meta.db_table} e JOIN {Lead._meta.db_table} l "
            "ON l.id = e.lead_id WHERE e.lead_id BETWEEN %s AND %s AND e.lead_id <> %s "
            "AND l.temperature = 'hot' AND l.owner_id IS NULL AND l.stage NOT IN ('sql', 'won', 'lost') "
            "AND NOT l.do_not_contact GROUP BY e.lead_id ORDER BY abs(count(*) - %s), e.lead_id LIMIT 1",
            [low, low + 100 * HOT_MODULUS, long_lead_id, mean],
        )
        row = cursor.fetchone()
    return (row[0], row[1]) if row else (low, 0)


def _hot_and_owned(*, sdr_ids: list[int], long_lead_id: int, now: datetime) -> None:
    """Make ~1.5% of the leads hot (score 80–119, hot for up to three days), have SDRs own a tenth of
    them with an open assignment each, and write their notes and open call tasks."""
    lead, score = Lead._meta.db_table, LeadScore._meta.db_table
    hot = f"(l.id %% {HOT_MODULUS} = 3 OR l.id = %s)"
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {lead} l SET temperature = 'hot', score = 80 + (l.id * 31) %% 40, "
            f"stage = CASE WHEN l.id = %s THEN 'mql' ELSE l.stage END WHERE {hot}",
            [long_lead_id, long_lead_id],
        )
        cursor.execute(
            f"UPDATE {score} s SET temperature = 'hot', score = l.score, "
            f"hot_since = %s - (l.id %% 4320) * interval '1 minute' FROM {lead} l "
            f"WHERE s.lead_id = l.id AND {hot}",
            [now, long_lead_id],
        )
        # Owners: hot leads of one id in OWNED_SHARE, round-robin over the SDRs (the long lead: ours).
        cursor.execute(
            f"UPDATE {lead} l SET owner_id = CASE WHEN l.id = %s THEN %s "
            f"ELSE (%s::bigint[])[1 + (l.id / {HOT_MODULUS * OWNED_SHARE}) %% {len(sdr_ids)}] END "
            f"WHERE l.temperature = 'hot' AND l.stage NOT IN ('sql', 'won', 'lost') "
            f"AND ((l.id / {HOT_MODULUS}) %% {OWNED_SHARE} = 0 OR l.id = %s)",
            [long_lead_id, sdr_ids[0], sdr_ids, long_lead_id],
        )
        assignment = Assignment._meta.db_table
        # Half of them followed up already; the SLA clock of the others runs (4 working hours, roughly).
        cursor.execute(
            f"INSERT INTO {assignment} (lead_id, sdr_id, via, assigned_at, first_touch_due, followed_up_at, "
            "end_reason) SELECT l.id, l.owner_id, 'claim', a.at, a.at + interval '4 hours', "
            "CASE WHEN l.id %% 2 = 0 THEN a.at + interval '1 hour' END, '' "
            f"FROM {lead} l, LATERAL (SELECT %s - (l.id %% 2880) * interval '1 minute' AS at) a "
            "WHERE l.owner_id IS NOT NULL",
            [now],
        )
        # The long lead went through other hands before: three ended assignments.
        cursor.execute(
            f"INSERT INTO {assignment} (lead_id, sdr_id, via, assigned_at, first_touch_due, followed_up_at, "
            "ended_at, end_reason) SELECT %s, %s, 'auto', %s - g * interval '20 days', "
            "%s - g * interval '20 days' + interval '4 hours', "
            "%s - g * interval '20 days' + interval '2 hours', "
            "%s - g * interval '20 days' + interval '5 days', 'returned' FROM generate_series(1, 3) g",
            [long_lead_id, sdr_ids[1 % len(sdr_ids)], now, now, now, now],
        )
        note = LeadNote._meta.db_table
        cursor.execute(
            f"INSERT INTO {note} (lead_id, author_id, text, created_at) "
            "SELECT l.id, l.owner_id, '电话沟通：' || (ARRAY['客户有兴趣，约下周演示', '预算待确认', "
            "'需要发送案例资料', '决策人是IT总监'])[1 + (l.id + g) %% 4], %s - g * interval '7 hours' "
            f"FROM {lead} l, generate_series(1, CASE WHEN l.id = %s THEN 40 ELSE 1 + l.id %% 3 END) g "
            "WHERE l.owner_id IS NOT NULL",
            [now, long_lead_id],
        )
        cursor.execute(
            f"INSERT INTO {CallTask._meta.db_table} "
            "(lead_id, assignee_id, script, due_at, state, outcome, notes, created_at) "
            "SELECT l.id, l.owner_id, '确认需求与预算', %s + (l.id %% 48) * interval '1 hour', "
            f"'open', '', '', %s FROM {lead} l WHERE l.owner_id IS NOT NULL",
            [now, now],
        )


def workspace_data_load(
    *, leads: int, events: int, long_events: int, now: datetime, log: Log
) -> WorkspaceData:
    """Load the data `bench workspace` reads and return what its figures need to know."""
    started = time.perf_counter()
    counts = pools_data_load(leads=leads, events=events, now=now, log=log)
    low = Lead.objects.order_by("pk").values_list("pk", flat=True).first() or 0
    long_lead_id = low + min(leads - 1, 1234)
    log(f"data: {long_events:,} more events for lead {long_lead_id}…")
    _long_history(long_lead_id, long_events, now)
    load_seconds = time.perf_counter() - started

    log("data: every lead scored (the ledger built from every event)…")
    started = time.perf_counter()
    scores_recompute_all(now=now, rebuild_ledger=True)
    scoring_seconds = time.perf_counter() - started

    started = time.perf_counter()
    pools = list(Pool.objects.filter(active=True))
    for pool in pools_in_order(pools):
        log(f"data: full evaluation of the pool {pool.slug}…")
        pool_evaluate_full(pool=pool, now=now, pools=pools)
    pools_seconds = time.perf_counter() - started

    log("data: hot leads, SDRs, assignments, notes, call tasks…")
    started = time.perf_counter()
    sdr_id, sdr_ids, manager_id = _users(now)
    _hot_and_owned(sdr_ids=sdr_ids, long_lead_id=long_lead_id, now=now)
    typical_id, typical_events = _typical_lead(low, round(events / max(leads, 1)), long_lead_id)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    staff_seconds = time.perf_counter() - started

    queue = Lead.objects.filter(temperature="hot").exclude(stage__in=("sql", "won", "lost"))
    return WorkspaceData(
        leads=counts["leads"],
        events=counts["events"] + long_events,
        lead_tags=counts["lead_tags"],
        hot=Lead.objects.filter(temperature="hot").count(),
        hot_in_queue=queue.filter(Q(owner__isnull=True) | Q(owner_id=sdr_id)).count(),
        owned=Lead.objects.filter(owner__isnull=False).count(),
        notes=LeadNote.objects.count(),
        sdr_id=sdr_id,
        manager_id=manager_id,
        long_lead_id=long_lead_id,
        long_lead_events=Event.objects.filter(lead_id=long_lead_id).count(),
        long_lead_entries=ScoreEntry.objects.filter(lead_id=long_lead_id).count(),
        typical_lead_id=typical_id,
        typical_lead_events=typical_events,
        load_seconds=load_seconds,
        scoring_seconds=scoring_seconds,
        pools_seconds=pools_seconds,
        staff_seconds=staff_seconds,
    )
