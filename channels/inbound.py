"""Inbound callbacks left unprocessed (a lost task, a crash): one tick step for every source that acts
in a task (WeCom, the official account), and the admin's "process again". SMS receipts and email bounces
are acted on in their request (a failure answers 500 and the provider retries)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.db import transaction

from channels.models import InboundPayload

# The on-commit task gets this long before the tick takes a payload over.
LOST_AFTER = timedelta(minutes=1)
PENDING_BATCH = 200
# A payload failing this often waits for a person ("process again" in the admin).
MAX_ATTEMPTS = 10


def _processors() -> dict[str, Callable[..., object]]:
    from channels.wechat_oa.inbound import wechat_oa_payload_process
    from channels.wecom.inbound import wecom_payload_process

    return {
        InboundPayload.Source.WECOM: wecom_payload_process,
        InboundPayload.Source.WECHAT_OA: wechat_oa_payload_process,
    }


def _tasks() -> dict[str, Callable[[int], object]]:
    from channels.wechat_oa.inbound import wechat_oa_payload_process_task
    from channels.wecom.tasks import wecom_inbound_process

    return {
        InboundPayload.Source.WECOM: wecom_inbound_process.delay,
        InboundPayload.Source.WECHAT_OA: wechat_oa_payload_process_task.delay,
    }


def inbound_payload_store(
    *, source: str, kind: str, dedupe_key: str, body: dict[str, Any], raw: str, now: datetime
) -> tuple[InboundPayload, bool]:
    """Store a verified callback once (a replay or the platform's retry changes nothing) and, when it is
    new, enqueue its processing for after the commit. Returns the payload and whether it is new."""
    payload, created = InboundPayload.objects.get_or_create(
        dedupe_key=dedupe_key[:255],
        defaults={"source": source, "kind": kind[:64], "received_at": now, "body": body, "raw": raw},
    )
    if created:
        # robust: a broker that is down must not fail the reply; the tick picks the payload up.
        transaction.on_commit(partial(_tasks()[source], payload.pk), robust=True)
    return payload, created


def inbound_process_pending(now: datetime) -> dict[str, int]:
    """Tick step: process the payloads left unprocessed for over a minute, oldest first. One query
    when there are none."""
    processors = _processors()
    rows = list(
        InboundPayload.objects.filter(
            source__in=list(processors),
            processed_at__isnull=True,
            received_at__lt=now - LOST_AFTER,
            attempts__lt=MAX_ATTEMPTS,
        )
        .order_by("received_at")
        .values_list("pk", "source")[:PENDING_BATCH]
    )
    counts: dict[str, int] = {}
    for payload_id, source in rows:
        outcome = processors[source](payload_id=payload_id, now=now)
        key = outcome if isinstance(outcome, str) else ("processed" if outcome else "failed")
        counts[key] = counts.get(key, 0) + 1
    return counts


def inbound_payloads_requeue(*, payload_ids: list[int]) -> int:
    """ "Process again" (admin): the payloads go back to unprocessed with their attempts reset, and a
    task is enqueued for each on commit. Returns how many (sources processed in their request are left
    alone)."""
    tasks = _tasks()
    rows = list(
        InboundPayload.objects.filter(pk__in=payload_ids, source__in=list(tasks)).values_list("pk", "source")
    )
    InboundPayload.objects.filter(pk__in=[pk for pk, _ in rows]).update(
        processed_at=None, attempts=0, error=""
    )
    for payload_id, source in rows:
        transaction.on_commit(partial(tasks[source], payload_id), robust=True)
    return len(rows)
