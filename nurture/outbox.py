"""The outbox: transitions written beside the change itself, for the webhooks to deliver later."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from nurture.models import OutboxMessage

BATCH = 5000


def outbox_put(
    *,
    type: str,
    lead_ids: Iterable[int],
    occurred_at: datetime,
    data: Mapping[str, Any] | None = None,
    data_by_lead: Mapping[int, Mapping[str, Any]] | None = None,
) -> int:
    """Record one message of `type` per lead (call inside the transaction that made the change)."""
    common = dict(data or {})
    rows = [
        OutboxMessage(
            type=type,
            lead_id=lead_id,
            occurred_at=occurred_at,
            data={**common, **(data_by_lead or {}).get(lead_id, {})},
        )
        for lead_id in lead_ids
    ]
    OutboxMessage.objects.bulk_create(rows, batch_size=BATCH)
    return len(rows)
