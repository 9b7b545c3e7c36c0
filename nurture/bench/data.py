"""Generated bench data: API payloads of leads and events, and a set-based load of a big lead table."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

from django.db import connection

from leads.models import Lead
from leads.tagging import tags_get_or_create

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = ["伟", "芳", "娜", "敏", "静", "丽", "强", "磊", "洋", "艳", "勇", "军", "杰", "娟", "涛", "明"]
COMPANIES = ["华东精密", "星河软件", "远航物流", "青禾食品", "蓝海医疗", "启明教育", "恒信金融", "云帆零售"]
INDUSTRIES = ["制造", "软件", "物流", "食品", "医疗", "教育"]
TITLES = ["总经理", "市场总监", "IT 经理", "采购经理", "销售总监", "运营专员"]
SOURCES = ["webinar", "form", "wecom", "trade_show", "ads"]
MOBILE_PREFIXES = ["138", "139", "150", "151", "186", "187", "135", "136"]
EVENT_TYPES = [
    "content_viewed",
    "link_clicked",
    "email_opened",
    "message_in",
    "message_out",
    "form_submitted",
    "webinar_registered",
    "page_view",
]

# Tags of the big list and the share of leads carrying each, in per mille.
LIST_TAG_COMMON = "segment:common"
LIST_TAG_RARE = "segment:rare"
LIST_TAG_SHARES: dict[str, int] = {LIST_TAG_COMMON: 200, LIST_TAG_RARE: 5, "interest:webinar": 350}


def bench_phone(run: str, index: int) -> str:
    """A valid mainland mobile number, unique per (run, index), typed the way people type them."""
    digits = f"{MOBILE_PREFIXES[(index + len(run)) % len(MOBILE_PREFIXES)]}{index:08d}"
    forms = (digits, f"{digits[:3]} {digits[3:7]} {digits[7:]}", f"+86{digits}", f"86-{digits}")
    return forms[index % len(forms)]


def lead_payloads(*, run: str, start: int, count: int, seed: int = 7) -> list[dict[str, Any]]:
    """Lead payloads as a CRM export sends them: mixed identities, a few tags, 0.2% bad items."""
    rng = random.Random(seed + start)
    payloads = []
    for index in range(start, start + count):
        item: dict[str, Any] = {
            "name": rng.choice(SURNAMES) + rng.choice(GIVEN) + rng.choice(["", *GIVEN]),
            "company": rng.choice(COMPANIES),
            "title": rng.choice(TITLES),
            "industry": rng.choice(INDUSTRIES),
            "source": rng.choice(SOURCES),
            "bant": {"budget": rng.random() < 0.3, "need": rng.random() < 0.5},
            "properties": {"utm_campaign": f"c{index % 40}", "employees": rng.randint(5, 5000)},
            "tags": [f"industry:{rng.choice(INDUSTRIES)}"] + (["interest:webinar"] if index % 3 == 0 else []),
        }
        if index % 10 < 7:
            item["external_id"] = f"{run}-crm-{index}"
        if index % 10 != 3:
            item["phone"] = bench_phone(run, index)
        if index % 5 < 3:
            item["email"] = f"{run}.Lead{index}@Example{index % 50}.com"
        if index % 5 == 4:
            item["wecom_external_userid"] = f"wm{run}{index:09d}"
        if "external_id" not in item and "phone" not in item:
            item["external_id"] = f"{run}-crm-{index}"
        if index % 500 == 499:
            item["phone"] = "12345"  # a bad item: reported, and the others still land
        payloads.append(item)
    return payloads


def event_payloads(
    *,
    run: str,
    count: int,
    lead_ids: list[int],
    identities: list[dict[str, str]],
    now: datetime,
    seed: int = 11,
) -> list[dict[str, Any]]:
    """Events from a tracking pipeline: 90% name their lead by id, 10% by an identity (1 in 20 of
    those unknown, so the lead is created); 1% repeat an earlier event_id (a retried delivery)."""
    rng = random.Random(seed)
    payloads = []
    for index in range(count):
        # Every hundredth event repeats one sent fifty events earlier.
        event_id = f"{run}-ev-{index - 50 if index % 100 == 99 else index}"
        lead: int | dict[str, str]
        if index % 10 == 9 and identities:
            lead = {"phone": bench_phone(run + "x", index)} if index % 200 == 199 else rng.choice(identities)
        else:
            lead = rng.choice(lead_ids)
        event_type = rng.choice(EVENT_TYPES)
        payloads.append(
            {
                "event_id": event_id,
                "lead": lead,
                "type": event_type,
                "occurred_at": (now - timedelta(seconds=rng.randint(0, 30 * 86400))).isoformat(),
                "properties": {"url": f"https://example.com/p/{index % 997}", "title": f"页面 {index % 97}"},
            }
        )
    return payloads


def list_leads_load(*, count: int) -> dict[str, int]:
    """Empty the lead tables and load `count` leads and their tags set-based (INSERT … SELECT over
    generate_series); every lead has one industry tag, and LIST_TAG_SHARES says who has the others.
    Returns {tag name: number of leads carrying it}."""
    table = Lead._meta.db_table
    tags = tags_get_or_create(names=[*LIST_TAG_SHARES, *(f"industry:{name}" for name in INDUSTRIES)])
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {table} RESTART IDENTITY CASCADE")
        cursor.execute(
            f"""
            INSERT INTO {table} (
                external_id, name, company, title, industry, company_size, phone, email,
                wecom_external_userid, wechat_unionid, source, stage, bant_budget, bant_authority,
                bant_need, bant_timeline, consent, consent_at, consent_version, do_not_contact, owner_id,
                score, temperature, properties, last_inbound_at, last_event_at, created_at, updated_at
            )
            SELECT
                'list-' || g, '客户' || g, (%(companies)s::text[])[1 + g %% 8] || g %% 5000, '',
                (%(industries)s::text[])[1 + g %% 6], '', '+86138' || lpad(g::text, 8, '0'),
                CASE WHEN g %% 3 = 0 THEN NULL ELSE 'l' || g || '@example.com' END,
                NULL, NULL, 'import', 'rl', false, false, g %% 4 = 0, false, g %% 2 = 0, NULL, '',
                false, NULL, g %% 100, 'cold', jsonb_build_object('batch', g %% 50),
                NULL, NULL, now() - make_interval(secs => %(count)s - g), now()
            FROM generate_series(1, %(count)s) AS g
            """,
            {"count": count, "companies": COMPANIES, "industries": INDUSTRIES},
        )
        leadtag = "leads_leadtag"
        columns = "(lead_id, tag_id, count, first_at, last_at, source)"
        for seed, (name, per_mille) in enumerate(LIST_TAG_SHARES.items(), start=1):
            cursor.execute(
                f"INSERT INTO {leadtag} {columns} SELECT id, %s, 1, now(), now(), 'bench' FROM {table} "
                f"WHERE (hashint8extended(id, %s) & 1048575) < %s",
                [tags[name].pk, seed, per_mille * 1048576 // 1000],
            )
        for position, industry in enumerate(INDUSTRIES):
            cursor.execute(
                f"INSERT INTO {leadtag} {columns} SELECT id, %s, 1, now(), now(), 'bench' FROM {table} "
                f"WHERE mod(hashint8extended(id, 99) & 1048575, %s) = %s",
                [tags[f"industry:{industry}"].pk, len(INDUSTRIES), position],
            )
        cursor.execute(f"ANALYZE {table}")
        cursor.execute(f"ANALYZE {leadtag}")
        cursor.execute("ANALYZE leads_tag")
        cursor.execute(
            f"SELECT t.name, count(*) FROM {leadtag} lt JOIN leads_tag t ON t.id = lt.tag_id GROUP BY t.name"
        )
        return dict(cursor.fetchall())
