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
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction

from channels.registry import adapter_for
from leads.models import Event, Lead
from leads.rules import rule_compile
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


# Events that opt a lead back in to one channel: following the official account again, or a
# `subscribed` event naming the channel (a form's consent box, the CRM).
OPT_IN_EVENTS = {"wechat_subscribed": "wechat_oa"}


def _opted_out(lead_ids: list[int]) -> dict[int, set[str]]:
    """Channels each lead unsubscribed from (`unsubscribed` events with a `channel` property) and did
    not opt in to again later."""
    latest: dict[tuple[int, str], tuple[datetime, bool]] = {}
    rows = Event.objects.filter(
        lead_id__in=lead_ids, type__in=["unsubscribed", "subscribed", *OPT_IN_EVENTS]
    ).values_list("lead_id", "type", "properties", "occurred_at")
    for lead_id, kind, props, at in rows:
        channel = OPT_IN_EVENTS.get(kind) or (props or {}).get("channel")
        if not channel:
            continue
        key = (lead_id, str(channel))
        if key not in latest or at >= latest[key][0]:
            latest[key] = (at, kind == "unsubscribed")
    result: dict[int, set[str]] = defaultdict(set)
    for (lead_id, channel), (_, out) in latest.items():
        if out:
            result[lead_id].add(channel)
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
        _call_tasks_open([t for t in touches if t.state == TouchState.TASK_OPEN and t.channel == "call"])
        _enrollments_move([i.enrollment for i in items] + finished)
    return counts


def _call_tasks_open(touches: list[Touch]) -> None:
    """A staff task on the `call` channel is a call task too: the SDR's list of calls shows it, and
    logging the call closes the touch's task (one query and one insert for the batch)."""
    if not touches:
        return
    from channels.calls import call_tasks_for_touches

    texts = {t.idempotency_key: t.step_id for t in touches}
    steps = dict(Step.objects.filter(pk__in=set(texts.values())).values_list("pk", "text"))
    rows = Touch.objects.filter(idempotency_key__in=list(texts), state=TouchState.TASK_OPEN).values(
        "pk", "lead_id", "assignee_id", "due_at", "step_id"
    )
    call_tasks_for_touches(
        items=[
            {
                "touch_id": row["pk"],
                "lead_id": row["lead_id"],
                "assignee_id": row["assignee_id"],
                "script": steps.get(row["step_id"], ""),
                "due_at": row["due_at"],
            }
            for row in rows
        ]
    )


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


# The send half (due touches, claim, policy_check_batch / send_batch / send, results, reconcile) lives
# in sequences/sending.py; these names are kept here for the callers that import them from dispatch.
from sequences.sending import (  # noqa: E402, F401
    RECORD_EVERY,
    _render,
    batches,
    touches_dispatch,
    touches_due_ids,
    touches_reconcile,
    touches_skip_stale,
)
