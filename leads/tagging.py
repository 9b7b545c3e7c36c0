"""Tags: `group:value` names, set-based stamping onto leads."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from django.db import connection, transaction
from django.db.models import QuerySet

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


def lead_tags_add_where(*, tag: Tag, leads: QuerySet, source: str, now: datetime) -> int:
    """Give `tag` to every lead of the queryset that lacks it, in one `INSERT … SELECT … ON CONFLICT DO
    NOTHING` (a lead that has it keeps its count; applying twice changes nothing): the tagged leads'
    `updated_at` moves to `now` (API syncs see the tag) and they are marked dirty (pools, triggers and
    tag rules read tags). Returns how many leads got it."""
    from leads.models import DirtyLead, Lead, LeadTag

    select_sql, select_params = leads.values_list("id").query.sql_with_params()
    leadtag, lead, dirty = LeadTag._meta.db_table, Lead._meta.db_table, DirtyLead._meta.db_table
    # `WHERE 1 = 1` keeps SQLite from reading ON CONFLICT as a join constraint.
    insert = (
        f"INSERT INTO {leadtag} (lead_id, tag_id, count, first_at, last_at, source) "
        f"SELECT m.id, %s, 1, %s, %s, %s FROM ({select_sql}) AS m WHERE 1 = 1 "
        f"ON CONFLICT (lead_id, tag_id) DO NOTHING"
    )
    # Adapted as the ORM would (on SQLite a raw aware datetime would be stored with its offset).
    at = connection.ops.adapt_datetimefield_value(now)
    params = [tag.pk, at, at, source, *select_params]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                f"WITH stamped AS ({insert} RETURNING lead_id), "
                f"touched AS (UPDATE {lead} SET updated_at = %s WHERE id IN (SELECT lead_id FROM stamped)), "
                f"queued AS (INSERT INTO {dirty} (lead_id, marked_at) SELECT lead_id, %s FROM stamped "
                f"ON CONFLICT (lead_id) DO NOTHING) SELECT count(*) FROM stamped",
                [*params, at, at],
            )
            return int(cursor.fetchone()[0])
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:  # SQLite: three statements
        cursor.execute(insert, params)  # the rows are found again by tag, source and time
        tagged = max(cursor.rowcount, 0)
        if tagged:
            stamped = f"SELECT lead_id FROM {leadtag} WHERE tag_id = %s AND source = %s AND first_at = %s"
            cursor.execute(
                f"UPDATE {lead} SET updated_at = %s WHERE id IN ({stamped})", [at, tag.pk, source, at]
            )
            cursor.execute(
                f"INSERT INTO {dirty} (lead_id, marked_at) SELECT lead_id, %s FROM ({stamped}) AS s "
                f"WHERE 1 = 1 ON CONFLICT (lead_id) DO NOTHING",
                [at, tag.pk, source, at],
            )
        return tagged
