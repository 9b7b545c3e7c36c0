"""Generated data for `bench pools`: leads, their tags and their events, streamed into PostgreSQL with
COPY (psycopg2's `copy_expert`) so that millions of rows load without being held in memory."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from itertools import islice

from django.db import connection

from leads.models import Event, Lead, LeadTag
from leads.tagging import tag_name_normalize, tags_get_or_create

# Industries as CRMs and forms spell them; "" is a lead whose industry nobody filled in.
INDUSTRIES = ["制造", "信息科技", "金融", "医疗", "教育", "零售", "物流", "房地产", "餐饮", ""]
INDUSTRY_WEIGHTS = [14, 12, 8, 8, 8, 10, 6, 5, 4, 25]
# A lead's industry follows from its index, so the tag generator agrees without holding a map.
INDUSTRY_TABLE = [
    name for name, weight in zip(INDUSTRIES, INDUSTRY_WEIGHTS, strict=True) for _ in range(weight)
]


def _industry(index: int) -> str:
    return INDUSTRY_TABLE[(index * 7919 + 13) % len(INDUSTRY_TABLE)]


SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = "伟芳娜敏静丽强磊洋艳勇军杰娟涛明"
COMPANIES = ["华东精密", "星河软件", "远航物流", "青禾食品", "蓝海医疗", "启明教育", "恒信金融", "云帆零售"]
SOURCES = ["webinar", "form", "wecom", "trade_show", "ads", "crm"]
MOBILE_PREFIXES = ["138", "139", "150", "151", "186", "187", "135", "136"]
BUYING_PLANS = ["3个月内", "半年内", "今年内", "明年"]
TAGS = {
    "need": ["need:crm", "need:营销自动化", "need:数据分析", "need:企微运营"],
    "topic": ["topic:webinar", "topic:ai", "topic:pricing", "topic:案例"],
    "form": ["form:demo", "form:trial", "form:白皮书"],
    "recycle": ["recycle:timing_later", "recycle:competitor", "recycle:no_budget", "recycle:no_need"],
}
# Event types and their weights: most traffic is our messages and content views.
EVENT_TYPES = [
    ("message_out", 30),
    ("content_viewed", 25),
    ("message_in", 12),
    ("link_clicked", 10),
    ("email_opened", 10),
    ("page_view", 8),
    ("form_submitted", 3),
    ("webinar_registered", 1.5),
    ("wecom_added", 0.5),
]
EVENT_DAYS = 90

Log = Callable[[str], None]


class LineStream:
    """A read-only file over an iterator of text lines, for `copy_expert` (which calls `read(size)`)."""

    def __init__(self, lines: Iterator[str]) -> None:
        self._lines = lines
        self._buffer = b""

    def read(self, size: int = -1) -> bytes:
        parts, have = [self._buffer], len(self._buffer)
        while size < 0 or have < size:
            chunk = "".join(islice(self._lines, 2000))
            if not chunk:
                break
            data = chunk.encode()
            parts.append(data)
            have += len(data)
        data = b"".join(parts)
        if size < 0:
            self._buffer = b""
            return data
        self._buffer = data[size:]
        return data[:size]

    def readline(self, size: int = -1) -> bytes:  # pragma: no cover - COPY FROM only reads
        return self.read(size)


def _copy(table: str, columns: list[str], lines: Iterator[str]) -> None:
    with connection.cursor() as cursor:
        cursor.cursor.copy_expert(
            f"COPY {table} ({', '.join(columns)}) FROM STDIN WITH (FORMAT text)",
            LineStream(lines),
            size=1 << 16,
        )


def _copy_then_index(table: str, columns: list[str], lines: Iterator[str], log: Log) -> None:
    """COPY into a table without its foreign keys and plain indexes, then put them back as they were.

    Checking a deferred foreign key row by row and growing five indexes per row took most of the
    10M-event load; one anti-join validates the key and a sort builds each index. The schema and the
    data at the end are the same (primary key and unique constraints stay throughout)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = %s::regclass AND contype = 'f'",
            [table],
        )
        foreign_keys = cursor.fetchall()
        cursor.execute(
            "SELECT i.relname, pg_get_indexdef(i.oid) FROM pg_index x "
            "JOIN pg_class i ON i.oid = x.indexrelid WHERE x.indrelid = %s::regclass AND NOT EXISTS "
            "(SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid)",
            [table],
        )
        indexes = cursor.fetchall()
        for name, _ in foreign_keys:
            cursor.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
        for name, _ in indexes:
            cursor.execute(f'DROP INDEX "{name}"')
    _copy(table, columns, lines)
    log(f"data: {table}: {len(indexes)} indexes and {len(foreign_keys)} foreign keys back…")
    with connection.cursor() as cursor:
        cursor.execute("SET maintenance_work_mem = '256MB'")
        for _, definition in indexes:
            cursor.execute(definition)
        for name, definition in foreign_keys:
            cursor.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
        cursor.execute("RESET maintenance_work_mem")


def _ts(moment: datetime) -> str:
    return moment.isoformat()


LEAD_COLUMNS = [
    "external_id", "name", "company", "title", "industry", "company_size", "phone", "email",
    "wecom_external_userid", "wechat_unionid", "source", "stage", "bant_budget", "bant_authority",
    "bant_need", "bant_timeline", "consent", "consent_at", "consent_version", "do_not_contact", "owner_id",
    "score", "temperature", "properties", "last_inbound_at", "last_event_at", "created_at", "updated_at",
]  # fmt: skip


def _lead_lines(count: int, now: datetime, seed: int) -> Iterator[str]:
    rng = random.Random(seed)
    for index in range(count):
        r = rng.random
        created = now - timedelta(seconds=rng.randrange(200 * 86400))
        phone = f"{MOBILE_PREFIXES[index % 8]}{index:08d}" if r() < 0.85 else "\\N"
        email = f"u{index}@ex{index % 97}.com" if r() < 0.4 else "\\N"
        wecom = f"wm{index:08d}" if r() < 0.2 else "\\N"
        properties: dict[str, object] = {"utm_campaign": f"c{index % 40}"}
        if r() < 0.2:
            properties["buying_plan"] = rng.choice(BUYING_PLANS)
        inbound = _ts(now - timedelta(seconds=rng.randrange(120 * 86400))) if r() < 0.85 else "\\N"
        stage = "sql" if r() < 0.02 else "rl"
        yield (
            "\t".join(
                (
                    f"crm-{index}" if r() < 0.6 else "\\N",
                    rng.choice(SURNAMES) + rng.choice(GIVEN),
                    rng.choice(COMPANIES),
                    "市场总监",
                    _industry(index),
                    "",
                    phone,
                    email,
                    wecom,
                    "\\N",
                    rng.choice(SOURCES),
                    stage,
                    "t" if r() < 0.3 else "f",
                    "t" if r() < 0.2 else "f",
                    "t" if r() < 0.5 else "f",
                    "t" if r() < 0.15 else "f",
                    "t",
                    _ts(created),
                    "v1",
                    "f",
                    "\\N",
                    "0",
                    "cold",
                    json.dumps(properties, ensure_ascii=False),
                    inbound,
                    inbound,
                    _ts(created),
                    _ts(created),
                )
            )
            + "\n"
        )


def _leadtag_lines(low: int, high: int, tag_ids: dict[str, int], now: datetime, seed: int) -> Iterator[str]:
    rng = random.Random(seed)
    at = _ts(now - timedelta(days=30))
    for lead_id in range(low, high + 1):
        r = rng.random
        names = []
        if r() < 0.3:
            names.append(rng.choice(TAGS["need"]))
        industry = _industry(lead_id - low)
        if industry and r() < 0.7:
            names.append(f"industry:{industry}")
        if r() < 0.5:
            names += rng.sample(TAGS["topic"], rng.randint(1, 2))
        if r() < 0.25:
            names.append(rng.choice(TAGS["form"]))
        if r() < 0.03:
            names.append(rng.choice(TAGS["recycle"]))
        for name in names:
            yield f"{lead_id}\t{tag_ids[name]}\t{rng.randint(1, 3)}\t{at}\t{at}\tbench\n"


def _event_lines(count: int, low: int, leads: int, now: datetime, seed: int) -> Iterator[str]:
    rng = random.Random(seed)
    types = [name for name, _ in EVENT_TYPES]
    weights = [weight for _, weight in EVENT_TYPES]
    base = now.timestamp()
    span = EVENT_DAYS * 86400
    for start in range(0, count, 10_000):
        size = min(10_000, count - start)
        for kind in rng.choices(types, weights, k=size):
            at = datetime.fromtimestamp(base - rng.random() * span, UTC).isoformat()
            props = f'{{"content": "c{rng.randrange(50)}"}}' if kind == "content_viewed" else "{}"
            yield f"{low + rng.randrange(leads)}\t{kind}\t{at}\t{props}\t\\N\tbench\t{at}\n"


def pools_data_load(*, leads: int, events: int, now: datetime, log: Log) -> dict[str, int]:
    """Load `leads` leads, their tags and `events` events over the last 90 days, then VACUUM ANALYZE.
    Returns the row counts."""
    lead_table, tag_table, event_table = Lead._meta.db_table, LeadTag._meta.db_table, Event._meta.db_table
    log(f"data: COPY {leads:,} leads…")
    _copy(lead_table, LEAD_COLUMNS, _lead_lines(leads, now, seed=21))
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT min(id), max(id) FROM {lead_table}")
        low, high = cursor.fetchone()
    names = [n for group in TAGS.values() for n in group] + [f"industry:{i}" for i in INDUSTRIES if i]
    tags = tags_get_or_create(names=names)
    tag_ids = {name: tags[tag_name_normalize(name)].pk for name in names}
    log("data: COPY lead tags…")
    _copy_then_index(
        tag_table,
        ["lead_id", "tag_id", "count", "first_at", "last_at", "source"],
        _leadtag_lines(low, high, tag_ids, now, seed=22),
        log,
    )
    log(f"data: COPY {events:,} events…")
    _copy_then_index(
        event_table,
        ["lead_id", "type", "occurred_at", "properties", "event_id", "source", "created_at"],
        _event_lines(events, low, high - low + 1, now, seed=23),
        log,
    )
    # VACUUM as well as ANALYZE: autovacuum would have done both to tables that grew at a human pace
    # (inserts trigger it since PostgreSQL 13), setting hint bits and the visibility map that
    # index-only scans need; left to run in the middle of the figures, it would only add noise.
    log("data: VACUUM ANALYZE…")
    counts = {}
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
        for key, table in (("leads", lead_table), ("lead_tags", tag_table), ("events", event_table)):
            cursor.execute(f"SELECT count(*) FROM {table}")
            counts[key] = cursor.fetchone()[0]
    return counts
