"""Outbound webhooks (CONTRACT §3): the outbox fanned out to subscriptions, delivered signed, retried.

Fan-out: for each active subscription, batch by batch, one `INSERT … SELECT` makes a delivery for every
outbox message after its cursor whose type it wants (ON CONFLICT DO NOTHING on the unique
subscription+message), and the cursor moves in the same transaction. A message committed late with an
id below ones already visible would be passed over by a cursor, so the cursor stops short of messages
recorded after the *horizon*: a few seconds ago, or the start of the oldest transaction still writing
(PostgreSQL), whichever is earlier.

Delivery: due deliveries are claimed with SKIP LOCKED and marked `sending` (committed) before any
POST; the body `{"id", "type", "occurred_at", "data"}` is signed `X-Nurture-Signature:
sha256=<hex HMAC-SHA256 of the raw body>`; 2xx is delivered, anything else is retried with backoff
until 24 hours after the first attempt, then `failed`. A delivery left `sending` by a dead worker is
handed out again after a lease. `id` is the outbox message id: the same on every retry.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import socket
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Max, Q
from django.utils.timezone import now as timezone_now

from channels.models import WebhookDelivery, WebhookSubscription
from nurture.models import OutboxMessage

logger = logging.getLogger(__name__)

# The outbox message types a subscription may ask for (what nurture/outbox.py callers write).
WEBHOOK_EVENT_TYPES = (
    "lead.stage_changed",
    "lead.mql",
    "lead.sql",
    "lead.hot",
    "lead.assigned",
    "lead.sla_breached",
    "pool.joined",
    "pool.left",
    "task.escalated",
    "touch.failed",
)
# Outbox ids per fan-out statement: a backlog is worked through in bounded statements.
FANOUT_BATCH = 10_000
# Messages recorded later than this before the horizon wait for the next tick (clock skew between app
# servers and the database, and the instant between a row's created_at and its insert).
FANOUT_MARGIN = timedelta(seconds=2)
# Wait after the n-th failed attempt; the last value repeats until GIVE_UP after the first attempt.
BACKOFF = (
    timedelta(minutes=1),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=6),
)
RESPONSE_KEPT = 500
USER_AGENT = "nurture-webhooks/1"


def _give_up() -> timedelta:
    return timedelta(hours=settings.NURTURE_WEBHOOK_GIVE_UP_HOURS)


def webhook_sign(*, body: bytes, secret: str) -> str:
    """The `X-Nurture-Signature` value of a body: `sha256=` and the hex HMAC-SHA256 with the secret."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def webhook_outbox_head() -> int:
    """The id of the newest outbox message: where a new subscription starts (no backfill)."""
    return OutboxMessage.objects.aggregate(head=Max("id"))["head"] or 0


# --- Fan-out.


def _oldest_writer_start() -> datetime | None:
    """Start of the oldest other transaction that has written something (PostgreSQL only)."""
    if connection.vendor != "postgresql":
        return None  # SQLite has one writer at a time: what is visible is a prefix of the ids
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT min(xact_start) FROM pg_stat_activity "
            "WHERE datname = current_database() AND backend_xid IS NOT NULL AND pid <> pg_backend_pid()"
        )
        row = cursor.fetchone()
    return row[0] if row else None


def _horizon() -> datetime | None:
    """Messages recorded before this are all visible; None: everything visible is (SQLite)."""
    if connection.vendor != "postgresql":
        return None
    # The wall clock, as the outbox's created_at (not the tick's `now`, which `tick --now` may move).
    wall = timezone_now()
    oldest = _oldest_writer_start()
    return min(wall, oldest) - FANOUT_MARGIN if oldest else wall - FANOUT_MARGIN


def webhooks_fanout(*, now: datetime, batch: int = FANOUT_BATCH) -> dict[str, int]:
    """Make the deliveries of new outbox messages for every active subscription (set-based)."""
    subscriptions = list(
        WebhookSubscription.objects.filter(active=True).values_list("pk", "outbox_cursor").order_by("pk")
    )
    counts = {"fanned_out": 0}
    if not subscriptions:
        return counts
    head = webhook_outbox_head()
    behind = [pk for pk, cursor in subscriptions if cursor < head]
    if not behind:
        return counts
    horizon = _horizon()
    for pk in behind:
        while True:
            made, more = _fanout_batch(subscription_id=pk, now=now, horizon=horizon, batch=batch)
            counts["fanned_out"] += made
            if not more:
                break
    return counts


def _fanout_batch(
    *, subscription_id: int, now: datetime, horizon: datetime | None, batch: int
) -> tuple[int, bool]:
    """One bounded step of one subscription: (deliveries made, whether its cursor can move on)."""
    with transaction.atomic():
        sub = (
            WebhookSubscription.objects.select_for_update(skip_locked=True)
            .filter(pk=subscription_id, active=True)
            .values_list("outbox_cursor", "events")
            .first()
        )
        if sub is None:
            return 0, False  # another tick is fanning it out, or it was switched off
        low, events = sub
        window = OutboxMessage.objects.filter(id__gt=low).order_by("id").values("id")[:batch]
        bounds = OutboxMessage.objects.filter(id__in=window).aggregate(
            n=Count("id"),
            last=Max("id"),
            # Up to where the cursor may move: every message still committing has a greater id.
            safe=Max("id", filter=Q(created_at__lt=horizon)) if horizon else Max("id"),
        )
        high = bounds["safe"]
        if high is None:
            return 0, False  # nothing new, or only messages younger than the horizon: next tick
        more = bounds["n"] == batch and high == bounds["last"]
        made = 0
        wanted = [t for t in events or [] if isinstance(t, str)]
        if wanted:
            made = _insert_deliveries(
                subscription_id=subscription_id, low=low, high=high, types=wanted, now=now
            )
        WebhookSubscription.objects.filter(pk=subscription_id, outbox_cursor=low).update(outbox_cursor=high)
    return made, more


def _insert_deliveries(*, subscription_id: int, low: int, high: int, types: list[str], now: datetime) -> int:
    delivery = WebhookDelivery._meta.db_table
    outbox = OutboxMessage._meta.db_table
    marks = ", ".join(["%s"] * len(types))
    at = connection.ops.adapt_datetimefield_value(now)  # SQLite stores datetimes as the ORM writes them
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {delivery} (subscription_id, message_id, state, attempts, next_attempt_at, "
            "last_error, last_response, created_at) "
            f"SELECT %s, m.id, %s, 0, %s, '', '', %s FROM {outbox} m "
            f"WHERE m.id > %s AND m.id <= %s AND m.type IN ({marks}) "
            "ON CONFLICT (subscription_id, message_id) DO NOTHING",
            [subscription_id, WebhookDelivery.State.PENDING, at, at, low, high, *types],
        )
        return max(cursor.rowcount, 0)


# --- Delivery.


@dataclass(frozen=True)
class _Send:
    delivery_id: int
    url: str
    body: bytes
    headers: dict[str, str]


@dataclass(frozen=True)
class _Answer:
    status: int | None
    error: str
    response: str

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def webhook_payload(message: OutboxMessage) -> dict[str, Any]:
    """What a receiver gets: the outbox message id (stable across retries), type, time and data."""
    return {
        "id": message.pk,
        "type": message.type,
        "occurred_at": message.occurred_at.isoformat(),
        "data": {"lead": message.lead_id, **(message.data or {})},
    }


def _request(delivery: WebhookDelivery, now: datetime) -> _Send:
    message = delivery.message
    body = json.dumps(webhook_payload(message), ensure_ascii=False, separators=(",", ":")).encode()
    return _Send(
        delivery_id=delivery.pk,
        url=delivery.subscription.url,
        body=body,
        headers={
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": USER_AGENT,
            "X-Nurture-Signature": webhook_sign(body=body, secret=delivery.subscription.secret),
            "X-Nurture-Event": message.type,
            "X-Nurture-Delivery": str(delivery.pk),
            "X-Nurture-Timestamp": str(int(now.timestamp())),
        },
    )


def webhook_url_refusal(url: str, *, resolve: bool) -> str:
    """Why `url` may not receive webhooks, or "" when it may. A subscriber (anyone with the write scope)
    must not make the server POST into its own network: loopback, private, link-local and reserved
    addresses are refused unless NURTURE_WEBHOOK_ALLOW_PRIVATE. A literal address or `localhost` is
    refused when saved; a host name is resolved before each delivery (`resolve`), when it is used."""
    if settings.NURTURE_WEBHOOK_ALLOW_PRIVATE:
        return ""
    host = (urlsplit(url).hostname or "").strip("[]").lower()
    if not host:
        return "the URL has no host"
    if host == "localhost" or host.endswith(".localhost"):
        return "a local address"
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        if not resolve:
            return ""
        try:
            infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            return ""  # cannot be resolved: the POST fails on its own and is retried
        addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    for address in addresses:
        if not address.is_global or address.is_multicast:
            return f"{address} is not a public address"
    return ""


def _post(client: httpx.Client, send: _Send) -> _Answer:
    refusal = webhook_url_refusal(send.url, resolve=True)
    if refusal:
        return _Answer(status=None, error=f"refused: {refusal}", response="")
    try:
        response = client.post(send.url, content=send.body, headers=send.headers)
    except (httpx.HTTPError, ValueError) as exc:  # ValueError: a URL httpx refuses
        return _Answer(status=None, error=f"{type(exc).__name__}: {exc}"[:2000], response="")
    text = response.text[:RESPONSE_KEPT]
    error = "" if 200 <= response.status_code < 300 else f"HTTP {response.status_code}"
    return _Answer(status=response.status_code, error=error, response=text)


def webhooks_claim(*, now: datetime, limit: int | None = None) -> list[int]:
    """Mark due deliveries `sending` (committed before any POST): pending ones whose time came, and
    ones a dead worker left `sending` longer than the lease. Returns their ids."""
    lease = now - timedelta(minutes=settings.NURTURE_WEBHOOK_LEASE_MINUTES)
    due = Q(state=WebhookDelivery.State.PENDING, next_attempt_at__lte=now) | Q(
        state=WebhookDelivery.State.SENDING, claimed_at__lt=lease
    )
    if not WebhookDelivery.objects.filter(due, subscription__active=True).exists():
        return []
    with transaction.atomic():
        ids = list(
            WebhookDelivery.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(due, subscription__active=True)
            .order_by("next_attempt_at", "pk")
            .values_list("pk", flat=True)[: limit or settings.NURTURE_WEBHOOK_BATCH]
        )
        if ids:
            WebhookDelivery.objects.filter(pk__in=ids).update(
                state=WebhookDelivery.State.SENDING, claimed_at=now
            )
    return ids


def webhooks_send(
    *, delivery_ids: list[int], claimed_at: datetime, now: datetime | None = None, restamp: bool = False
) -> dict[str, int]:
    """POST the claimed deliveries (a few threads at once) and record each answer. Only deliveries still
    held by this claim are sent: one handed out again after its lease belongs to the new claim.

    `restamp` (a worker that picked the task up later): the claim is renewed first, so its lease counts
    from now and no later tick hands these out again while they are being sent."""
    if restamp:
        renewed = max(timezone_now(), claimed_at)
        WebhookDelivery.objects.filter(
            pk__in=delivery_ids, state=WebhookDelivery.State.SENDING, claimed_at=claimed_at
        ).update(claimed_at=renewed)
        claimed_at = renewed
    now = now or claimed_at
    deliveries = list(
        WebhookDelivery.objects.filter(
            pk__in=delivery_ids, state=WebhookDelivery.State.SENDING, claimed_at=claimed_at
        ).select_related("subscription", "message")
    )
    counts = {"delivered": 0, "retry": 0, "failed": 0}
    if not deliveries:
        return counts
    sends = [_request(d, now) for d in deliveries]
    timeout = httpx.Timeout(settings.NURTURE_WEBHOOK_TIMEOUT_SECONDS)
    threads = max(1, min(settings.NURTURE_WEBHOOK_THREADS, len(sends)))
    # Threads only talk HTTP; every database write stays on this thread (and its transaction).
    with httpx.Client(timeout=timeout, follow_redirects=False) as client, ThreadPoolExecutor(threads) as pool:
        answers = list(pool.map(lambda s: _post(client, s), sends))
    for delivery, answer in zip(deliveries, answers, strict=True):
        counts[_record(delivery, answer, claimed_at=claimed_at, now=now)] += 1
    return counts


def _next_attempt(delivery: WebhookDelivery, now: datetime) -> datetime | None:
    """When to try again after a failed attempt (the attempts made so far include it), or None: give up."""
    first = delivery.created_at
    if now - first >= _give_up():
        return None
    wait = BACKOFF[min(delivery.attempts, len(BACKOFF)) - 1]
    return min(now + wait, first + _give_up())


def _record(delivery: WebhookDelivery, answer: _Answer, *, claimed_at: datetime, now: datetime) -> str:
    delivery.attempts += 1
    fields: dict[str, Any] = {
        "attempts": delivery.attempts,
        "last_status": answer.status,
        "last_error": answer.error,
        "last_response": answer.response,
    }
    if answer.ok:
        fields.update(state=WebhookDelivery.State.DELIVERED, delivered_at=now)
        outcome = "delivered"
    elif (later := _next_attempt(delivery, now)) is not None:
        fields.update(state=WebhookDelivery.State.PENDING, next_attempt_at=later)
        outcome = "retry"
    else:
        fields.update(state=WebhookDelivery.State.FAILED)
        outcome = "failed"
    WebhookDelivery.objects.filter(
        pk=delivery.pk, state=WebhookDelivery.State.SENDING, claimed_at=claimed_at
    ).update(**fields)
    return outcome


def webhooks_deliver(*, now: datetime, max_batches: int = 20) -> dict[str, int]:
    """Deliver what is due now in this process, batch by batch (`manage.py tick`)."""
    totals = {"delivered": 0, "retry": 0, "failed": 0}
    size = settings.NURTURE_WEBHOOK_BATCH
    for _ in range(max_batches):
        ids = webhooks_claim(now=now, limit=size)
        if not ids:
            break
        for key, value in webhooks_send(delivery_ids=ids, claimed_at=now, now=now).items():
            totals[key] += value
        if len(ids) < size:
            break
    return totals


def webhooks_retry_now(*, delivery_ids: Iterable[int], now: datetime) -> int:
    """Admin's "retry now": pending again, due now (also given-up ones: one more attempt each)."""
    return (
        WebhookDelivery.objects.filter(pk__in=list(delivery_ids))
        .exclude(state=WebhookDelivery.State.SENDING)
        .exclude(state=WebhookDelivery.State.DELIVERED)
        .update(state=WebhookDelivery.State.PENDING, next_attempt_at=now, claimed_at=None)
    )


def webhooks_tick(now: datetime, *, inline: bool = True) -> dict[str, int]:
    """The tick's step: fan out the new outbox messages, then deliver what is due (in this process, or
    in Celery workers after the commit)."""
    report = webhooks_fanout(now=now)
    if inline:
        report.update(webhooks_deliver(now=now))
        return {k: v for k, v in report.items() if v}
    from channels.webhook_tasks import webhooks_send_task

    queued = 0
    size = settings.NURTURE_WEBHOOK_TASK_BATCH
    for _ in range(20):
        ids = webhooks_claim(now=now)
        queued += len(ids)
        for start in range(0, len(ids), size):
            chunk = ids[start : start + size]
            transaction.on_commit(lambda chunk=chunk: webhooks_send_task.delay(chunk, now.isoformat()))
        if len(ids) < settings.NURTURE_WEBHOOK_BATCH:
            break
    report["queued"] = queued
    return {k: v for k, v in report.items() if v}


# --- Subscriptions.


def webhook_subscription_create(
    *, url: str, events: list[str], secret: str, description: str = "", active: bool = True
) -> WebhookSubscription:
    """A new subscription: it starts from the newest outbox message (no backfill)."""
    return WebhookSubscription.objects.create(
        url=url,
        events=list(dict.fromkeys(events)),
        secret=secret,
        description=description,
        active=active,
        outbox_cursor=webhook_outbox_head(),
    )
