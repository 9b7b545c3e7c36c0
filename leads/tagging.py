"""Tags: `group:value` names, set-based stamping onto leads."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from django.db import connection

from leads.models import Tag

TAG_NAME_MAX = 128


def tag_split(name: str) -> tuple[str, str]:
    """`need:全渠道获客` → ("need", "全渠道获客"); a name without a colon has no group."""
    name = name.strip()
    if ":" in name:
        group, label = name.split(":", 1)
        return group.strip(), label.strip()
    return "", name


def tag_name_normalize(name: str) -> str:
    group, label = tag_split(name)
    if not label:
        raise ValueError("a tag needs a name")
    full = f"{group}:{label}" if group else label
    if len(full) > TAG_NAME_MAX:
        raise ValueError(f"tag name longer than {TAG_NAME_MAX} characters")
    return full


def tags_get_or_create(*, names: Iterable[str]) -> dict[str, Tag]:
    """Return {name: Tag} for the names, creating the missing ones in one statement."""
    wanted = {tag_name_normalize(n) for n in names}
    if not wanted:
        return {}
    found = {t.name: t for t in Tag.objects.filter(name__in=wanted)}
    missing = wanted - found.keys()
    if missing:
        Tag.objects.bulk_create(
            [Tag(name=n, group=tag_split(n)[0], label=tag_split(n)[1]) for n in sorted(missing)],
            ignore_conflicts=True,
        )
        found.update({t.name: t for t in Tag.objects.filter(name__in=missing)})
    return found


def lead_tags_stamp(*, pairs: Iterable[tuple[int, int]], source: str, now: datetime) -> int:
    """Stamp tags onto leads: insert (lead, tag) rows or add one to their count, in one statement."""
    rows = sorted(set(pairs))
    if not rows:
        return 0
    values = ", ".join(["(%s, %s, 1, %s, %s, %s)"] * len(rows))
    # Adapted as the ORM would (on SQLite a raw aware datetime is stored with its offset, unlike ORM rows).
    at = connection.ops.adapt_datetimefield_value(now)
    params: list[object] = []
    for lead_id, tag_id in rows:
        params += [lead_id, tag_id, at, at, source]
    table = "leads_leadtag"
    sql = (
        f"INSERT INTO {table} (lead_id, tag_id, count, first_at, last_at, source) VALUES {values} "
        f"ON CONFLICT (lead_id, tag_id) DO UPDATE SET count = {table}.count + 1, last_at = excluded.last_at"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
    return len(rows)
