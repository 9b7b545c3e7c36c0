"""Delivery receipts: a provider says what became of a sent touch (SMS status reports, email bounces).

A receipt names its touch by the idempotency key the adapter passed on (Aliyun `OutId`, the email's
Message-ID) or by the provider's own reference (Tencent `SerialNo`, Aliyun `BizId`). Only a `sent` touch
moves: to `delivered`, or to `failed` with a `touch.failed` outbox message. Each move is a conditional
UPDATE, so a replayed receipt, or one for a touch that already moved, changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.db.models import Case, TextField, Value, When

from nurture.outbox import outbox_put
from sequences.models import Touch, TouchState


@dataclass(frozen=True)
class DeliveryReceipt:
    """One provider report about one message: delivered, or failed with the provider's error."""

    delivered: bool
    provider_ref: str | None = None
    idempotency_key: str | None = None
    error: str = ""


def touch_delivery_record(
    *,
    channel: str,
    provider_ref: str | None = None,
    idempotency_key: str | None = None,
    delivered: bool,
    error: str = "",
    at: datetime,
) -> int:
    """Move the sent touch a receipt names to delivered (or failed); the number of touches moved (0/1)."""
    receipt = DeliveryReceipt(
        delivered=delivered, provider_ref=provider_ref, idempotency_key=idempotency_key, error=error
    )
    return touches_delivery_record(channel=channel, receipts=[receipt], at=at)


def touches_delivery_record(*, channel: str, receipts: Sequence[DeliveryReceipt], at: datetime) -> int:
    """`touch_delivery_record` for many receipts in a bounded number of queries (one lookup by key, one
    by provider reference, one UPDATE per outcome, the outbox); returns the touches moved."""
    keys = {r.idempotency_key for r in receipts if r.idempotency_key}
    # A receipt with a key is found by it (unique index); the provider reference only when there is none.
    refs = {r.provider_ref for r in receipts if r.provider_ref and not r.idempotency_key}
    if not keys and not refs:
        return 0
    with transaction.atomic():
        found: list[tuple[int, int, int, str, str]] = []
        sent = Touch.objects.select_for_update().filter(channel=channel, state=TouchState.SENT)
        columns = ("pk", "lead_id", "sequence_id", "idempotency_key", "provider_ref")
        if keys:
            found += list(sent.filter(idempotency_key__in=keys).values_list(*columns))
        if refs:
            found += list(sent.filter(provider_ref__in=refs).values_list(*columns))
        by_key = {row[3]: row for row in found}
        by_ref = {row[4]: row for row in found if row[4]}
        outcome: dict[int, DeliveryReceipt] = {}
        rows: dict[int, tuple[int, int, int, str, str]] = {}
        for receipt in receipts:
            row = by_key.get(receipt.idempotency_key or "") or (
                by_ref.get(receipt.provider_ref or "") if not receipt.idempotency_key else None
            )
            if row is None:
                continue
            # Several reports for one message (a long SMS in parts): a failure wins over a delivery.
            if row[0] not in outcome or not receipt.delivered:
                outcome[row[0]] = receipt
                rows[row[0]] = row
        delivered = [pk for pk, r in outcome.items() if r.delivered]
        failed = {pk: r.error or "undelivered" for pk, r in outcome.items() if not r.delivered}
        moved = 0
        if delivered:
            moved += Touch.objects.filter(pk__in=delivered, state=TouchState.SENT).update(
                state=TouchState.DELIVERED
            )
        if failed:
            errors = Case(
                *(When(pk=pk, then=Value(f"receipt: {err}"[:2000])) for pk, err in failed.items()),
                output_field=TextField(),
            )
            moved += Touch.objects.filter(pk__in=list(failed), state=TouchState.SENT).update(
                state=TouchState.FAILED, error=errors
            )
            _announce_failures([rows[pk] for pk in failed], failed, channel=channel, at=at)
    return moved


def _announce_failures(
    rows: list[tuple[int, int, int, str, str]], errors: dict[int, str], *, channel: str, at: datetime
) -> None:
    """`touch.failed` per failed touch, in as few outbox writes as leads allow (one message per lead a
    write; a lead with two failed touches in one batch takes two)."""
    pending = list(rows)
    while pending:
        seen: set[int] = set()
        this_round, later = [], []
        for row in pending:
            (later if row[1] in seen else this_round).append(row)
            seen.add(row[1])
        outbox_put(
            type="touch.failed",
            lead_ids=[row[1] for row in this_round],
            occurred_at=at,
            data={"channel": channel},
            data_by_lead={
                row[1]: {"touch": row[0], "sequence": row[2], "error": errors[row[0]][:500]}
                for row in this_round
            },
        )
        pending = later
