"""Demo: the SDR workspace in the middle of a working day, built with the workspace's own services.

sdr1 and sdr2 get their profiles; the return-to-nurture reasons `timing_later` and `no_budget` enroll
into the high-value scenario sequence; then the day up to `ctx.now` is played in time order: leads
claimed from the hot queue, given by the manager and round-robin, calls logged, notes written, one lead
qualified (SQL), one returned to nurturing, and the SLA tick run at the instants it would have noticed
something (a breach escalated to the manager, a warning before a deadline). About two dozen hot leads
are left unassigned in the queue for sdr1 to claim.

The day is made once, while no demo SDR has claimed a lead yet: a reload (or a demo used in the browser
since) adds nothing.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth import get_user_model

from leads.demo import DemoContext
from leads.models import Event, Lead, RecycleReason
from workspace.calendar import WorkCalendar
from workspace.models import Assignment, LeadNote, Notification, SdrProfile, WorkspaceSettings
from workspace.services import (
    FOLLOW_UP_EVENTS,
    hot_queue_leads,
    lead_bant_set,
    lead_call_log,
    lead_claim,
    lead_mark_sql,
    lead_note_add,
    lead_return_to_nurture,
    leads_assign,
    work_calendar,
    workspace_settings_get,
    workspace_tick,
)

# Demo SDR: WeCom UserID (the pinyin of the name, as WeCom admins make them when no member is synced).
DEMO_SDRS = {"sdr1": "chenhaoran", "sdr2": "wangsiqi"}
DEMO_MANAGER = "manager"
# Return-to-nurture reasons and the demo sequence that nurtures such a lead next: the weekly scenarios,
# cases and demo invitation of the high-value pool suit a lead with a need but no budget or plan yet.
REASON_SEQUENCES = {"timing_later": "高价值池场景培育", "no_budget": "高价值池场景培育"}
# Hot leads left unassigned in the queue at the end of the day's history (the rest are worked).
QUEUE_LEFT_UNASSIGNED = 24
# Below this many left in the queue, the day is not played at all.
QUEUE_LEFT_AT_LEAST = 5
# Round-robin assignments of the morning beyond the scripted ones (all followed up).
MORNING_ROUND_ROBIN = 16

CALL_NOTES = [
    "客户在评估两家供应商，关注企微对接和私域 SOP，约了下周二线上演示",
    "市场总监接的电话，下季度有线索培育的预算，要一份制造业案例",
    "目前用 Excel 管线索，想先试用 14 天，已发试用链接",
    "决策人是 CEO，本月底前要方案和报价",
    "有需求但要先跟老板汇报，约了周五再沟通",
    "对直播获客感兴趣，问了私有化部署的价格",
]
NOTES = [
    "已加企微，发了《线上获客白皮书》，客户说周末看",
    "客户团队 5 人，主要用企微做私域；痛点是线索跟进不及时",
    "下次联系前先准备同行业案例和报价区间",
]


@dataclass(order=True)
class _Step:
    at: datetime
    order: int
    run: Callable[[datetime], Any] = field(compare=False)


def demo_workspace_load(ctx: DemoContext) -> dict[str, int]:
    """SDR profiles, the reasons' sequences and, once, a working day of the workspace up to `ctx.now`."""
    User = get_user_model()
    users = {u.username: u for u in User.objects.filter(username__in=[*DEMO_SDRS, DEMO_MANAGER])}
    profiles = 0
    for username, wecom_userid in DEMO_SDRS.items():
        if username in users:
            _profile, created = SdrProfile.objects.get_or_create(
                user=users[username], defaults={"wecom_userid": wecom_userid, "available": True}
            )
            profiles += created
    _reasons_sequences()
    made = 0
    sdrs_ready = all(name in users for name in (*DEMO_SDRS, DEMO_MANAGER))
    claimed = Assignment.objects.filter(sdr__username__in=DEMO_SDRS, via=Assignment.Via.CLAIM).exists()
    if sdrs_ready and not claimed:
        made = int(_Day(ctx, users).play())
        # The demo's hot leads all turned hot at load time: auto-assignment would hand every one of them out
        # half an hour later and leave nothing to claim. The demo leaves assignment to the SDRs.
        WorkspaceSettings.objects.filter(pk=workspace_settings_get().pk).update(
            auto_assign_after_minutes=None
        )
    unassigned = hot_queue_leads().filter(owner__isnull=True).count()
    return {
        "sdr_profiles_created": profiles,
        "workspace_day_made": made,
        "hot_queue": hot_queue_leads().count(),
        "hot_queue_unassigned": unassigned,
        "assignments_open": Assignment.objects.filter(ended_at__isnull=True).count(),
        "notifications": Notification.objects.count(),
        "lead_notes": LeadNote.objects.count(),
    }


def _reasons_sequences() -> None:
    """Give the reasons their demo sequence, unless someone chose one already."""
    from sequences.models import Sequence

    for code, name in REASON_SEQUENCES.items():
        sequence = Sequence.objects.filter(name=name).first()
        if sequence is not None:
            RecycleReason.objects.filter(code=code, sequence__isnull=True).update(sequence=sequence)


def _working_before(cal: WorkCalendar, at: datetime, amount: timedelta) -> datetime:
    """The latest whole minute before `at` with `amount` of working time between them (the calendar
    counts only forwards: found by bisection)."""
    lo, hi = 0, 60 * 24 * 60  # minutes back; 60 days hold any SLA's working hours
    while lo < hi:
        mid = (lo + hi) // 2
        if cal.working_time_between(at - timedelta(minutes=mid), at) >= amount:
            hi = mid
        else:
            lo = mid + 1
    return at - timedelta(minutes=lo)


class _Day:
    """The day's history as steps in time order; each step calls a workspace service as of its instant."""

    def __init__(self, ctx: DemoContext, users: dict[str, Any]) -> None:
        self.ctx, self.rng = ctx, ctx.rng
        self.sdr1, self.sdr2, self.manager = users["sdr1"], users["sdr2"], users[DEMO_MANAGER]
        self.settings = workspace_settings_get()
        self.cal = work_calendar(self.settings)
        self.sla = timedelta(hours=self.settings.sla_working_hours)
        # At night or at the weekend, "ago" counts back into the previous working day.
        self.now = ctx.now.replace(second=0, microsecond=0)
        self.steps: list[_Step] = []
        self.order = 0

    def ago(self, amount: timedelta) -> datetime:
        """`amount` of working time before the demo's now."""
        return _working_before(self.cal, self.now, amount)

    def add(self, at: datetime, run: Callable[[datetime], Any]) -> None:
        if at > self.now:
            return  # the live tick's to do
        self.order += 1
        heapq.heappush(self.steps, _Step(at, self.order, run))

    def play(self) -> bool:
        # A lead a sequence wrote to lately would count as followed up by that message: the day's leads
        # are the others, so that the SLA stories below stay as told.
        messaged = Event.objects.filter(
            type__in=FOLLOW_UP_EVENTS, occurred_at__gte=self.now - timedelta(days=5)
        ).values("lead_id")
        queue = list(
            hot_queue_leads()
            .filter(owner__isnull=True)
            .exclude(pk__in=messaged)
            .order_by("-score", "pk")
            .values_list("pk", flat=True)
        )
        scripted = 7
        extra = max(0, min(MORNING_ROUND_ROBIN, len(queue) - scripted - QUEUE_LEFT_UNASSIGNED))
        if len(queue) < scripted + QUEUE_LEFT_AT_LEAST:
            return False  # too small a queue to tell a day's story: leave it all to claim
        # The SDRs took the hottest first; the rest of the worked ones spread over the list.
        picks = queue[:scripted] + self.rng.sample(queue[scripted:], extra)
        leads = Lead.objects.in_bulk(picks)
        a, b, c, d, e, f, g = (leads[pk] for pk in picks[:scripted])
        self._about_to_breach(a)
        self._breached_escalated(b)
        self._followed_up(c, self.sdr1, hours=6, note=True)
        self._qualified(d)
        self._returned(e)
        self._fresh_claim(f)
        self._followed_up(g, self.sdr2, hours=5, note=False)
        self._round_robin([leads[pk] for pk in picks[scripted:]])
        heapq.heapify(self.steps)
        while self.steps:  # a step may add later ones (the call after a round-robin assignment)
            step = heapq.heappop(self.steps)
            step.run(step.at)
        workspace_tick(self.now)  # what the live tick would show at once (a warning due now)
        return True

    # --- The stories.

    def _claim(self, lead: Lead, sdr: Any, at: datetime) -> None:
        self.add(at, lambda now: lead_claim(lead=lead, sdr=sdr, now=now))

    def _tick_at(self, at: datetime) -> None:
        self.add(at, lambda now: workspace_tick(now))

    def _about_to_breach(self, lead: Lead) -> None:
        """sdr1 claimed it and has 40 working minutes left: the tick warned an hour before the deadline."""
        due = self.cal.add_working_time(self.now, timedelta(minutes=40))
        claimed = _working_before(self.cal, due, self.sla)
        self._claim(lead, self.sdr1, claimed)
        self._tick_at(due - timedelta(minutes=self.settings.warn_before_minutes))

    def _breached_escalated(self, lead: Lead) -> None:
        """The manager gave it to sdr2, who missed the deadline an hour of working time ago: breached,
        escalated to the manager, reassigned in three working hours unless someone acts."""
        due = self.ago(timedelta(hours=1))
        given = _working_before(self.cal, due, self.sla)
        self.add(
            given,
            lambda now: leads_assign(
                lead_ids=[lead.pk], via=Assignment.Via.MANAGER, sdr=self.sdr2, by=self.manager, now=now
            ),
        )
        self._tick_at(due)

    def _followed_up(self, lead: Lead, sdr: Any, *, hours: int, note: bool) -> None:
        claimed = self.ago(timedelta(hours=hours))
        self._claim(lead, sdr, claimed)
        called = self.cal.add_working_time(claimed, timedelta(minutes=self.rng.randint(20, 90)))
        self.add(
            called,
            lambda now: lead_call_log(
                lead=lead, by=sdr, outcome="connected", notes=self.rng.choice(CALL_NOTES), now=now
            ),
        )
        if note:
            self.add(
                called + timedelta(minutes=5),
                lambda now: lead_note_add(lead=lead, by=sdr, text=self.rng.choice(NOTES), now=now),
            )

    def _qualified(self, lead: Lead) -> None:
        """sdr1 claimed it yesterday, called, confirmed budget, authority and need: SQL."""
        claimed = self.ago(timedelta(hours=11))
        self._claim(lead, self.sdr1, claimed)
        called = self.cal.add_working_time(claimed, timedelta(minutes=35))
        self.add(
            called,
            lambda now: lead_call_log(
                lead=lead,
                by=self.sdr1,
                outcome="connected",
                notes="决策人已确认，本季度有预算，需求明确：全渠道获客 + 线索培育，要报价",
                now=now,
            ),
        )

        def qualify(now: datetime) -> None:
            lead_bant_set(lead=lead, bant={"budget": True, "authority": True, "need": True}, now=now)
            lead_mark_sql(lead=lead, by=self.sdr1, now=now)

        self.add(called + timedelta(minutes=10), qualify)

    def _returned(self, lead: Lead) -> None:
        """sdr2 claimed it, called: no budget this year; back to nurturing with the reason's sequence."""
        claimed = self.ago(timedelta(hours=8))
        self._claim(lead, self.sdr2, claimed)
        called = self.cal.add_working_time(claimed, timedelta(minutes=50))
        self.add(
            called,
            lambda now: lead_call_log(
                lead=lead, by=self.sdr2, outcome="connected", notes="今年预算已用完，明年一季度再看", now=now
            ),
        )
        reason = RecycleReason.objects.filter(code="no_budget", active=True).first()
        if reason is not None:
            self.add(
                called + timedelta(minutes=5),
                lambda now: lead_return_to_nurture(
                    lead=lead, by=self.sdr2, reason=reason, note="明年一季度预算下来后再联系", now=now
                ),
            )

    def _fresh_claim(self, lead: Lead) -> None:
        """sdr1 claimed it an hour of working time ago: the SLA clock runs, three hours left."""
        self._claim(lead, self.sdr1, self.ago(timedelta(hours=1)))

    def _round_robin(self, leads: list[Lead]) -> None:
        """This morning's hot leads given round-robin, each called within the hour."""
        for index, lead in enumerate(leads):
            given = self.ago(timedelta(hours=7, minutes=-20 * index))

            def assign_and_call(now: datetime, lead: Lead = lead) -> None:
                done = leads_assign(lead_ids=[lead.pk], via=Assignment.Via.AUTO, now=now)
                sdr = self.sdr1 if done.get(lead.pk) == self.sdr1.pk else self.sdr2
                if done:
                    called = self.cal.add_working_time(now, timedelta(minutes=self.rng.randint(15, 55)))
                    self.add(
                        called,
                        lambda at: lead_call_log(
                            lead=lead,
                            by=sdr,
                            outcome=self.rng.choice(["connected", "no_answer", "connected"]),
                            notes=self.rng.choice(CALL_NOTES),
                            now=at,
                        ),
                    )

            self.add(given, assign_and_call)
