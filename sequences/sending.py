"""The send half of the engine: which touches are due, the claim, the adapters' calls, the results.

Touches of one channel go to its adapter together: an adapter with a `batch_size` gets them in one
`policy_check_batch` and one `send_batch` (WeCom sends identical content to many customers of one staff
member as one 群发 task; moments tag and post once per step and day); the others one `send` at a time,
each behind the provider's token bucket (channels/ratelimit.py). A channel failing again and again is
paused by its circuit breaker (channels/breaker.py): its touches wait and are not stale-skipped because
of the outage. Results are recorded with conditional updates (`state = 'sending'`), so nothing is sent
twice whatever runs twice.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import Case, DurationField, ExpressionWrapper, F, IntegerField, Q, Value, When
from django.db.models.functions import Greatest
from django.utils.timezone import now as timezone_now

from channels.adapters.base import (
    Adapter,
    OutgoingMessage,
    PermanentError,
    PolicyVerdict,
    RetryableError,
    SendResult,
    SendStatus,
)
from channels.breaker import ChannelBreakers, channels_paused, channels_resumed
from channels.ratelimit import bucket_wait
from channels.registry import adapter_for
from leads.models import Lead
from nurture.outbox import outbox_put
from sequences.models import Step, Touch, TouchState

logger = logging.getLogger(__name__)

RECONCILE_BATCH = 1000
BACKOFF_MINUTES = (1, 5, 25)


# --- Due touches: stale ones, lost tasks, dead workers.


def touches_skip_stale(*, now: datetime) -> int:
    """Scheduled touches more than their sequence's max lateness past due are skipped: stale.

    A touch of a channel paused by its circuit breaker waits; once the channel resumed, its lateness
    counts from the resume (an outage alone never makes a touch stale)."""
    # As an IntegerField: SQLite refuses a PositiveIntegerField times a duration.
    minutes = ExpressionWrapper(F("sequence__max_lateness_minutes"), output_field=IntegerField())
    lateness = ExpressionWrapper(minutes * timedelta(minutes=1), output_field=DurationField())
    paused = channels_paused(now=now)
    resumed = channels_resumed(since=now - timedelta(days=7))
    since: Any = F("due_at")
    if resumed:
        since = Case(
            *(
                When(channel=channel, then=Greatest(F("due_at"), Value(at)))
                for channel, at in resumed.items()
            ),
            default=F("due_at"),
        )
    stale = (
        Touch.objects.filter(state=TouchState.SCHEDULED, attempts=0)
        .exclude(channel__in=list(paused))
        .alias(late=lateness, since=since)
        .filter(since__lt=now - F("late"))
    )
    return Touch.objects.filter(pk__in=stale.values("pk")).update(
        state=TouchState.SKIPPED, skip_reason="stale"
    )


def touches_reconcile(*, now: datetime) -> dict[str, int]:
    """Touches a dead worker left in `sending`: ask the adapter what became of them, else hand them
    out again (the same idempotency key, so a provider that got it the first time ignores it)."""
    lease = now - timedelta(minutes=settings.NURTURE_SENDING_LEASE_MINUTES)
    counts = {"reconciled": 0, "requeued": 0}
    with transaction.atomic():
        stuck = list(
            Touch.objects.select_for_update(skip_locked=True)
            .filter(state=TouchState.SENDING, claimed_at__lt=lease)
            .select_related("lead")[:RECONCILE_BATCH]
        )
        for touch in stuck:
            adapter = adapter_for(touch.channel)
            result = None
            if adapter is not None:
                try:
                    result = adapter.reconcile(
                        _message(touch, touch.lead, touch.rendered, ""), touch.provider_ref
                    )
                except RetryableError:
                    if not adapter.honours_idempotency_key:
                        # The provider could not say, and it would deliver a second send: ask again
                        # after another lease rather than risk it.
                        Touch.objects.filter(pk=touch.pk, state=TouchState.SENDING).update(claimed_at=now)
                        counts["unknown"] = counts.get("unknown", 0) + 1
                        continue
                except PermanentError:
                    result = None
            if result is not None:
                _record(touch, result.status, result.provider_ref, now)
                counts["reconciled"] += 1
            else:
                Touch.objects.filter(pk=touch.pk, state=TouchState.SENDING).update(
                    state=TouchState.SCHEDULED, due_at=now, queued_at=None, claimed_at=None
                )
                counts["requeued"] += 1
    return counts


def touches_due_ids(*, now: datetime, limit: int | None = None) -> list[int]:
    """Ids of due touches not handed to a worker lately, marked as handed out."""
    return [pk for pk, _ in _due(now=now, limit=limit)]


def touches_due_batches(*, now: datetime, size: int) -> list[list[int]]:
    """The due touches (marked as handed out) in dispatch batches: `size` each, but an adapter with a
    `batch_size` gets its channel's touches together, that many at a time."""
    plain: list[int] = []
    grouped: dict[str, list[int]] = defaultdict(list)
    sizes: dict[str, int] = {}
    for pk, channel in _due(now=now):
        if channel not in sizes:
            adapter = adapter_for(channel)
            sizes[channel] = getattr(adapter, "batch_size", 0) if adapter is not None else 0
        if sizes[channel]:
            grouped[channel].append(pk)
        else:
            plain.append(pk)
    result = list(batches(plain, size))
    for channel, ids in grouped.items():
        result.extend(batches(ids, sizes[channel]))
    return result


def _due(*, now: datetime, limit: int | None = None) -> list[tuple[int, str]]:
    requeue = now - timedelta(minutes=settings.NURTURE_QUEUE_LEASE_MINUTES)
    due = Touch.objects.filter(state=TouchState.SCHEDULED, due_at__lte=now).filter(
        Q(queued_at__isnull=True) | Q(queued_at__lt=requeue)
    )
    paused = channels_paused(now=now)
    if paused:  # their touches wait for the breaker to close
        due = due.exclude(channel__in=list(paused))
    rows = list(due.order_by("due_at", "pk").values_list("pk", "channel")[: limit or 1_000_000])
    ids = [pk for pk, _ in rows]
    for start in range(0, len(ids), 10_000):
        Touch.objects.filter(pk__in=ids[start : start + 10_000]).update(queued_at=now)
    return rows


def batches(ids: list[int], size: int) -> Iterable[list[int]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


# --- Sending.


def _message(
    touch: Touch, lead: Lead, text: str, link: str, *, zone: str = "", title: str = ""
) -> OutgoingMessage:
    return OutgoingMessage(
        touch_id=touch.pk,
        idempotency_key=touch.idempotency_key,
        channel=touch.channel,
        lead_id=lead.pk,
        lead={
            "name": lead.name,
            "company": lead.company,
            "phone": lead.phone or "",
            "email": lead.email or "",
            "wecom_external_userid": lead.wecom_external_userid or "",
            "wechat_unionid": lead.wechat_unionid or "",
            "wechat_openid": lead.wechat_openid or "",
            "wecom_follow_user": lead.wecom_follow_user,
            "wechat_oa_interaction_at": lead.wechat_oa_interaction_at,
            "properties": lead.properties or {},
        },
        text=text,
        link=link,
        content_title=title,
        owner_id=lead.owner_id,
        step_id=touch.step_id,
        sequence_id=touch.sequence_id,
        due_at=touch.due_at,
        timezone=zone or settings.TIME_ZONE,
    )


def _record(
    touch: Touch,
    status: str,
    provider_ref: str,
    now: datetime,
    *,
    rendered: str | None = None,
    error: str = "",
) -> bool:
    state = {
        SendStatus.SENT: TouchState.SENT,
        SendStatus.DELIVERED: TouchState.DELIVERED,
        SendStatus.AWAITING_CONFIRM: TouchState.AWAITING_CONFIRM,
    }.get(status)
    fields: dict[str, Any] = {"provider_ref": provider_ref[:128]}
    if rendered is not None:
        fields["rendered"] = rendered
    if state is None:  # skipped by the platform's policy
        fields.update(state=TouchState.SKIPPED, skip_reason="policy")
    else:
        fields.update(state=state, sent_at=now, error=error)
    return bool(Touch.objects.filter(pk=touch.pk, state=TouchState.SENDING).update(**fields))


def _claim(ids: list[int], now: datetime) -> list[Touch]:
    """Mark the batch's due touches `sending` (committed before any provider is called)."""
    with transaction.atomic():
        claimed = list(
            Touch.objects.select_for_update(skip_locked=True)
            .filter(pk__in=ids, state=TouchState.SCHEDULED, due_at__lte=now)
            .order_by("pk")
        )
        if not claimed:
            return []
        Touch.objects.filter(pk__in=[t.pk for t in claimed]).update(
            state=TouchState.SENDING, claimed_at=now, attempts=F("attempts") + 1
        )
    for touch in claimed:
        touch.attempts += 1
        touch.state = TouchState.SENDING
    return claimed


def touches_dispatch(*, touch_ids: list[int], now: datetime | None = None) -> dict[str, int]:
    """Send a batch of touches: claim, render, call the adapters with the idempotency key, record."""
    now = now or timezone_now()
    counts: dict[str, int] = defaultdict(int)
    claimed = _claim(touch_ids, now)
    if not claimed:
        return dict(counts)
    batch = _Batch(claimed, now, counts)
    with _results_without_flush_wait():
        try:
            batch.send()
        finally:
            batch.results.flush()
            batch.breakers.save()
    return dict(counts)


class _Batch:
    """One claimed batch: what its touches need (leads, steps, links, assets) read in a few queries,
    then each channel's touches to its adapter."""

    def __init__(self, claimed: list[Touch], now: datetime, counts: dict[str, int]) -> None:
        from sequences.models import Sequence

        self.claimed, self.now, self.counts = claimed, now, counts
        self.leads = Lead.objects.in_bulk({t.lead_id for t in claimed})
        self.steps = Step.objects.in_bulk({t.step_id for t in claimed if t.step_id})
        self.zones = dict(
            Sequence.objects.filter(pk__in={t.sequence_id for t in claimed}).values_list("pk", "timezone")
        )
        self.links = _links(claimed, now)
        self.assets = _assets({t.content_id for t in claimed if t.content_id})
        self.results = _Results(now)
        self.breakers = ChannelBreakers(channels={t.channel for t in claimed}, now=now)

    def send(self) -> None:
        by_channel: dict[str, list[tuple[Touch, OutgoingMessage]]] = defaultdict(list)
        for touch in self.claimed:
            message = self.message(touch)
            if message is not None:
                by_channel[touch.channel].append((touch, message))
        for channel, items in by_channel.items():
            adapter = adapter_for(channel)
            if adapter is None:
                self.counts["skipped"] += _set_state(
                    [t for t, _ in items], state=TouchState.SKIPPED, skip_reason="not_configured"
                )
            elif adapter.batch_size:
                self.send_batched(adapter, items)
            else:
                for touch, message in items:
                    self.counts[self.send_one(adapter, touch, message)] += 1

    def message(self, touch: Touch) -> OutgoingMessage | None:
        lead = self.leads[touch.lead_id]
        step = self.steps.get(touch.step_id)
        link = self.links.get(touch.pk, "")
        asset = self.assets.get(touch.content_id)
        if touch.channel == "wecom_moment" and asset is not None:
            link = _public_url(asset)  # one post for many leads: the content's own page, no lead's link
        try:
            text = _render(step.text if step else "", lead, link, self.assets.get(touch.content_id))
        except Exception as exc:  # a template that broke after it was saved fails this touch alone
            _fail(touch, f"render: {exc}", self.now)
            self.counts["failed"] += 1
            return None
        zone = self.zones.get(touch.sequence_id) or settings.TIME_ZONE
        title = getattr(self.assets.get(touch.content_id), "title", "")
        return _message(touch, lead, text, link, zone=zone, title=title)

    def else_channel(self, touch: Touch) -> str:
        step = self.steps.get(touch.step_id)
        return step.else_channel if step else ""

    # One at a time.

    def send_one(self, adapter: Adapter, touch: Touch, message: OutgoingMessage) -> str:
        if self.breakers.is_open(touch.channel):
            return self.put_back([touch], "paused")
        verdict = adapter.policy_check(message, self.now)
        if not verdict.allowed:
            return self.refused(touch, message, verdict)
        if adapter.rate and not bucket_wait(
            key=adapter.rate_key(),
            rate=adapter.rate[0],
            burst=adapter.rate[1],
            max_wait=settings.NURTURE_RATE_MAX_WAIT_SECONDS,
        ):
            return self.put_back([touch], "throttled")
        try:
            outcome: SendResult | RetryableError | PermanentError = adapter.send(message)
        except (RetryableError, PermanentError) as exc:
            outcome = exc
        return self.outcome(adapter, touch, message, outcome)

    def refused(self, touch: Touch, message: OutgoingMessage, verdict: PolicyVerdict) -> str:
        """The platform refuses this channel now (e.g. outside WeChat's 48-hour window): the step's
        fallback channel carries it under the same idempotency key, else it is skipped with the reason."""
        else_channel = self.else_channel(touch)
        fallback = adapter_for(else_channel) if else_channel and else_channel != touch.channel else None
        if fallback is not None:
            moved = replace_channel(message, else_channel)
            if fallback.policy_check(moved, self.now).allowed:
                note = f"fallback from {touch.channel}: {verdict.reason}"[:2000]
                Touch.objects.filter(pk=touch.pk, state=TouchState.SENDING).update(
                    channel=else_channel, error=note
                )
                touch.channel = else_channel
                touch.error = note  # kept when the fallback's result is recorded
                return self.send_one(fallback, touch, moved)
        Touch.objects.filter(pk=touch.pk, state=TouchState.SENDING).update(
            state=TouchState.SKIPPED, skip_reason=f"policy:{verdict.reason}"[:64], rendered=message.text
        )
        return "skipped"

    def outcome(
        self,
        adapter: Adapter,
        touch: Touch,
        message: OutgoingMessage,
        outcome: SendResult | RetryableError | PermanentError,
    ) -> str:
        if isinstance(outcome, RetryableError):
            self.breakers.failure(touch.channel, str(outcome))
            return _retry(touch, outcome, self.now)
        if isinstance(outcome, PermanentError):
            self.breakers.success(touch.channel)  # the provider answered: this recipient is the problem
            _fail(touch, f"{outcome.code}: {outcome}" if outcome.code else str(outcome), self.now)
            return "failed"
        self.breakers.success(touch.channel)
        if outcome.status == SendStatus.SKIPPED_POLICY:
            return self.refused(touch, message, PolicyVerdict(False, outcome.reason or "policy"))
        note = touch.error if touch.error.startswith("fallback from") else ""
        if adapter.honours_idempotency_key and outcome.status in _SENT_STATES and not note:
            self.results.add(touch.pk, _SENT_STATES[outcome.status], outcome.provider_ref, message.text)
        else:
            _record(touch, outcome.status, outcome.provider_ref, self.now, rendered=message.text, error=note)
        return outcome.status

    # Many at once.

    def send_batched(self, adapter: Adapter, items: list[tuple[Touch, OutgoingMessage]]) -> None:
        if self.breakers.is_open(items[0][0].channel):
            self.put_back([t for t, _ in items], "paused")
            self.counts["paused"] += len(items)
            return
        verdicts = adapter.policy_check_batch([m for _, m in items], self.now)
        allowed: list[tuple[Touch, OutgoingMessage]] = []
        for touch, message in items:
            verdict = verdicts.get(touch.pk, PolicyVerdict(True))
            if verdict.allowed:
                allowed.append((touch, message))
            else:
                self.counts[self.refused(touch, message, verdict)] += 1
        if not allowed:
            return
        outcomes = adapter.send_batch([m for _, m in allowed])
        for touch, message in allowed:
            outcome = outcomes.get(touch.pk)
            if outcome is None:  # the adapter did not get to it: back to the queue, not lost
                self.counts[self.put_back([touch], "requeued")] += 1
                continue
            self.counts[self.outcome(adapter, touch, message, outcome)] += 1

    def put_back(self, touches: list[Touch], why: str) -> str:
        """Not sent now (breaker open, rate limit): scheduled again as it was, the attempt not counted;
        the next tick hands it out again."""
        Touch.objects.filter(pk__in=[t.pk for t in touches], state=TouchState.SENDING).update(
            state=TouchState.SCHEDULED, queued_at=None, claimed_at=None, attempts=F("attempts") - 1
        )
        return why


def replace_channel(message: OutgoingMessage, channel: str) -> OutgoingMessage:
    from dataclasses import replace

    return replace(message, channel=channel)


def _set_state(touches: list[Touch], **fields: Any) -> int:
    return Touch.objects.filter(pk__in=[t.pk for t in touches], state=TouchState.SENDING).update(**fields)


def _retry(touch: Touch, exc: RetryableError, now: datetime) -> str:
    """A transient failure: again after 1, 5, 25 minutes (or the provider's retry_after), then failed."""
    if touch.attempts > len(BACKOFF_MINUTES):
        _fail(touch, f"retries exhausted: {exc}", now)
        return "failed"
    wait = timedelta(minutes=BACKOFF_MINUTES[touch.attempts - 1])
    if exc.retry_after:
        wait = max(wait, timedelta(seconds=exc.retry_after))
    Touch.objects.filter(pk=touch.pk, state=TouchState.SENDING).update(
        state=TouchState.SCHEDULED, due_at=now + wait, error=str(exc)[:2000], queued_at=None
    )
    return "retry"


@contextmanager
def _results_without_flush_wait() -> Iterator[None]:
    """Each send's result commits without waiting for its WAL flush: one fsync per touch was most of
    dispatch's time. A server crash may lose the last few results; those touches stay `sending` behind
    their claim (committed durably before) and are reconciled or resent with their key, as after a
    worker crash."""
    if connection.vendor != "postgresql":
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit TO OFF")
    try:
        yield
    finally:
        with suppress(DatabaseError), connection.cursor() as cursor:  # a broken connection is dropped
            cursor.execute("RESET synchronous_commit")


_SENT_STATES = {
    SendStatus.SENT: TouchState.SENT,
    SendStatus.DELIVERED: TouchState.DELIVERED,
    SendStatus.AWAITING_CONFIRM: TouchState.AWAITING_CONFIRM,
}
RECORD_EVERY = 100


class _Results:
    """Results of accepted sends, written RECORD_EVERY at a time in one statement (and whatever is
    left when the batch ends or breaks). A crash loses at most those not yet written: they stay
    `sending` and are reconciled or resent with their key, as when a worker dies right after a send."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.rows: list[tuple[int, str, str, str]] = []

    def add(self, touch_id: int, state: str, provider_ref: str, rendered: str) -> None:
        self.rows.append((touch_id, state, provider_ref[:128], rendered))
        if len(self.rows) >= RECORD_EVERY:
            self.flush()

    def flush(self) -> None:
        rows, self.rows = self.rows, []
        if not rows:
            return
        if connection.vendor != "postgresql":
            for touch_id, state, ref, rendered in rows:
                Touch.objects.filter(pk=touch_id, state=TouchState.SENDING).update(
                    state=state, provider_ref=ref, rendered=rendered, sent_at=self.now, error=""
                )
            return
        ids, states, refs, texts = (list(column) for column in zip(*rows, strict=True))
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {Touch._meta.db_table} t SET state = v.state, provider_ref = v.ref, "
                "rendered = v.rendered, sent_at = %s, error = '' FROM "
                "unnest(%s::bigint[], %s::text[], %s::text[], %s::text[]) AS v(id, state, ref, rendered) "
                "WHERE t.id = v.id AND t.state = 'sending'",
                [self.now, ids, states, refs, texts],
            )


def _fail(touch: Touch, error: str, now: datetime, *, from_state: str = TouchState.SENDING) -> bool:
    with transaction.atomic():
        changed = Touch.objects.filter(pk=touch.pk, state=from_state).update(
            state=TouchState.FAILED, error=error[:2000]
        )
        if changed:
            outbox_put(
                type="touch.failed",
                lead_ids=[touch.lead_id],
                occurred_at=now,
                data={
                    "touch": touch.pk,
                    "sequence": touch.sequence_id,
                    "channel": touch.channel,
                    "error": error[:500],
                },
            )
    return bool(changed)


def _links(touches: list[Touch], now: datetime) -> dict[int, str]:
    items = [(t.pk, t.lead_id, t.content_id) for t in touches if t.content_id]
    if not items:
        return {}
    from content.services import content_links_for_touches

    return content_links_for_touches(items=items, now=now)


def _assets(ids: set[int]) -> dict[int, Any]:
    if not ids:
        return {}
    from content.models import ContentAsset

    return ContentAsset.objects.in_bulk(list(ids))


def _public_url(asset: Any) -> str:
    from content.services import asset_destination

    destination = asset_destination(asset)
    if destination.startswith("/"):
        return settings.NURTURE_PUBLIC_URL.rstrip("/") + destination
    return destination


def _render(text: str, lead: Lead, link: str, asset: Any) -> str:
    from content.templating import template_context, template_render

    if not text:
        title = getattr(asset, "title", "")
        return " ".join(part for part in (title, link) if part)
    return template_render(text, template_context(lead=lead, link=link, asset=asset))


def touches_retry_now(*, touch_ids: list[int], now: datetime) -> int:
    """Failed touches (the dead-letter list) sent again now, under their idempotency key."""
    return Touch.objects.filter(pk__in=touch_ids, state=TouchState.FAILED).update(
        state=TouchState.SCHEDULED, due_at=now, attempts=0, queued_at=None, claimed_at=None, checked_at=None
    )
