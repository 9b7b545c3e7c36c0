"""What a sequence would send to a sample of current leads over the next days, on which local date and
why (`manage.py simulate`, the admin preview). It writes nothing: no touch, no enrollment, no tracked
link (a link is shown as a placeholder).

It walks each lead's timeline the way `dispatch.steps_advance` would at each due time, asking the
engine's own pieces: `scheduling` for due times, quiet hours, caps and local days, the rule compiler
for conditions and `wait_for`, `_contactable` for who may enter, and dispatch's opt-out, cap and
rendering helpers. What only the future knows (a condition, a `wait_for`) is evaluated as of now and
the reason says so; touches of other sequences count against the cap only once they exist.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Exists, OuterRef, Q, QuerySet
from django.urls import reverse
from django.utils.translation import gettext

from channels.registry import adapter_for
from leads.models import Event, Lead
from leads.rules import rule_compile
from sequences.dispatch import CAP_STATES, _cap_for, _opted_out, _render
from sequences.models import (
    Enrollment,
    EnrollmentState,
    Sequence,
    SequenceStatus,
    Step,
    StepMode,
    Touch,
    TriggerType,
)
from sequences.scheduling import cap_shift, local_day_bounds, step_due, step_nominal_due
from sequences.services import SequencePlan, _contactable, _unsubscribed_all
from sequences.triggers import _source
from sequences.validation import _wait_rule

# Outcomes of a step in a simulation.
SEND, TASK, SKIP, BRANCH = "send", "task", "skip", "branch"
# At most this many decisions per lead (a cap that moves a touch every day could go on for long).
MAX_DECISIONS = 200
LIVE = (EnrollmentState.ACTIVE, EnrollmentState.PAUSED)


def link_placeholder() -> str:
    """What `{{ link }}` shows in a simulation: the shape of a tracked link, none created."""
    return f"https://…{reverse('content-link', args=['XXXX'])}"


@dataclass(frozen=True)
class SimulatedStep:
    """One decision the engine would take for a lead: at (local time), the step, what and why."""

    at: datetime  # in the sequence's time zone
    day: int
    position: int
    channel: str
    mode: str
    content: str
    outcome: str  # send | task | skip | branch
    reasons: list[str]

    @property
    def outcome_label(self) -> str:
        return {
            SEND: gettext("send"),
            TASK: gettext("staff task"),
            SKIP: gettext("skipped"),
            BRANCH: gettext("branch"),
        }[self.outcome]

    @property
    def reason(self) -> str:
        return "; ".join([self.outcome_label, *self.reasons]) if self.reasons else self.outcome_label

    def line(self) -> str:
        """`YYYY-MM-DD HH:MM  day N  channel  content  — reason` (what `manage.py simulate` prints)."""
        content = " ".join(self.content.split()) or "-"
        return f"{self.at:%Y-%m-%d %H:%M}  day {self.day}  {self.channel}  {content}  — {self.reason}"


@dataclass
class LeadSimulation:
    lead: Lead
    # enrolled: an active enrollment goes on; would_enroll: enrolled now by the trigger or by hand.
    origin: str
    anchor_at: datetime | None
    steps: list[SimulatedStep] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # about the lead as things stand
    ending: str = ""  # after the steps: it completes, or the simulation stopped


@dataclass
class _Context:
    sequence: Sequence
    plan: SequencePlan
    now: datetime
    horizon: datetime
    conditions: dict[int, set[int]]
    waits: dict[int, set[int]]
    opted_out: dict[int, set[str]]
    caps: dict[tuple[int, str], list[datetime]]


def sequence_simulate(
    *,
    sequence: Sequence,
    days: int,
    now: datetime,
    lead_ids: list[int] | None = None,
    sample: int = 20,
) -> list[LeadSimulation]:
    """For the given leads, else a sample of the leads active in the sequence, else of those its trigger
    (or a manual enrollment) would enroll now: each step the engine would take within `days` days."""
    plan = SequencePlan.of(sequence, Step.objects.filter(sequence=sequence).select_related("content"))
    if lead_ids:
        ids = list(dict.fromkeys(int(i) for i in lead_ids))
    else:
        ids = list(
            Enrollment.objects.filter(sequence=sequence, state__in=LIVE)
            .order_by("-lead_id")
            .values_list("lead_id", flat=True)[:sample]
        )
        if not ids:
            candidates = _contactable(sequence, _trigger_candidates(sequence, now), now)
            ids = list(candidates.order_by("-pk").values_list("pk", flat=True)[:sample])
    leads = Lead.objects.select_related("owner").in_bulk(ids)
    ids = [i for i in ids if i in leads]
    enrollments = {
        e.lead_id: e
        for e in Enrollment.objects.filter(sequence=sequence, state__in=LIVE, lead_id__in=ids).order_by(
            "entered_at"
        )
    }
    fresh = [i for i in ids if i not in enrollments]
    may_enter = (
        set(_contactable(sequence, Lead.objects.filter(pk__in=fresh), now).values_list("pk", flat=True))
        if fresh
        else set()
    )
    leaving = _exit_reasons(sequence, ids, now, enrolled=list(enrollments))
    context = _Context(
        sequence=sequence,
        plan=plan,
        now=now,
        horizon=now + timedelta(days=days),
        conditions=_lead_sets(plan, ids, now, wait=False),
        waits=_lead_sets(plan, ids, now, wait=True),
        opted_out=_opted_out(ids),
        caps=_cap_times(ids, now, now + timedelta(days=days)),
    )
    status_note = {
        SequenceStatus.PAUSED: gettext("The sequence is paused: shown as if it were active."),
        SequenceStatus.ARCHIVED: gettext("The sequence is archived: shown as if it were active."),
    }.get(sequence.status)
    results: list[LeadSimulation] = []
    for lead_id in ids:
        lead = leads[lead_id]
        enrollment = enrollments.get(lead_id)
        if enrollment is not None:
            result = LeadSimulation(lead=lead, origin="enrolled", anchor_at=enrollment.anchor_at)
            if lead_id in leaving:
                result.notes.append(
                    gettext("Leaves the sequence at the next tick: %(reason)s") % {"reason": leaving[lead_id]}
                )
            elif enrollment.next_due_at is None:
                result.ending = _completion_note(sequence, lead)
            else:
                next_due = enrollment.next_due_at
                if enrollment.state == EnrollmentState.PAUSED and enrollment.paused_at is not None:
                    # As `enrollments_resume` would resume it now: the timeline moves on by the pause.
                    result.anchor_at = enrollment.anchor_at + (now - enrollment.paused_at)
                    next_due += now - enrollment.paused_at
                    result.notes.append(gettext("Paused: shown as if resumed now."))
                _walk(context, result, enrollment.position, next_due)
        else:
            result = LeadSimulation(lead=lead, origin="would_enroll", anchor_at=now)
            if lead_id not in may_enter:
                result.anchor_at = None
                reason = leaving.get(lead_id) or gettext("the re-entry policy")
                result.notes.append(gettext("Would not be enrolled: %(reason)s") % {"reason": reason})
            elif not plan.steps:
                result.notes.append(gettext("The sequence has no steps."))
            else:
                first = plan.steps[0]
                _walk(context, result, first.position, plan.due(first, now))
        if status_note:
            result.notes.insert(0, status_note)
        results.append(result)
    return results


def _trigger_candidates(sequence: Sequence, now: datetime) -> QuerySet[Lead]:
    """Leads the trigger fires for as things stand (before the entry rule, exits and re-entry)."""
    trigger = sequence.trigger or {}
    kind = sequence.trigger_type
    if kind == TriggerType.MANUAL:
        return Lead.objects.all()
    if kind == TriggerType.SILENT:
        since = now - timedelta(days=int(trigger.get("days") or 14))
        contacted = Q(Exists(Event.objects.filter(lead=OuterRef("pk"), type="message_out"))) | Q(
            Exists(Touch.objects.filter(lead=OuterRef("pk"), state__in=["sent", "delivered"]))
        )
        return Lead.objects.filter(
            Q(last_inbound_at__lte=since) | Q(last_inbound_at__isnull=True, created_at__lte=since)
        ).filter(contacted)
    rows, _ = _source(sequence)
    if rows is None:
        return Lead.objects.none()
    if kind == TriggerType.POOL_ENTERED:
        rows = rows.filter(left_at__isnull=True)  # members now
    elif kind == TriggerType.STAGE_CHANGED:
        rows = rows.filter(lead__stage=trigger.get("stage"))  # still at that stage
    return Lead.objects.filter(Exists(rows.filter(lead=OuterRef("pk"))))


def _exit_reasons(
    sequence: Sequence, lead_ids: list[int], now: datetime, *, enrolled: list[int]
) -> dict[int, str]:
    """Why each lead leaves (or may not enter) the sequence, in the order of `sequences_exit`."""
    leads = Lead.objects.filter(pk__in=lead_ids)
    checks: list[tuple[str, QuerySet[Lead]]] = [
        (gettext("opted out of everything"), leads.filter(Exists(_unsubscribed_all()))),
        (gettext("do not contact"), leads.filter(do_not_contact=True)),
    ]
    if sequence.exit_stages:
        checks.append((gettext("an exit stage"), leads.filter(stage__in=sequence.exit_stages)))
    if sequence.exit_rule:
        checks.append(
            (gettext("meets the exit rule"), leads.filter(rule_compile(sequence.exit_rule, now=now)))
        )
    if sequence.entry_rule:
        checks.append(
            (gettext("the entry rule is not met"), leads.exclude(rule_compile(sequence.entry_rule, now=now)))
        )
    trigger = sequence.trigger or {}
    if sequence.trigger_type == TriggerType.POOL_ENTERED and trigger.get("exit_on_leave", True) and enrolled:
        from leads.models import PoolMembership

        member = PoolMembership.objects.filter(
            lead=OuterRef("pk"), pool__slug=trigger.get("pool"), left_at=None
        )
        checks.append((gettext("left the pool"), leads.filter(pk__in=enrolled).exclude(Exists(member))))
    reasons: dict[int, str] = {}
    for reason, queryset in checks:
        for pk in queryset.values_list("pk", flat=True):
            reasons.setdefault(pk, reason)
    return reasons


def _lead_sets(plan: SequencePlan, lead_ids: list[int], now: datetime, *, wait: bool) -> dict[int, set[int]]:
    """For each step with a condition (or a `wait_for`), the leads meeting it now: one query each."""
    result: dict[int, set[int]] = {}
    for step in plan.steps:
        rule = _wait_rule(step.wait_for) if wait and step.wait_for else None if wait else step.condition
        if rule:
            q = rule_compile(rule, now=now)
            result[step.pk] = set(Lead.objects.filter(pk__in=lead_ids).filter(q).values_list("pk", flat=True))
    return result


def _cap_times(
    lead_ids: list[int], now: datetime, horizon: datetime
) -> dict[tuple[int, str], list[datetime]]:
    """The touches that count against the cap already made for these leads, per (lead, channel)."""
    rows = Touch.objects.filter(
        lead_id__in=lead_ids,
        due_at__gte=now - timedelta(days=2),
        due_at__lt=horizon + timedelta(days=2),
        state__in=CAP_STATES,
    ).values_list("lead_id", "channel", "due_at", "sent_at")
    result: dict[tuple[int, str], list[datetime]] = defaultdict(list)
    for lead_id, channel, due_at, sent_at in rows:
        result[(lead_id, channel)].append(sent_at or due_at)
    return result


def _local(moment: datetime, plan: SequencePlan) -> str:
    return f"{moment.astimezone(plan.zone):%Y-%m-%d %H:%M}"


def step_content_label(step: Step) -> str:
    """What a step would send, without rendering it for a lead (the timeline, skipped steps)."""
    if step.recommended:
        return gettext("recommended content")
    if step.text:
        return step.text if len(step.text) <= 60 else f"{step.text[:59]}…"
    return step.content.title if step.content_id and step.content else "-"


def _content(step: Step, lead: Lead, now: datetime) -> str:
    """The message as the dispatcher would render it, with a placeholder for the tracked link."""
    asset: Any = step.content if step.content_id else None
    prefix = ""
    if step.recommended:
        from content.selectors import content_recommend

        asset = content_recommend(lead=lead, now=now).asset
        prefix = (
            gettext("recommended: %(title)s") % {"title": asset.title}
            if asset
            else gettext("recommended: nothing left to recommend")
        )
    link = link_placeholder() if asset is not None else ""
    try:
        text = _render(step.text, lead, link, asset)
    except Exception as exc:  # the dispatcher fails such a touch; say so rather than stop
        text = gettext("(does not render: %(error)s)") % {"error": exc}
    if not step.recommended:
        return text
    if step.text:
        return f"[{prefix}] {text}"
    return f"{prefix} {link}" if link else prefix


def _walk(ctx: _Context, result: LeadSimulation, position: int, due: datetime) -> None:
    """Take the lead through the steps from `position` (due at `due`) up to the horizon, deciding each
    step as `dispatch._advance_batch` would at the tick that finds it due."""
    plan, now, lead = ctx.plan, ctx.now, result.lead
    anchor = result.anchor_at
    assert anchor is not None
    lateness = timedelta(minutes=ctx.sequence.max_lateness_minutes)
    timing: list[str] = []  # why the due time moved (quiet hours, cap), carried to the step's decision

    def record(
        step: Step, at: datetime, outcome: str, reasons: list[str], content: str | None = None
    ) -> None:
        result.steps.append(
            SimulatedStep(
                at=at.astimezone(plan.zone),
                day=step.day,
                position=step.position,
                channel=step.channel,
                mode=step.mode,
                content=step_content_label(step) if content is None else content,
                outcome=outcome,
                reasons=reasons,
            )
        )

    def after(step: Step) -> tuple[int, datetime | None]:
        following = plan.after(step)
        if following is None:
            return step.position + 1, None
        return following.position, plan.due(following, anchor)

    def to(target_position: int, at: datetime) -> tuple[int, datetime | None]:
        target = plan.step_at(target_position)
        if target is None:
            return target_position, None
        return target.position, max(plan.due(target, anchor), at)

    next_due: datetime | None = due
    for _ in range(MAX_DECISIONS):
        step = plan.step_at(position)
        if step is None or next_due is None:
            result.ending = _completion_note(ctx.sequence, lead)
            return
        due = next_due
        if due > ctx.horizon:
            return
        at = max(due, now)  # the tick that finds it due
        as_of = gettext(" (as of today)") if at > now else ""
        if not timing:  # a due time from the plan: did quiet hours move it?
            nominal = step_nominal_due(
                anchor_at=anchor, day=step.day, send_time=step.send_time, zone=plan.zone
            )
            scheduled = step_due(
                anchor_at=anchor, day=step.day, send_time=step.send_time, zone=plan.zone, quiet=plan.quiet
            )
            if due == scheduled != nominal and plan.quiet is not None:
                timing.append(
                    gettext("quiet hours %(start)s–%(end)s: %(nominal)s → %(due)s")
                    % {
                        "start": f"{plan.quiet.start:%H:%M}",
                        "end": f"{plan.quiet.end:%H:%M}",
                        "nominal": _local(nominal, plan),
                        "due": _local(due, plan),
                    }
                )
        step_timing, timing = timing, []
        reasons = list(step_timing)
        if step.condition:
            if lead.pk not in ctx.conditions.get(step.pk, set()):
                if step.else_position is not None:
                    record(
                        step,
                        at,
                        BRANCH,
                        [
                            *reasons,
                            gettext("condition false%(as_of)s → step #%(position)s")
                            % {"as_of": as_of, "position": step.else_position},
                        ],
                    )
                    position, next_due = to(step.else_position, at)
                else:
                    record(step, at, SKIP, [*reasons, gettext("condition false%(as_of)s") % {"as_of": as_of}])
                    position, next_due = after(step)
                continue
            reasons.append(gettext("condition true%(as_of)s") % {"as_of": as_of})
        if step.wait_for:
            happened = lead.pk in ctx.waits.get(step.pk, set())
            target = step.wait_for.get("then" if happened else "else")
            wait = {
                "event": step.wait_for.get("event"),
                "days": int(step.wait_for.get("within_days") or 1),
                "as_of": as_of,
            }
            said = (
                gettext("wait for %(event)s within %(days)s days: happened%(as_of)s") % wait
                if happened
                else gettext("wait for %(event)s within %(days)s days: not happened%(as_of)s") % wait
            )
            if target is not None:
                record(step, at, BRANCH, [*reasons, f"{said} → #{target}"])
                position, next_due = to(int(target), at)
                continue
            if not happened:
                record(step, at, SKIP, [*reasons, said])
                position, next_due = after(step)
                continue
            reasons.append(said)
        if now - due > lateness:
            late = gettext("stale: due %(due)s, more than %(minutes)s minutes late") % {
                "due": _local(due, plan),
                "minutes": ctx.sequence.max_lateness_minutes,
            }
            record(step, at, SKIP, [*reasons, late])
            position, next_due = after(step)
            continue
        if due < now:
            reasons.append(
                gettext("due %(due)s, already past: at the next tick") % {"due": _local(due, plan)}
            )
        channel = step.channel
        if step.mode == StepMode.AUTO and channel in ctx.opted_out.get(lead.pk, set()):
            record(step, at, SKIP, [*reasons, gettext("opted out of %(channel)s") % {"channel": channel}])
            position, next_due = after(step)
            continue
        if step.mode == StepMode.AUTO and adapter_for(channel) is None:
            record(
                step,
                at,
                SKIP,
                [*reasons, gettext("channel %(channel)s not configured") % {"channel": channel}],
            )
            position, next_due = after(step)
            continue
        start, end = local_day_bounds(due, plan.zone)
        taken = [t for t in ctx.caps[(lead.pk, channel)] if start <= t < end]
        cap = _cap_for(plan, channel)
        if len(taken) >= cap:
            moved = cap_shift(due, zone=plan.zone, quiet=plan.quiet)
            # The same step is decided again at the new time; why its time moved carries over.
            timing = [
                *step_timing,
                gettext("frequency cap (%(cap)s a day on %(channel)s): %(due)s → %(moved)s")
                % {"cap": cap, "channel": channel, "due": _local(due, plan), "moved": _local(moved, plan)},
            ]
            next_due = moved
            continue
        ctx.caps[(lead.pk, channel)].append(due)
        if step.mode == StepMode.TASK:
            owner = lead.owner.get_username() if lead.owner_id and lead.owner else gettext("no owner yet")
            reasons.append(gettext("for %(owner)s") % {"owner": owner})
        record(step, at, TASK if step.mode == StepMode.TASK else SEND, reasons, _content(step, lead, now))
        position, next_due = after(step)
    result.ending = gettext("Stopped after %(count)s decisions.") % {"count": MAX_DECISIONS}


def _completion_note(sequence: Sequence, lead: Lead) -> str:
    action = (sequence.on_complete or {}).get(lead.temperature) or {}
    if not action.get("action"):
        return gettext("Completes after the last step.")
    return gettext(
        "Completes after the last step; then, for a %(temperature)s lead (as of today): %(action)s"
    ) % {
        "temperature": lead.get_temperature_display(),
        "action": action["action"],
    }
