"""Sequences: saving one (validated), enrolling leads (by trigger, set-based, or by hand), exits,
completion and staff tasks. The due steps and their dispatch are in `sequences/dispatch.py`.

Editing a live sequence: an enrollment keeps only its anchor and the position of its next step, and
a step's touch is made when the step falls due, so an edit applies from each enrollment's next due
step on; what was already sent stays as it was sent (the touch keeps its rendered content).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.db.models import Exists, F, Min, OuterRef, Q, QuerySet
from django.utils.timezone import now as timezone_now

from leads.models import Event, Lead, PoolMembership, StageChange, Temperature
from leads.rules import rule_compile
from leads.services import lead_merge_handler
from nurture.outbox import outbox_put
from sequences.models import (
    Enrollment,
    EnrollmentState,
    Sequence,
    SequenceStatus,
    Step,
    Touch,
    TouchState,
    TriggerType,
)
from sequences.scheduling import QuietHours, parse_hhmm, step_due
from sequences.validation import sequence_check

logger = logging.getLogger(__name__)

ENROLL_BATCH = 5000


SEQUENCE_FIELDS = (
    "name",
    "goal",
    "status",
    "trigger",
    "entry_rule",
    "exit_rule",
    "exit_stages",
    "reentry",
    "timezone",
    "quiet_hours",
    "max_lateness_minutes",
    "caps",
    "on_complete",
)
STEP_FIELDS = (
    "day",
    "send_time",
    "channel",
    "mode",
    "text",
    "content_id",
    "recommended",
    "condition",
    "else_position",
    "wait_for",
    "else_channel",
)


def _step_plain(step: dict[str, Any]) -> dict[str, Any]:
    plain = dict(step)
    plain.setdefault("send_time", "10:00")  # omitted: 10:00; null: at once on day 0 (CONTRACT §5)
    send_time = plain.get("send_time")
    if isinstance(send_time, str) and send_time:
        plain["send_time"] = parse_hhmm(send_time)
    return plain


def sequence_save(
    *, data: dict[str, Any], steps: Seq[dict[str, Any]] | None = None, sequence: Sequence | None = None
) -> Sequence:
    """Create or update a sequence and (when given) replace its steps, validated first.

    Steps are matched by position: an enrollment waiting for position 3 gets the new step 3."""
    merged = {f: getattr(sequence, f) for f in SEQUENCE_FIELDS} if sequence else {}
    merged.update({k: v for k, v in data.items() if k in SEQUENCE_FIELDS})
    step_rows = [_step_plain(s) for s in steps] if steps is not None else None
    if step_rows is not None:
        for i, row in enumerate(step_rows):
            row.setdefault("position", i)
    existing = (
        [{f: getattr(s, f) for f in (*STEP_FIELDS, "position")} for s in sequence.steps.all()]
        if sequence and step_rows is None
        else None
    )
    sequence_check(data=merged, steps=step_rows if step_rows is not None else existing or [])
    with transaction.atomic():
        if sequence is None:
            sequence = Sequence()
        if sequence.pk is not None and merged.get("trigger") != Sequence.objects.get(pk=sequence.pk).trigger:
            # Another trigger reads another table: its cursor starts again (from now, no backfill).
            sequence.trigger_cursor = None
            sequence.trigger_checked_at = None
        for field, value in merged.items():
            setattr(sequence, field, value)
        if not sequence.trigger:
            sequence.trigger = {"type": "manual"}
        sequence.save()
        if step_rows is not None:
            _steps_replace(sequence, step_rows)
    return sequence


def _steps_replace(sequence: Sequence, rows: Seq[dict[str, Any]]) -> None:
    """Steps are kept by position: an edited step is updated in place (its past touches still name
    it), a new position is created, a position no longer there is deleted."""
    existing = {step.position: step for step in sequence.steps.all()}
    wanted = {int(row["position"]): row for row in rows}
    blank = Step()
    defaults = {field: getattr(blank, field) for field in STEP_FIELDS}  # a field left out is reset
    Step.objects.filter(sequence=sequence).exclude(position__in=list(wanted)).delete()
    for position, row in wanted.items():
        values = {**defaults, **{k: v for k, v in row.items() if k in STEP_FIELDS}}
        step = existing.get(position)
        if step is None:
            Step.objects.create(sequence=sequence, position=position, **values)
            continue
        changed = [field for field, value in values.items() if getattr(step, field) != value]
        for field in changed:
            setattr(step, field, values[field])
        if changed:
            step.save(update_fields=changed)


def sequence_status_set(*, sequence: Sequence, status: str, now: datetime | None = None) -> int:
    """Activate, pause or archive. Pausing pauses its enrollments (their next steps wait); resuming
    moves each paused enrollment's due time on by the pause. Returns the enrollments affected."""
    now = now or timezone_now()
    with transaction.atomic():
        sequence = Sequence.objects.select_for_update().get(pk=sequence.pk)
        previous = sequence.status
        sequence.status = status
        sequence.save(update_fields=["status", "updated_at"])
        if status == SequenceStatus.PAUSED and previous == SequenceStatus.ACTIVE:
            return enrollments_pause(
                enrollments=sequence.enrollments.filter(state=EnrollmentState.ACTIVE), now=now
            )
        if status == SequenceStatus.ACTIVE and previous != SequenceStatus.ACTIVE:
            return enrollments_resume(
                enrollments=sequence.enrollments.filter(state=EnrollmentState.PAUSED), now=now
            )
        if status == SequenceStatus.ARCHIVED:
            return enrollments_end(
                enrollments=sequence.enrollments.filter(
                    state__in=[EnrollmentState.ACTIVE, EnrollmentState.PAUSED]
                ),
                state=EnrollmentState.EXITED,
                reason="archived",
                now=now,
            )
    return 0


def enrollments_pause(*, enrollments: QuerySet[Enrollment], now: datetime) -> int:
    return enrollments.filter(state=EnrollmentState.ACTIVE).update(
        state=EnrollmentState.PAUSED, paused_at=now
    )


def enrollments_resume(*, enrollments: QuerySet[Enrollment], now: datetime) -> int:
    """Paused enrollments go on where they stopped: their timeline moves on by the time paused."""
    paused = enrollments.filter(state=EnrollmentState.PAUSED, paused_at__isnull=False)
    return paused.update(
        state=EnrollmentState.ACTIVE,
        anchor_at=F("anchor_at") + (now - F("paused_at")),
        next_due_at=F("next_due_at") + (now - F("paused_at")),
        paused_at=None,
    )


# --- Enrolling.


@dataclass(frozen=True)
class SequencePlan:
    """A sequence with its steps in order, its zone and quiet hours: what scheduling reads."""

    sequence: Sequence
    steps: list[Step]
    zone: ZoneInfo
    quiet: QuietHours | None

    @classmethod
    def of(cls, sequence: Sequence, steps: Iterable[Step] | None = None) -> SequencePlan:
        ordered = sorted(steps if steps is not None else sequence.steps.all(), key=lambda s: s.position)
        return cls(
            sequence=sequence,
            steps=ordered,
            zone=ZoneInfo(sequence.timezone or settings.TIME_ZONE),
            quiet=QuietHours.parse(sequence.quiet_hours),
        )

    def step_at(self, position: int) -> Step | None:
        for step in self.steps:
            if step.position >= position:
                return step
        return None

    def after(self, step: Step) -> Step | None:
        return self.step_at(step.position + 1)

    def due(self, step: Step, anchor_at: datetime) -> datetime:
        return step_due(
            anchor_at=anchor_at, day=step.day, send_time=step.send_time, zone=self.zone, quiet=self.quiet
        )


def sequence_plans(sequence_ids: Iterable[int]) -> dict[int, SequencePlan]:
    """Plans of several sequences in two queries."""
    sequences = Sequence.objects.in_bulk(list(set(sequence_ids)))
    steps: dict[int, list[Step]] = {pk: [] for pk in sequences}
    for step in Step.objects.filter(sequence_id__in=list(sequences)):
        steps[step.sequence_id].append(step)
    return {pk: SequencePlan.of(seq, steps[pk]) for pk, seq in sequences.items()}


def _contactable(sequence: Sequence, leads: QuerySet[Lead], now: datetime) -> QuerySet[Lead]:
    """Leads that may enter: not do-not-contact, not unsubscribed, no exit stage, no exit rule, the
    entry rule met, and the re-entry policy allows it."""
    leads = leads.exclude(do_not_contact=True).exclude(stage__in=sequence.exit_stages or [])
    leads = leads.exclude(Exists(_unsubscribed_all()))
    if sequence.exit_rule:
        leads = leads.exclude(rule_compile(sequence.exit_rule, now=now))
    if sequence.entry_rule:
        leads = leads.filter(rule_compile(sequence.entry_rule, now=now))
    mine = Enrollment.objects.filter(lead=OuterRef("pk"), sequence=sequence)
    reentry = sequence.reentry
    if reentry == "never":
        leads = leads.exclude(Exists(mine))
    elif isinstance(reentry, dict):
        leads = leads.exclude(
            Exists(
                mine.filter(
                    Q(entered_at__gt=now - timedelta(days=int(reentry["after_days"])))
                    | Q(state__in=["active", "paused"])
                )
            )
        )
    else:
        leads = leads.exclude(Exists(mine.filter(state__in=["active", "paused"])))
    return leads


def _unsubscribed_all(lead_ref: str = "pk") -> QuerySet[Event]:
    """An `unsubscribed` event without a channel: the lead opted out of everything."""
    return Event.objects.filter(lead=OuterRef(lead_ref), type="unsubscribed").filter(
        Q(properties__channel__isnull=True) | Q(properties__channel="")
    )


def _enroll_rows(
    *, plan: SequencePlan, rows: Iterable[tuple[int, datetime]], now: datetime, trigger: str
) -> int:
    """Insert enrollments for (lead id, anchor) rows; a lead already active in the sequence is left
    alone (the partial unique index), so two ticks enrolling the same lead make one enrollment."""
    first = plan.step_at(0)
    created = 0
    batch: list[Enrollment] = []

    def flush() -> int:
        if not batch:
            return 0
        before = len(batch)
        Enrollment.objects.bulk_create(batch, ignore_conflicts=True, batch_size=ENROLL_BATCH)
        batch.clear()
        return before

    for lead_id, anchor_at in rows:
        batch.append(
            Enrollment(
                lead_id=lead_id,
                sequence_id=plan.sequence.pk,
                anchor_at=anchor_at,
                state=EnrollmentState.ACTIVE,
                position=first.position if first else 0,
                next_due_at=plan.due(first, anchor_at) if first else None,
                trigger=trigger,
                entered_at=now,
            )
        )
        if len(batch) >= ENROLL_BATCH:
            created += flush()
    created += flush()
    return created


def sequence_enroll(
    *,
    sequence: Sequence,
    lead_ids: Iterable[int],
    anchor_at: datetime | None = None,
    now: datetime | None = None,
    trigger: str = TriggerType.MANUAL,
) -> dict[str, list[int]]:
    """Enroll leads by hand (API, admin action, SDR "return to nurture"), day 0 = `anchor_at` (default
    now). Returns the ids enrolled and those refused (exit condition, re-entry policy, opted out)."""
    now = now or timezone_now()
    anchor_at = anchor_at or now
    ids = sorted({int(i) for i in lead_ids})
    plan = SequencePlan.of(sequence)
    with transaction.atomic():
        eligible = list(
            _contactable(sequence, Lead.objects.filter(pk__in=ids), now)
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        _enroll_rows(plan=plan, rows=((pk, anchor_at) for pk in eligible), now=now, trigger=trigger)
        enrolled = set(
            Enrollment.objects.filter(
                sequence=sequence, lead_id__in=eligible, entered_at=now, state=EnrollmentState.ACTIVE
            ).values_list("lead_id", flat=True)
        )
    return {"enrolled": sorted(enrolled), "refused": [i for i in ids if i not in enrolled]}


# --- Exits (each tick, set-based per sequence).


def enrollments_end(*, enrollments: QuerySet[Enrollment], state: str, reason: str, now: datetime) -> int:
    """End enrollments and skip their pending touches with the reason."""
    ids = list(enrollments.values_list("pk", flat=True))
    if not ids:
        return 0
    ended = Enrollment.objects.filter(pk__in=ids, state__in=["active", "paused"]).update(
        state=state, ended_at=now, end_reason=reason, next_due_at=None
    )
    Touch.objects.filter(enrollment_id__in=ids, state=TouchState.SCHEDULED).update(
        state=TouchState.SKIPPED, skip_reason=f"exited: {reason}"[:64]
    )
    return ended


def sequences_exit(*, now: datetime) -> dict[str, int]:
    """Every tick: enrollments whose lead reached an exit stage, opted out, meets the exit rule, no
    longer meets the entry rule, or left the pool that enrolled it, leave their sequence."""
    counts: dict[str, int] = {}
    live = Enrollment.objects.filter(state__in=["active", "paused"])
    for sequence in Sequence.objects.exclude(status=SequenceStatus.ARCHIVED):
        mine = live.filter(sequence=sequence)
        checks: list[tuple[str, Q]] = [
            ("opted_out", Q(Exists(_unsubscribed_all("lead_id")))),
            ("do_not_contact", Q(lead__do_not_contact=True)),
        ]
        if sequence.exit_stages:
            checks.append(("exit_stage", Q(lead__stage__in=sequence.exit_stages)))
        if sequence.exit_rule:
            checks.append(
                ("exit_rule", Q(lead__in=Lead.objects.filter(rule_compile(sequence.exit_rule, now=now))))
            )
        if sequence.entry_rule:
            checks.append(
                ("left_entry", ~Q(lead__in=Lead.objects.filter(rule_compile(sequence.entry_rule, now=now))))
            )
        if sequence.trigger_type == TriggerType.POOL_ENTERED and (sequence.trigger or {}).get(
            "exit_on_leave", True
        ):
            in_pool = PoolMembership.objects.filter(
                lead=OuterRef("lead_id"), pool__slug=sequence.trigger.get("pool"), left_at__isnull=True
            )
            checks.append(("left_pool", ~Q(Exists(in_pool))))
        for reason, condition in checks:
            n = enrollments_end(
                enrollments=mine.filter(condition), state=EnrollmentState.EXITED, reason=reason, now=now
            )
            if n:
                counts[reason] = counts.get(reason, 0) + n
    return counts


# --- Completion.


def sequences_complete(*, now: datetime) -> dict[str, int]:
    """Enrollments past their last step with nothing pending complete, and each sequence's
    `on_complete` action for the lead's temperature runs: hot → an SDR (round-robin) and `lead.hot`,
    warm → the next sequence, cold → a tag (which moves it down a value pool)."""
    pending = Touch.objects.filter(enrollment=OuterRef("pk"), state__in=["scheduled", "sending"])
    done = Enrollment.objects.filter(state=EnrollmentState.ACTIVE, next_due_at__isnull=True).exclude(
        Exists(pending)
    )
    counts = {"completed": 0, "assigned": 0, "next_sequence": 0, "tagged": 0}
    with transaction.atomic():
        rows = list(
            done.select_for_update(skip_locked=True).values_list(
                "pk", "sequence_id", "lead_id", "lead__temperature"
            )[:ENROLL_BATCH]
        )
        if not rows:
            return counts
        Enrollment.objects.filter(pk__in=[r[0] for r in rows]).update(
            state=EnrollmentState.COMPLETED, ended_at=now, end_reason="completed"
        )
        counts["completed"] = len(rows)
        sequences = Sequence.objects.in_bulk({r[1] for r in rows})
        by_action: dict[tuple[int, str], list[int]] = {}
        for _, sequence_id, lead_id, temperature in rows:
            by_action.setdefault((sequence_id, temperature), []).append(lead_id)
        for (sequence_id, temperature), lead_ids in by_action.items():
            action = (sequences[sequence_id].on_complete or {}).get(temperature) or {}
            kind = action.get("action")
            if kind == "assign_sdr":
                counts["assigned"] += _assign_hot(lead_ids, now)
            elif kind == "enroll" and action.get("sequence"):
                target = Sequence.objects.filter(pk=action["sequence"]).first()
                if target is not None:
                    counts["next_sequence"] += len(
                        sequence_enroll(
                            sequence=target, lead_ids=lead_ids, now=now, trigger="previous_sequence"
                        )["enrolled"]
                    )
            elif kind == "tag" and action.get("tag"):
                from leads.pools import leads_mark_dirty
                from leads.tagging import lead_tags_stamp, tags_get_or_create

                tag = tags_get_or_create(names=[action["tag"]])
                pairs = [(lead_id, t.pk) for t in tag.values() for lead_id in lead_ids]
                counts["tagged"] += lead_tags_stamp(pairs=pairs, source="sequence", now=now)
                leads_mark_dirty(lead_ids=lead_ids, now=now)
    return counts


def _assign_hot(lead_ids: list[int], now: datetime) -> int:
    """Hot leads at the end of a sequence go to the SDRs round-robin under the workspace's SLA."""
    from workspace.services import leads_assign

    assigned = leads_assign(lead_ids=lead_ids, via="sequence", now=now)
    outbox_put(
        type="lead.hot",
        lead_ids=lead_ids,
        occurred_at=now,
        data_by_lead={lead_id: {"owner": sdr_id, "via": "sequence"} for lead_id, sdr_id in assigned.items()},
    )
    return len(assigned)


# --- Staff tasks.


def task_done(*, touch: Touch, by: Any = None, now: datetime | None = None) -> bool:
    """Close an open staff task (the message was sent by hand, the call made)."""
    now = now or timezone_now()
    with transaction.atomic():
        done = bool(
            Touch.objects.filter(pk=touch.pk, state=TouchState.TASK_OPEN).update(
                state=TouchState.TASK_DONE, done_at=now, sent_at=now
            )
        )
        if done and touch.channel == "call":
            from channels.calls import call_tasks_close_for_touch

            call_tasks_close_for_touch(touch_id=touch.pk, now=now)
    return done


def tasks_reassign(*, lead_owners: dict[int, int]) -> int:
    """Open staff tasks follow their lead to its new owner (lead id → user id)."""
    moved = 0
    by_owner: dict[int, list[int]] = {}
    for lead_id, owner_id in lead_owners.items():
        by_owner.setdefault(owner_id, []).append(lead_id)
    for owner_id, lead_ids in by_owner.items():
        moved += Touch.objects.filter(lead_id__in=lead_ids, state=TouchState.TASK_OPEN).update(
            assignee_id=owner_id
        )
    return moved


def task_snooze(*, touch: Touch, until: datetime) -> bool:
    """Move an open task's deadline (and its escalation) to `until`."""
    return bool(
        Touch.objects.filter(pk=touch.pk, state=TouchState.TASK_OPEN).update(
            task_deadline=until, escalated_at=None
        )
    )


def tasks_escalate(*, now: datetime) -> dict[str, int]:
    """Open tasks past their deadline go to the managers (outbox `task.escalated`), once each."""
    with transaction.atomic():
        late = list(
            Touch.objects.select_for_update(skip_locked=True)
            .filter(state=TouchState.TASK_OPEN, task_deadline__lt=now, escalated_at__isnull=True)
            .values_list("pk", "lead_id", "assignee_id", "sequence_id")[:ENROLL_BATCH]
        )
        if not late:
            return {"escalated": 0}
        Touch.objects.filter(pk__in=[r[0] for r in late]).update(escalated_at=now)
        managers = list(
            get_user_model()
            .objects.filter(is_active=True, groups__name="sdr_manager")
            .values_list("pk", flat=True)
        )
        outbox_put(
            type="task.escalated",
            lead_ids=[r[1] for r in late],
            occurred_at=now,
            data_by_lead={
                r[1]: {"touch": r[0], "assignee": r[2], "sequence": r[3], "managers": managers} for r in late
            },
        )
    return {"escalated": len(late)}


def sequence_figures(*, sequence: Sequence) -> dict[str, Any]:
    """Live figures of a sequence: enrollments by state and exit reason, touches by state and channel,
    replies (a `message_in` within 3 days of a sent touch) and conversions to MQL/SQL after entering."""
    from django.db.models import Count

    enrollments = sequence.enrollments.all()
    by_state = dict(enrollments.values_list("state").annotate(n=Count("pk")))
    exits = dict(enrollments.filter(state="exited").values_list("end_reason").annotate(n=Count("pk")))
    touches = list(
        sequence.touches.values("channel", "state").annotate(n=Count("pk")).order_by("channel", "state")
    )
    sent = sequence.touches.filter(state__in=["sent", "delivered", "task_done"])
    replies = sent.filter(
        Exists(
            Event.objects.filter(
                lead=OuterRef("lead_id"),
                type="message_in",
                occurred_at__gte=OuterRef("sent_at"),
                occurred_at__lt=OuterRef("sent_at") + timedelta(days=3),
            )
        )
    ).count()
    conversions = {
        stage: enrollments.filter(
            Exists(
                StageChange.objects.filter(
                    lead=OuterRef("lead_id"), to_stage=stage, at__gte=OuterRef("entered_at")
                )
            )
        ).count()
        for stage in ("mql", "sql")
    }
    return {
        "enrolled": sum(by_state.values()),
        "by_state": by_state,
        "exited_by_reason": exits,
        "touches": touches,
        "replies": replies,
        "conversions": conversions,
        "first_entered": enrollments.aggregate(m=Min("entered_at"))["m"],
    }


def sequences_lock() -> bool:
    """The sequence steps of one tick at a time (PostgreSQL advisory lock; SQLite runs one tick)."""
    if connection.vendor != "postgresql":
        return True
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [SEQUENCES_LOCK])
        return bool(cursor.fetchone()[0])


def sequences_unlock() -> None:
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_unlock(%s)", [SEQUENCES_LOCK])


SEQUENCES_LOCK = 0x5E9_0001
_ = Temperature  # the on_complete keys are temperatures


# --- Merging two leads.


@lead_merge_handler("sequences.Enrollment")
def _merge_enrollments(survivor: Lead, merged: Lead, now: datetime) -> None:
    """Enrollments move to the survivor; where both are active in one sequence, the merged lead's
    ends (`merged`) and its pending touches are skipped, so the person gets one journey, not two."""
    both = Enrollment.objects.filter(
        lead=merged,
        state__in=["active", "paused"],
        sequence_id__in=Enrollment.objects.filter(lead=survivor, state__in=["active", "paused"]).values(
            "sequence_id"
        ),
    )
    enrollments_end(enrollments=both, state=EnrollmentState.EXITED, reason="merged", now=now)
    Enrollment.objects.filter(lead=merged).update(lead=survivor)
