"""Set-based row writes for the ingest paths: one INSERT, or one UPDATE … FROM unnest(arrays), per batch.

Django's `bulk_create` and `bulk_update` spend more time in Python than PostgreSQL spends writing:
`bulk_update` builds a CASE WHEN per field and row, `bulk_create` compiles every value through the
field's full save path. On PostgreSQL these helpers send the same rows with the values adapted once
per field; elsewhere (SQLite in the demo) they fall back to Django's methods.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from django.db import connection
from django.db.models import DateTimeField, Field, JSONField, Model

M = TypeVar("M", bound=Model)

# Rows per statement: PostgreSQL takes at most 65,535 parameters in one statement.
MAX_PARAMS = 60_000


# Fields whose values of exactly this Python type go to psycopg2 as they are (what `get_db_prep_save`
# would return anyway); any other value takes the field's own path.
_PLAIN_TYPES: dict[str, type] = {
    "CharField": str,
    "TextField": str,
    "BooleanField": bool,
    "IntegerField": int,
    "BigIntegerField": int,
    "PositiveIntegerField": int,
    "SmallIntegerField": int,
    "ForeignKey": int,
}


def _adapter(field: Field) -> Callable[[Any], Any]:
    """How a Python value of this field becomes a query parameter."""
    if isinstance(field, JSONField):
        encoder, adapt_json = field.encoder, connection.ops.adapt_json_value
        return lambda value: None if value is None else adapt_json(value, encoder)

    def prepared(value: Any) -> Any:
        return field.get_db_prep_save(value, connection)

    if isinstance(field, DateTimeField):
        return lambda value: (
            value
            if value is None or (type(value) is datetime and value.tzinfo is not None)
            else prepared(value)
        )
    plain = _PLAIN_TYPES.get(field.get_internal_type())
    if plain is None:
        return prepared
    return lambda value: value if value is None or type(value) is plain else prepared(value)


def _columns(model: type[Model], names: Sequence[str] | None) -> list[Field]:
    if names is None:
        return [f for f in model._meta.concrete_fields if not f.primary_key]
    return [model._meta.get_field(name) for name in names]  # type: ignore[misc]


def rows_insert(objs: Sequence[M], *, skip_conflicts_on: str | None = None) -> list[M]:
    """INSERT the unsaved objects and give each its new primary key, as `bulk_create` does
    (auto_now and auto_now_add fields take the current time). Call inside a transaction.

    With `skip_conflicts_on` (a unique column; PostgreSQL only) a row whose value is already stored
    is skipped, as ON CONFLICT DO NOTHING, waiting for a concurrent writer of it to finish. Returns
    the objects inserted."""
    if not objs:
        return []
    model = type(objs[0])
    if connection.vendor != "postgresql":
        if skip_conflicts_on:
            raise NotImplementedError("skipping conflicts needs PostgreSQL's RETURNING of inserted rows")
        model._default_manager.bulk_create(objs, batch_size=1000)
        return list(objs)
    fields = _columns(model, None)
    adapters = [(field.attname, _adapter(field)) for field in fields]
    stamped = [f for f in fields if getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False)]
    for obj in objs:
        for field in stamped:
            field.pre_save(obj, add=True)
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    columns = ", ".join(quote(field.column) for field in fields)
    pk = quote(model._meta.pk.column)
    key = model._meta.get_field(skip_conflicts_on) if skip_conflicts_on else None
    tail = f"ON CONFLICT ({quote(key.column)}) DO NOTHING RETURNING {pk}, {quote(key.column)}" if key else ""
    row_sql = "(" + ", ".join(["%s"] * len(fields)) + ")"
    size = max(MAX_PARAMS // len(fields), 1)
    inserted: list[M] = []
    with connection.cursor() as cursor:
        for start in range(0, len(objs), size):
            chunk = objs[start : start + size]
            params = [adapt(getattr(obj, attname)) for obj in chunk for attname, adapt in adapters]
            cursor.execute(
                f"INSERT INTO {table} ({columns}) VALUES {', '.join([row_sql] * len(chunk))} "
                + (tail or f"RETURNING {pk}"),
                params,
            )
            returned = cursor.fetchall()
            if key is None:
                matched = list(zip(chunk, (row[0] for row in returned), strict=True))
            else:
                # Rows come back in VALUES order, the skipped ones left out: walk both in step.
                matched, position = [], 0
                for obj in chunk:
                    if position < len(returned) and returned[position][1] == getattr(obj, key.attname):
                        matched.append((obj, returned[position][0]))
                        position += 1
            for obj, new_pk in matched:
                obj.pk = new_pk
                obj._state.adding = False
                obj._state.db = connection.alias
                inserted.append(obj)
    return inserted


def rows_update(objs: Sequence[M], fields: Sequence[str]) -> None:
    """UPDATE the given fields of saved objects to their values on the objects, in one statement
    per batch (`bulk_update`'s meaning)."""
    if not objs or not fields:
        return
    model = type(objs[0])
    if connection.vendor != "postgresql":
        model._default_manager.bulk_update(objs, list(fields), batch_size=500)
        return
    columns = _columns(model, fields)
    pk_field = model._meta.pk
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    arrays = ", ".join(f"%s::{field.cast_db_type(connection)}[]" for field in (pk_field, *columns))
    names = ", ".join(quote(f"v_{field.column}") for field in (pk_field, *columns))
    assignments = ", ".join(f"{quote(field.column)} = v.{quote('v_' + field.column)}" for field in columns)
    adapters = [(field.attname, _adapter(field)) for field in columns]
    # One array per column, not a VALUES list: the planner joins VALUES by scanning the whole table.
    rows = sorted(objs, key=lambda obj: obj.pk)  # lock rows in one order
    params = [[obj.pk for obj in rows]]
    params += [[adapt(getattr(obj, attname)) for obj in rows] for attname, adapt in adapters]
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET {assignments} FROM unnest({arrays}) AS v({names}) "
            f"WHERE {table}.{quote(pk_field.column)} = v.{quote('v_' + pk_field.column)}",
            params,
        )
