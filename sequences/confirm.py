"""Two-phase sends: touches `awaiting_confirm` (a WeCom 群发 the staff member still has to confirm in
the app, a moment to publish, a call to make) are asked about every few minutes through the adapter's
`reconcile_batch`, and end `sent`/`delivered`, `skipped` (the platform's quota) or `failed` (e.g. the
customer is no longer a friend)."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q

from channels.adapters.base import PermanentError, SendResult, SendStatus
from channels.breaker import channels_paused
from channels.registry import adapter_for
from sequences.models import Touch, TouchState
from sequences.sending import _fail, _message

POLL_BATCH = 2000

_DONE = {SendStatus.SENT: TouchState.SENT, SendStatus.DELIVERED: TouchState.DELIVERED}


def touches_confirm_poll(*, now: datetime, limit: int = POLL_BATCH) -> dict[str, int]:
    """Ask the providers about touches awaiting confirmation not asked about lately (claimed by
    stamping `checked_at`, so two ticks never ask twice at once); record what they answer."""
    every = timedelta(minutes=settings.NURTURE_CONFIRM_POLL_MINUTES)
    counts: dict[str, int] = defaultdict(int)
    with transaction.atomic():
        due = Touch.objects.select_for_update(skip_locked=True).filter(
            Q(checked_at__isnull=True) | Q(checked_at__lt=now - every), state=TouchState.AWAITING_CONFIRM
        )
        paused = channels_paused(now=now)
        if paused:
            due = due.exclude(channel__in=list(paused))
        ids = list(due.order_by("checked_at", "pk").values_list("pk", flat=True)[:limit])
        if not ids:
            return {}
        Touch.objects.filter(pk__in=ids).update(checked_at=now)
    touches = list(Touch.objects.filter(pk__in=ids).select_related("lead", "sequence"))
    by_channel: dict[str, list[Touch]] = defaultdict(list)
    for touch in touches:
        by_channel[touch.channel].append(touch)
    for channel, group in by_channel.items():
        adapter = adapter_for(channel)
        if adapter is None:
            continue  # not configured any more: it keeps waiting, nothing is lost
        items = [
            (_message(t, t.lead, t.rendered, "", zone=t.sequence.timezone), t.provider_ref) for t in group
        ]
        outcomes = adapter.reconcile_batch(items)
        _apply(group, outcomes, now, counts)
    return dict(counts)


def _apply(
    touches: list[Touch],
    outcomes: dict[int, SendResult | PermanentError | None],
    now: datetime,
    counts: dict[str, int],
) -> None:
    done: dict[str, list[int]] = defaultdict(list)
    skipped: dict[str, list[int]] = defaultdict(list)
    for touch in touches:
        outcome = outcomes.get(touch.pk)
        if isinstance(outcome, PermanentError):
            error = f"{outcome.code}: {outcome}" if outcome.code else str(outcome)
            if _fail(touch, error, now, from_state=TouchState.AWAITING_CONFIRM):
                counts["failed"] += 1
        elif outcome is None or outcome.status == SendStatus.AWAITING_CONFIRM:
            counts["waiting"] += 1
        elif outcome.status in _DONE:
            done[_DONE[outcome.status]].append(touch.pk)
        else:
            skipped[f"policy:{outcome.reason or 'policy'}"[:64]].append(touch.pk)
    for state, ids in done.items():
        counts[state] += Touch.objects.filter(pk__in=ids, state=TouchState.AWAITING_CONFIRM).update(
            state=state, sent_at=now
        )
    for reason, ids in skipped.items():
        counts["skipped"] += Touch.objects.filter(pk__in=ids, state=TouchState.AWAITING_CONFIRM).update(
            state=TouchState.SKIPPED, skip_reason=reason
        )
