"""Keyset cursor pagination: stable under concurrent writes (no OFFSET, so nothing shifts).

Without `updated_since` leads come newest first by id. With it they come by (updated_at, id)
ascending, for CRM sync. On PostgreSQL the walk stops short of the oldest transaction still
writing: a row that commits later with an older `updated_at` would otherwise be skipped by a
cursor that had already passed it. A lead that changes after it was returned comes again, with its
new data, further on.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from datetime import datetime, timedelta
from typing import Any

from django.db import connection
from django.db.models import Q, QuerySet
from django.utils.dateparse import parse_datetime
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import BasePagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param

# Clock skew between app servers and the database that the in-flight bound tolerates.
IN_FLIGHT_MARGIN = timedelta(milliseconds=500)
# How long a page waits for writers that are committing rows it would show.
IN_FLIGHT_WAIT = 1.0


def _encode(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).decode().rstrip("=")


def _decode(token: str) -> dict[str, Any]:
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()).decode())
        if not isinstance(data, dict) or not isinstance(data.get("i"), int):
            raise ValueError
        if "u" in data and parse_datetime(str(data["u"])) is None:
            raise ValueError
        return data
    except (ValueError, binascii.Error, UnicodeError):
        raise ValidationError({"cursor": ["invalid cursor"]}) from None


def oldest_writing_transaction_start() -> datetime | None:
    """Start of the oldest other transaction that has written something (PostgreSQL only)."""
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT min(xact_start) FROM pg_stat_activity "
            "WHERE datname = current_database() AND backend_xid IS NOT NULL AND pid <> pg_backend_pid()"
        )
        row = cursor.fetchone()
    return row[0] if row else None


class KeysetPagination(BasePagination):
    page_size = 50
    max_page_size = 500

    def __init__(self) -> None:
        self.next_token: str | None = None
        self.request: Request | None = None

    def _page_size(self, request: Request) -> int:
        raw = request.query_params.get("page_size")
        if raw is None:
            return self.page_size
        if not raw.isdigit() or not 1 <= int(raw) <= self.max_page_size:
            raise ValidationError({"page_size": [f"an integer from 1 to {self.max_page_size}"]})
        return int(raw)

    def paginate_queryset(self, queryset: QuerySet, request: Request, view: Any = None) -> list[Any]:
        self.request = request
        size = self._page_size(request)
        token = request.query_params.get("cursor")
        by_update = getattr(view, "sync_order", False)
        cursor = _decode(token) if token else None
        if not by_update:
            queryset = queryset.order_by("-id")
            if cursor:
                queryset = queryset.filter(id__lt=cursor["i"])
            rows = list(queryset[: size + 1])
            page = rows[:size]
            if len(rows) > size:
                self.next_token = _encode({"i": page[-1].pk})
            return page

        queryset = queryset.order_by("updated_at", "id")
        if cursor:
            at = parse_datetime(str(cursor["u"])) if "u" in cursor else None
            if at is None:
                raise ValidationError({"cursor": ["invalid cursor"]})
            queryset = queryset.filter(Q(updated_at__gt=at) | Q(updated_at=at, id__gt=cursor["i"]))
        deadline = time.monotonic() + IN_FLIGHT_WAIT
        while True:
            bound = oldest_writing_transaction_start()
            bounded = queryset if bound is None else queryset.filter(updated_at__lt=bound - IN_FLIGHT_MARGIN)
            rows = list(bounded[: size + 1])
            cut_short = (
                len(rows) <= size and bound is not None and queryset[len(rows) : len(rows) + 1].exists()
            )
            if not cut_short or time.monotonic() >= deadline:
                break
            time.sleep(0.05)  # a writer is committing rows that belong on this page: let it finish
        page = rows[:size]
        if len(rows) > size or cut_short:
            # After a cut-short page the cursor says where to come back for what is still committing.
            if page:
                last = (page[-1].updated_at.isoformat(), page[-1].pk)
            elif cursor:
                last = (cursor["u"], cursor["i"])
            else:  # an empty first page: come back from `updated_since` itself
                since = parse_datetime(request.query_params.get("updated_since", ""))
                last = (since.isoformat(), 0) if since else None
            if last is not None:
                self.next_token = _encode({"u": last[0], "i": last[1]})
        return page

    def get_next_link(self) -> str | None:
        if not self.next_token or self.request is None:
            return None
        return replace_query_param(self.request.build_absolute_uri(), "cursor", self.next_token)

    def get_paginated_response(self, data: list[Any]) -> Response:
        return Response({"next": self.get_next_link(), "results": data})

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "object",
            "required": ["results"],
            "properties": {"next": {"type": "string", "nullable": True, "format": "uri"}, "results": schema},
        }

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        return [
            {"name": "cursor", "required": False, "in": "query", "schema": {"type": "string"}},
            {
                "name": "page_size",
                "required": False,
                "in": "query",
                "schema": {"type": "integer", "minimum": 1, "maximum": 500},
            },
        ]
