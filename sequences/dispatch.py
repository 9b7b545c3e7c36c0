"""Due steps become touches, and touches are sent exactly once.

`steps_advance`: enrollments whose next step fell due are claimed in batches (SKIP LOCKED); for each,
the step's branch (`condition`, `wait_for`), lateness, opt-outs, the channel's configuration and the
frequency cap decide whether a touch is made (scheduled, or a staff task), skipped with the reason,
or moved to the next allowed time. Conditions are compiled once per step and batch (rule language).

`touches_dispatch`: a batch of due touch ids is claimed with SKIP LOCKED and marked `sending` in its
own transaction before any provider is called; each result is recorded with a conditional update. A
touch left in `sending` by a dead worker is reconciled (the adapter's `reconcile`, else sent again with
the same idempotency key, which the providers we use honour), never dropped.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import DurationField, ExpressionWrapper, F, IntegerField, Q
from django.utils.timezone import now as timezone_now

from channels.adapters.base import OutgoingMessage, PermanentError, RetryableError, SendStatus
from channels.registry import adapter_for
from leads.models import Event, Lead
from leads.rules import rule_compile
from nurture.outbox import outbox_put
from sequences.models import Enrollment, EnrollmentState, Step, StepMode, Touch, TouchState
from sequences.scheduling import cap_shift, local_day_bounds, quiet_hours_shift
from sequences.services import SequencePlan, sequence_plans
from sequences.validation import _wait_rule

logger = logging.getLogger(__name__)

ADVANCE_BATCH = 1000
# States that count against a frequency cap (a skipped or failed touch reached nobody).
CAP_STATES = ("scheduled", "sending", "awaiting_confirm", "sent", "delivered", "task_open", "task_done")
BACKOFF_MINUTES = (1, 5, 25)


def touch_key(enrollment_id: int, position: int) -> str:
    """One key per enrollment and step: a retry, a second tick or a second worker reuse it."""
    return f"e{enrollment_id}-p{position}"


def _cap_for(plan: SequencePlan, channel: str) -> int:
    caps = plan.sequence.caps or {}
    if channel in caps:
        return int(caps[channel])
    defaults = settings.NURTURE_FREQUENCY_CAPS
    return int(defaults.get(channel, defaults.get("*", 1)))


def _opted_out(lead_ids: list[int]) -> dict[int, set[str]]:
    """Channels each lead unsubscribed from (`unsubscribed` events with a `channel` property)."""
    result: dict[int, set[str]] = defaultdict(set)
    rows = Event.objects.filter(lead_id__in=lead_ids, type="unsubscribed").values_list(
        "lead_id", "properties"
    )
    for lead_id, props in rows:
        channel = (props or {}).get("channel")
        if channel:
            result[lead_id].add(str(channel))
    return result


@dataclass
class _Due:
    enrollment: Enrollment
    step: Step
    plan: SequencePlan


def _branch_sets(items: list[_Due], now: datetime) -> tuple[dict[int, set[int]], dict[int, set[int]]]:
    """For each step with a condition / wait_for, the leads of this batch that meet it (one query each)."""
    by_step: dict[int, list[_Due]] = defaultdict(list)
    for item in items:
        if item.step.condition or item.step.wait_for:
            by_step[item.step.pk].append(item)
    conditions: dict[int, set[int]] = {}
    waits: dict[int, set[int]] = {}
    for step_id, group in by_step.items():
        step = group[0].step
        lead_ids = [g.enrollment.lead_id for g in group]
        if step.condition:
            q = rule_compile(step.condition, now=now)
            conditions[step_id] = set(
                Lead.objects.filter(pk__in=lead_ids).filter(q).values_list("pk", flat=True)
            )
        if step.wait_for:
            q = rule_compile(_wait_rule(step.wait_for), now=now)
            waits[step_id] = set(Lead.objects.filter(pk__in=lead_ids).filter(q).values_list("pk", flat=True))
    return conditions, waits


def _cap_counts(items: list[_Due], now: datetime) -> dict[tuple[int, str], list[datetime]]:
    """Touch times of the batch's leads near their due times, per (lead, channel), in one query."""
    if not items:
        return {}
    lead_ids = sorted({i.enrollment.lead_id for i in items})
    earliest = min(i.enrollment.next_due_at for i in items) - timedelta(days=2)
    latest = max(max(i.enrollment.next_due_at for i in items), now) + timedelta(days=2)
    rows = Touch.objects.filter(
        lead_id__in=lead_ids, due_at__gte=earliest, due_at__lt=latest, state__in=CAP_STATES
    ).values_list("lead_id", "channel", "due_at", "sent_at")
    result: dict[tuple[int, str], list[datetime]] = defaultdict(list)
    for lead_id, channel, due_at, sent_at in rows:
        result[(lead_id, channel)].append(sent_at or due_at)
    return result


def steps_advance(*, now: datetime, limit: int = ADVANCE_BATCH) -> dict[str, int]:
    """Turn every step that fell due into a touch (or a skip, or a later time), batch by batch."""
    totals: dict[str, int] = defaultdict(int)
    while True:
        counts = _advance_batch(now=now, limit=limit)
        for key, value in counts.items():
            totals[key] += value
        if counts.get("claimed", 0) < limit:
            break
    return dict(totals)


def _advance_batch(*, now: datetime, limit: int) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    with transaction.atomic():
        enrollments = list(
            Enrollment.objects.select_for_update(skip_locked=True)
            .filter(state=EnrollmentState.ACTIVE, next_due_at__lte=now, sequence__status="active")
            .order_by("next_due_at", "pk")[:limit]
        )
        counts["claimed"] = len(enrollments)
        if not enrollments:
            return counts
        plans = sequence_plans(e.sequence_id for e in enrollments)
        items: list[_Due] = []
        finished: list[Enrollment] = []
        for e in enrollments:
            step = plans[e.sequence_id].step_at(e.position)
            if step is None:
                e.next_due_at = None
                finished.append(e)
            else:
                items.append(_Due(e, step, plans[e.sequence_id]))
        leads = Lead.objects.in_bulk([i.enrollment.lead_id for i in items])
        opted_out = _opted_out(list(leads))
        conditions, waits = _branch_sets(items, now)
        caps = _cap_counts(items, now)
        touches: list[Touch] = []
        for item in items:
            e, step, plan = item.enrollment, item.step, item.plan
            lead = leads[e.lead_id]
            due = e.next_due_at
            assert due is not None

            def skip(reason: str, *, e: Enrollment = e, step: Step = step, due: datetime = due) -> None:
                touches.append(_touch(e, step, due, state=TouchState.SKIPPED, skip_reason=reason))
                counts[f"skipped_{reason.split(':')[0]}"] += 1

            # Branch: a false condition jumps to its else step, or skips this one.
            if step.condition and e.lead_id not in conditions[step.pk]:
                if step.else_position is not None:
                    _move_to(e, plan, step.else_position, now)
                    counts["branched"] += 1
                    continue
                skip("condition_false")
                _move_after(e, plan, step, now)
                continue
            if step.wait_for:
                happened = e.lead_id in waits[step.pk]
                target = step.wait_for.get("then" if happened else "else")
                if target is not None:
                    _move_to(e, plan, int(target), now)
                    counts["branched"] += 1
                    continue
                if not happened:
                    skip("wait_for_not_met")
                    _move_after(e, plan, step, now)
                    continue
            if now - due > timedelta(minutes=plan.sequence.max_lateness_minutes):
                skip("stale")
                _move_after(e, plan, step, now)
                continue
            if due < now and (later := quiet_hours_shift(now, zone=plan.zone, quiet=plan.quiet)) > now:
                # Late (the engine was down, or a cap moved it) and now is inside quiet hours: wait.
                e.next_due_at = later
                counts["quiet_hours"] += 1
                continue
            channel = step.channel
            if step.mode == StepMode.AUTO and channel in opted_out.get(e.lead_id, set()):
                skip(f"opted_out:{channel}")
                _move_after(e, plan, step, now)
                continue
            if step.mode == StepMode.AUTO and adapter_for(channel) is None:
                skip("not_configured")
                _move_after(e, plan, step, now)
                continue
            # Frequency cap across sequences: the lead's touches on this channel this local day.
            start, end = local_day_bounds(due, plan.zone)
            taken = [t for t in caps[(e.lead_id, channel)] if start <= t < end]
            if len(taken) >= _cap_for(plan, channel):
                e.next_due_at = cap_shift(due, zone=plan.zone, quiet=plan.quiet)
                counts["capped"] += 1
                continue
            caps[(e.lead_id, channel)].append(due)
            touch = _touch(e, step, due, state=TouchState.SCHEDULED)
            if step.mode == StepMode.TASK:
                touch.state = TouchState.TASK_OPEN
                touch.assignee_id = lead.owner_id
                touch.task_deadline = due + timedelta(hours=settings.NURTURE_TASK_DEADLINE_HOURS)
                counts["tasks"] += 1
            else:
                counts["scheduled"] += 1
            if step.recommended:
                from content.selectors import content_recommend

                pick = content_recommend(lead=lead, now=now)  # per lead: what it has seen differs
                touch.content_id = pick.asset.pk if pick.asset else None
            touches.append(touch)
            _move_after(e, plan, step, now)
        # ignore_conflicts: a key made by an earlier run that died before updating the enrollment.
        Touch.objects.bulk_create(touches, ignore_conflicts=True)
        _enrollments_move([i.enrollment for i in items] + finished)
    return counts


def _enrollments_move(enrollments: list[Enrollment]) -> None:
    """Write each enrollment's new position and due time: one UPDATE … FROM unnest on PostgreSQL
    (Django's bulk_update builds a CASE per row and cost more than the rest of the batch)."""
    if connection.vendor != "postgresql":
        Enrollment.objects.bulk_update(enrollments, ["position", "next_due_at"])
        return
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {Enrollment._meta.db_table} e SET position = v.position, next_due_at = v.due "
            "FROM unnest(%s::bigint[], %s::integer[], %s::timestamptz[]) AS v(id, position, due) "
            "WHERE e.id = v.id",
            [
                [e.pk for e in enrollments],
                [e.position for e in enrollments],
                [e.next_due_at for e in enrollments],
            ],
        )


def _touch(e: Enrollment, step: Step, due: datetime, *, state: str, skip_reason: str = "") -> Touch:
    return Touch(
        enrollment_id=e.pk,
        step_id=step.pk,
        sequence_id=e.sequence_id,
        lead_id=e.lead_id,
        channel=step.channel,
        mode=step.mode,
        due_at=due,
        state=state,
        skip_reason=skip_reason,
        idempotency_key=touch_key(e.pk, step.position),
        content_id=step.content_id,
    )


def _move_after(e: Enrollment, plan: SequencePlan, step: Step, now: datetime) -> None:
    following = plan.after(step)
    if following is None:
        e.position = step.position + 1
        e.next_due_at = None
        return
    e.position = following.position
    e.next_due_at = plan.due(following, e.anchor_at)


def _move_to(e: Enrollment, plan: SequencePlan, position: int, now: datetime) -> None:
    target = plan.step_at(position)
    if target is None:
        e.position = position
        e.next_due_at = None
        return
    e.position = target.position
    e.next_due_at = max(plan.due(target, e.anchor_at), now)


# --- Due touches: stale ones, lost tasks, dead workers.


def touches_skip_stale(*, now: datetime) -> int:
    """Scheduled touches more than their sequence's max lateness past due are skipped: stale."""
    # As an IntegerField: SQLite refuses a PositiveIntegerField times a duration.
    minutes = ExpressionWrapper(F("sequence__max_lateness_minutes"), output_field=IntegerField())
    lateness = ExpressionWrapper(minutes * timedelta(minutes=1), output_field=DurationField())
    stale = (
        Touch.objects.filter(state=TouchState.SCHEDULED, attempts=0)
        .alias(late=lateness)
        .filter(due_at__lt=now - F("late"))
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
            .select_related("lead")[:ADVANCE_BATCH]
        )
        for touch in stuck:
            adapter = adapter_for(touch.channel)
            result = None
            if adapter is not None:
                try:
                    result = adapter.reconcile(
                        _message(touch, touch.lead, touch.rendered, ""), touch.provider_ref
                    )
                except (RetryableError, PermanentError):
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
    requeue = now - timedelta(minutes=settings.NURTURE_QUEUE_LEASE_MINUTES)
    due = Touch.objects.filter(state=TouchState.SCHEDULED, due_at__lte=now).filter(
        Q(queued_at__isnull=True) | Q(queued_at__lt=requeue)
    )
    ids = list(due.order_by("due_at", "pk").values_list("pk", flat=True)[: limit or 1_000_000])
    if ids:
        for start in range(0, len(ids), 10_000):
            Touch.objects.filter(pk__in=ids[start : start + 10_000]).update(queued_at=now)
    return ids


def batches(ids: list[int], size: int) -> Iterable[list[int]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


# --- Sending.


def _message(touch: Touch, lead: Lead, text: str, link: str) -> OutgoingMessage:
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
        owner_id=lead.owner_id,
        step_id=touch.step_id,
        sequence_id=touch.sequence_id,
        due_at=touch.due_at,
    )


def _record(
    touch: Touch, status: str, provider_ref: str, now: datetime, *, rendered: str | None = None
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
        fields.update(state=state, sent_at=now, error="")
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
    """Send a batch of touches: claim, render, call the adapter with the idempotency key, record."""
    now = now or timezone_now()
    counts: dict[str, int] = defaultdict(int)
    claimed = _claim(touch_ids, now)
    if not claimed:
        return dict(counts)
    leads = Lead.objects.in_bulk({t.lead_id for t in claimed})
    steps = Step.objects.in_bulk({t.step_id for t in claimed if t.step_id})
    links = _links(claimed, now)
    assets = _assets({t.content_id for t in claimed if t.content_id})
    results = _Results(now)
    with _results_without_flush_wait():
        try:
            _send_all(claimed, leads, steps, links, assets, now, counts, results)
        finally:
            results.flush()
    return dict(counts)


def _send_all(
    claimed: list[Touch],
    leads: dict[int, Lead],
    steps: dict[int, Step],
    links: dict[int, str],
    assets: dict[int, Any],
    now: datetime,
    counts: dict[str, int],
    results: _Results,
) -> None:
    for touch in claimed:
        lead = leads[touch.lead_id]
        step = steps.get(touch.step_id)
        link = links.get(touch.pk, "")
        try:
            text = _render(step.text if step else "", lead, link, assets.get(touch.content_id))
        except Exception as exc:  # a template that broke after it was saved fails this touch alone
            _fail(touch, f"render: {exc}", now)
            counts["failed"] += 1
            continue
        else_channel = step.else_channel if step else ""
        counts[_send_one(touch, lead, text, link, now, else_channel=else_channel, results=results)] += 1


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


def _send_one(
    touch: Touch,
    lead: Lead,
    text: str,
    link: str,
    now: datetime,
    *,
    else_channel: str = "",
    results: _Results | None = None,
) -> str:
    adapter = adapter_for(touch.channel)
    if adapter is None:
        Touch.objects.filter(pk=touch.pk, state=TouchState.SENDING).update(
            state=TouchState.SKIPPED, skip_reason="not_configured"
        )
        return "skipped"
    message = _message(touch, lead, text, link)
    verdict = adapter.policy_check(message, now)
    if not verdict.allowed:
        fallback = adapter_for(else_channel) if else_channel and else_channel != touch.channel else None
        if fallback is not None and fallback.policy_check(message, now).allowed:
            # The platform refuses this channel now (e.g. outside WeChat's 48-hour window): the step's
            # fallback channel carries it, under the same idempotency key.
            Touch.objects.filter(pk=touch.pk, state=TouchState.SENDING).update(
                channel=else_channel, error=f"fallback from {touch.channel}: {verdict.reason}"[:2000]
            )
            touch.channel = else_channel
            return _send_one(touch, lead, text, link, now, results=results)
        Touch.objects.filter(pk=touch.pk, state=TouchState.SENDING).update(
            state=TouchState.SKIPPED, skip_reason=f"policy:{verdict.reason}"[:64], rendered=text
        )
        return "skipped"
    try:
        result = adapter.send(message)
    except RetryableError as exc:
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
    except PermanentError as exc:
        _fail(touch, f"{exc.code}: {exc}" if exc.code else str(exc), now)
        return "failed"
    if results is not None and adapter.honours_idempotency_key and result.status in _SENT_STATES:
        results.add(touch.pk, _SENT_STATES[result.status], result.provider_ref, text)
    else:
        _record(touch, result.status, result.provider_ref, now, rendered=text)
    return result.status


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


def _fail(touch: Touch, error: str, now: datetime) -> None:
    with transaction.atomic():
        changed = Touch.objects.filter(pk=touch.pk, state=TouchState.SENDING).update(
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


def _render(text: str, lead: Lead, link: str, asset: Any) -> str:
    from content.templating import template_context, template_render

    if not text:
        title = getattr(asset, "title", "")
        return " ".join(part for part in (title, link) if part)
    return template_render(text, template_context(lead=lead, link=link, asset=asset))
