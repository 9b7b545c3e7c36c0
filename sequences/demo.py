"""Demo: three SOP sequences modelled on the field, and a few weeks of their history.

- 新好友6次触达 (added on WeCom): whitepaper, a case of the lead's industry, a scenario, the free trial,
  the webinar, and on day 30 a check-in call task for the owner.
- 高价值池场景培育 (entered the high-value pool): the need decides solution or strategy first, a read
  strategy is followed by its solution, a new scenario every week, a case of the lead's industry, a
  demo invitation; at the end hot leads go to an SDR, warm ones stay in the pool, cold ones are tagged.
- 沉默客户激活 (silent for 14 days): new content, a webinar replay, a one-to-one message.

Their history is what the engine would have done had the sequences been running for a few weeks:
the demo's WeCom friends and high-value leads are enrolled at the instant they arrived, and the engine
runs as of every instant something fell due (the whole sequence tick each morning), up to 20 hours
before the demo's `now`, so the first tick of `make demo` still has the last hours' touches to send
(within the default 24 hours' max lateness: none is stale). In between, some leads open the link they
were sent (through the tracked link, as a person would) or reply on WeCom, so the branches and the
figures have something to show. Everything is written through the services, once: a reload keeps the
sequences as they are (a marketer may have edited them) and adds nothing.
"""

from __future__ import annotations

import heapq
import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db.models import Min

from content.models import ContentAsset, TrackedLink
from content.services import link_open
from leads.demo import MESSAGES_IN, DemoContext
from leads.models import Event, Lead, LeadTag, PoolMembership
from leads.services import EventInput, event_record_bulk
from sequences.dispatch import steps_advance, touches_dispatch, touches_due_ids
from sequences.engine import sequences_tick
from sequences.models import Enrollment, EnrollmentState, Sequence, Touch, TouchState
from sequences.services import sequence_enroll, sequence_save, sequence_status_set, task_done

# How long each sequence has been running when the demo starts, and the part of the last day left to
# the first live ticks (under the default max lateness of 24 h, so they send it rather than skip it).
NEW_FRIENDS_SINCE = timedelta(days=35)
HIGH_VALUE_SINCE = timedelta(days=24)
SILENT_SINCE = timedelta(days=12)
LEFT_TO_LIVE = timedelta(hours=20)
# Of the sent touches: the share whose link is opened, and the share replied to on WeCom; a silent
# lead answers less (a reaction ends its reactivation), the strategy article is the most read.
OPENED, REPLIED = 0.2, 0.08
OPENED_STRATEGY = 0.35
OPENED_SILENT, REPLIED_SILENT = 0.07, 0.03
# Of the call tasks more than two days old: the share the owner has already done.
TASKS_DONE = 0.6
# WeCom's in-app browser: a person, not a link-preview fetcher.
WXWORK_AGENT = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Mobile/15E148 wxwork/4.1.22 MicroMessenger/7.0.1 Language/zh"
)
# The scenario the high-value SOP starts with (the field article's example) and its two articles.
FIRST_NEED = "need:全渠道获客"
SOLUTION, STRATEGY = "scenario-01", "article-content-bait"
# Industry → its case study (content/demo.py's library). The first is also sent to leads of any other
# or no industry: the flagship case of the largest industry.
INDUSTRY_CASES = {
    "制造": "case-manufacturing",
    "信息科技": "case-saas-mql",
    "零售": "case-retail-private",
    "教育": "case-education",
    "医疗": "case-medical",
    "金融": "case-finance",
    "物流": "case-logistics",
}
HI = "{% if lead.name %}{{ lead.name }}，{% endif %}"

# In the real product these go out as WeCom private messages (`wecom`); the demo has no WeCom
# settings, so `wecom` would skip every touch as not_configured: the demo sends them on `console`.

log = logging.getLogger(__name__)


def _industry_cases(*, day: int, text: str, first: int, channel: str = "wecom") -> list[dict[str, Any]]:
    """One step per industry, each sent only to leads of its industry, and the catch-all last (the
    first industry's case, to any lead not of the others); a false condition goes on to the next step,
    so every lead gets one case and none is skipped. `first` is the position of the first of them."""
    catch_all, *others = INDUSTRY_CASES
    conditions: list[tuple[str, dict[str, Any]]] = [
        *((name, {"field": "industry", "op": "eq", "value": name}) for name in others),
        (catch_all, {"not": {"field": "industry", "op": "in", "value": others}}),
    ]
    return [
        {
            "day": day,
            "channel": channel,
            "text": text,
            "content": INDUSTRY_CASES[industry],
            "condition": condition,
            "else_position": first + index + 1,
        }
        for index, (industry, condition) in enumerate(conditions)
    ]


CASE_TEXT = (
    HI + "分享一个{% if lead.industry %}{{ lead.industry }}行业{% endif %}同行的真实案例："
    "《{{ asset.title }}》，看看他们是怎么把线索一步步变成商机的：{{ link }}"
)
SCENE_TEXT = (
    "{% if asset.title %}" + HI + "{intro}《{{ asset.title }}》——{{ asset.summary }} {{ link }}"
    "{% else %}" + HI + "这周没有新的场景内容，您在获客或培育上有任何问题，随时找我。{% endif %}"
)


def _new_friends() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    data = {
        "name": "新好友6次触达",
        "goal": "新添加企业微信的客户，30 天内按每个客户自己的时间轴触达 6 次：白皮书建立认知，"
        "同行案例建立信任，场景方案讲清价值，免费试用与直播推动行动，"
        "第 30 天顾问电话回访、按 BANT 判断是否转给销售。",
        "status": "active",
        "trigger": {"type": "wecom_added"},
        "reentry": "never",
        "on_complete": {"hot": {"action": "assign_sdr"}},
    }
    steps = [
        {
            "day": 0,
            "send_time": None,  # at once: while the lead still has the QR code in mind
            "channel": "wecom",
            "text": HI + "您好！我是您的专属顾问，感谢添加企业微信。先送您一份《{{ asset.title }}》，"
            "讲透 B2B 企业怎么在线上获客、不见面也成交：{{ link }} 有任何问题随时找我。",
            "content": "wp-online-acquisition",
        },
        *_industry_cases(day=1, text=CASE_TEXT, first=1),
        {
            "day": 3,
            "channel": "wecom_moment",
            # One moment is seen by every lead due that day: no merge fields of a lead in it.
            "text": "很多客户加了企微就沉默了，问题往往出在没有按客户自己的时间轴去触达。"
            "这篇《{{ asset.title }}》讲了私域运营的关键动作和 SOP 节点，做 B2B 私域的朋友可以参考。",
            "content": "scenario-02",
        },
        {
            "day": 7,
            "channel": "sms",
            "text": HI
            + "为{{ lead.company|default:'您' }}开通了 14 天全功能免费试用，含专属顾问一对一上线指导，"
            "线索池、SOP 和评分半天就能跑起来：{{ link }}",
            "content": "trial-14-days",
        },
        {
            "day": 14,
            "channel": "email",
            "text": HI
            + "给您留了一个直播名额：《{{ asset.title }}》，嘉宾是制造、SaaS 与零售企业的市场负责人，"
            "报名后开播前会提醒您：{{ link }}",
            "content": "webinar-live-acquisition",
        },
        {
            "day": 30,
            "channel": "call",
            "mode": "task",
            # A task is done by a person, not rendered: its text is the instruction, without merge fields.
            "text": "电话回访：加企微满 30 天，问问白皮书、案例和试用看得怎么样；按 BANT 了解预算、"
            "决策人、需求和时间，计划明确的转 SQL，暂时没有的退回培育并选择原因。",
        },
    ]
    return data, steps


def _high_value() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    data = {
        "name": "高价值池场景培育",
        "goal": "高价值池（表露过明确需求、但采购计划不明确）：按需求发场景方案，需求不明的先发场景策略试探，"
        "读了再跟进方案；之后每周一个新场景，最后发同行业客户案例并邀请演示。结束时热线索交给 SDR，"
        "温线索留在池中继续培育，冷线索打上 value:low。",
        "status": "active",
        "trigger": {"type": "pool_entered", "pool": "value-high"},
        "reentry": {"after_days": 90},
        # Warm: no action, the lead stays in the pool for its next stage of content. Cold: value:low,
        # which the default value pools (leads/migrations/0005) do not read yet.
        "on_complete": {"hot": {"action": "assign_sdr"}, "cold": {"action": "tag", "tag": "value:low"}},
    }
    steps = [
        {  # 0: the need is known → its solution (step 1's condition is then false: on to step 3)
            "day": 3,
            "channel": "wechat_oa",
            "text": HI
            + "您关注过全渠道获客，我们把落地方案整理成了《{{ asset.title }}》：目标、关键动作、内容和 SOP "
            "节点都在里面，{{ lead.company|default:'贵司' }}可以直接参考：{{ link }}",
            "content": SOLUTION,
            "condition": {"tag": FIRST_NEED},
            "else_position": 1,
        },
        {  # 1: the need is not known → the strategy article, to find out
            "day": 3,
            "channel": "wechat_oa",
            "text": HI
            + "B2B 获客越来越贵，不少同行开始用内容换线索。这篇《{{ asset.title }}》讲了白皮书、案例、直播和"
            "试用各自适合换什么样的线索，推荐一读：{{ link }}",
            "content": STRATEGY,
            "condition": {"not": {"tag": FIRST_NEED}},
            "else_position": 3,
        },
        {  # 2: read the strategy within 3 days → the solution too; else nothing more on this scenario
            "day": 6,
            "channel": "wecom",
            "text": HI + "看到您读了上次那篇内容获客的文章，补充一份配套的落地方案《{{ asset.title }}》，"
            "照着做就能把渠道和内容串起来：{{ link }}",
            "content": SOLUTION,
            "wait_for": {"event": "content_viewed", "where": {"asset": STRATEGY}, "within_days": 3},
        },
        # 3–5: a new scenario each week, the one the lead has not seen that suits it best
        *(
            {
                "day": day,
                "channel": "email",
                "text": SCENE_TEXT.replace("{intro}", intro),
                "content": "recommended",
            }
            for day, intro in (
                (10, "本周的场景推荐："),
                (17, "继续给您分享一个场景："),
                (24, "再分享一个同行问得最多的场景："),
            )
        ),
        *_industry_cases(
            day=31,
            text=HI
            + "场景内容就分享到这里。最后送上一个{% if lead.industry %}{{ lead.industry }}行业{% endif %}"
            "的客户案例《{{ asset.title }}》，看看同行是怎么落地的：{{ link }}",
            first=6,
        ),
        {
            "day": 35,
            "channel": "sms",
            "text": HI + "如果这些场景里有您正在考虑的，可以约一次 30 分钟的线上演示，顾问会用"
            "{{ lead.industry|default:'您所在' }}行业的数据走一遍从获客到商机的全流程：{{ link }}",
            "content": "demo-booking",
        },
    ]
    return data, steps


def _silent() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    data = {
        "name": "沉默客户激活",
        "goal": "联系过、但 14 天没有任何互动的客户：用新内容、直播回放和一对一关怀唤醒；"
        "客户一有回应就退出，由顾问接着聊。",
        "status": "active",
        "trigger": {"type": "silent", "days": 14},
        "reentry": "always",  # once per silence (the trigger's own rule), again after the next one
        "exit_rule": {"days_since": "last_inbound_at", "lt": 1},  # any signal from the lead: awake again
        "on_complete": {"hot": {"action": "assign_sdr"}},
    }
    steps = [
        {
            "day": 0,
            "send_time": None,  # when the silence is noticed (quiet hours move it to the morning)
            "channel": "sms",
            "text": HI
            + "好久不见！我们刚发布了《{{ asset.title }}》，整理了今年 B2B 企业在营销技术上的新变化，"
            "给您留了一份：{{ link }}",
            "content": "report-martech",
        },
        {
            "day": 3,
            "channel": "wechat_oa",
            "text": HI + "《{{ asset.title }}》上线了，不少同行说干货满满，有空可以看看：{{ link }}",
            "content": "webinar-replay-live",
        },
        {
            "day": 7,
            "channel": "wecom",
            "text": HI + "最近在忙什么？我们整理了一份《{{ asset.title }}》，每个节点的话术和内容都写好了，"
            "{{ lead.company|default:'贵司' }}可以直接套用：{{ link }} 需要的话我约个时间帮您过一遍。",
            "content": "template-sop-366",
        },
    ]
    return data, steps


SEQUENCES = {"new_friends": _new_friends, "high_value": _high_value, "silent": _silent}


# --- Loading.


def demo_sequences_load(ctx: DemoContext) -> dict[str, int]:
    """The three sequences (kept as they are when they exist: a marketer may have edited them) and,
    when they are new, their history up to 20 hours before `ctx.now`."""
    sequences: dict[str, Sequence] = {}
    created = 0
    for key, build in SEQUENCES.items():
        data, steps = build()
        existing = Sequence.objects.filter(name=data["name"]).first()
        if existing is None:
            existing = sequence_save(data=data, steps=_with_content_ids(steps))
            created += 1
        sequences[key] = existing
    mine = list(sequences.values())
    if created == len(SEQUENCES):  # made once, with the sequences
        _history_make(ctx, sequences)
    touches = Touch.objects.filter(sequence__in=mine)
    return {
        "sequences": len(mine),
        "sequences_created": created,
        "enrollments": Enrollment.objects.filter(sequence__in=mine).count(),
        "touches_sent": touches.filter(state__in=[TouchState.SENT, TouchState.DELIVERED]).count(),
        "touches_skipped": touches.filter(state=TouchState.SKIPPED).count(),
        "call_tasks_open": touches.filter(state=TouchState.TASK_OPEN).count(),
    }


def _with_content_ids(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Steps name their content by slug here; `sequence_save` takes the asset id or `recommended`."""
    slugs = {s["content"] for s in steps if s.get("content") not in (None, "recommended")}
    ids = dict(ContentAsset.objects.filter(slug__in=slugs).values_list("slug", "pk"))
    if missing := slugs - ids.keys():
        raise RuntimeError(f"the demo sequences need content assets {sorted(missing)} (content/demo.py)")
    rows = []
    for step in steps:
        row = {k: v for k, v in step.items() if k != "content"}
        content = step.get("content")
        if content == "recommended":
            row["recommended"] = True
        elif content:
            row["content_id"] = ids[content]
        rows.append(row)
    return rows


def _history_make(ctx: DemoContext, sequences: dict[str, Sequence]) -> None:
    # Up to now: the first tick sets the triggers' cursors to the newest rows, so a lead that arrived
    # after the history stops is enrolled here (its welcome is the first live tick's to send).
    _enroll_at_arrival(sequences["new_friends"], _wecom_friends(ctx.now - NEW_FRIENDS_SINCE, ctx.now))
    _enroll_at_arrival(sequences["high_value"], _high_value_arrivals(ctx.now - HIGH_VALUE_SINCE, ctx.now))
    end = ctx.now - LEFT_TO_LIVE
    # The silent trigger reads the clock of each tick: it starts with the first tick after its launch.
    silent_from = ctx.now - SILENT_SINCE
    sequence_status_set(sequence=sequences["silent"], status="paused", now=ctx.now)
    with _quiet_console():
        _Replay(ctx, end=end, wake=[(silent_from, sequences["silent"])]).run(ctx.now - NEW_FRIENDS_SINCE)
    _tasks_partly_done(ctx, end)


def _wecom_friends(since: datetime, until: datetime) -> list[tuple[int, datetime]]:
    """(lead, the first time it added us on WeCom) for the leads that did so in the window."""
    rows = (
        Event.objects.filter(type="wecom_added")
        .values("lead_id")
        .annotate(at=Min("occurred_at"))
        .filter(at__gte=since, at__lte=until)
        .order_by("at", "lead_id")
    )
    return [(row["lead_id"], row["at"]) for row in rows]


def _high_value_arrivals(since: datetime, until: datetime) -> list[tuple[int, datetime]]:
    """(member of the high-value pool, when it got its first need tag, i.e. would have entered the pool)
    for the members that arrived in the window. The pool was evaluated once when the demo was loaded,
    so its memberships all start then; the need tag says when the lead really qualified."""
    members = PoolMembership.objects.filter(pool__slug="value-high", left_at__isnull=True).values("lead_id")
    rows = (
        LeadTag.objects.filter(lead_id__in=members, tag__group="need")
        .values("lead_id")
        .annotate(at=Min("first_at"))
        .filter(at__gte=since, at__lte=until)
        .order_by("at", "lead_id")
    )
    created = dict(Lead.objects.filter(pk__in=[r["lead_id"] for r in rows]).values_list("pk", "created_at"))
    return [(row["lead_id"], max(row["at"], created[row["lead_id"]])) for row in rows]


def _enroll_at_arrival(sequence: Sequence, arrivals: list[tuple[int, datetime]]) -> None:
    """Enroll each lead at the instant it arrived (day 0 = then), as the trigger would have."""
    for lead_id, at in arrivals:
        sequence_enroll(
            sequence=sequence, lead_ids=[lead_id], anchor_at=at, now=at, trigger=sequence.trigger_type
        )


@contextmanager
def _quiet_console():
    """The weeks of history go out through the console on every channel — never to a real provider,
    even where channels are configured — and quietly: its log would flood `load_demo`'s output."""
    from django.test.utils import override_settings

    from channels.registry import adapters_reset

    console = logging.getLogger("nurture.console")
    level = console.level
    console.setLevel(logging.WARNING)
    try:
        with override_settings(NURTURE_CHANNEL_ADAPTERS=settings.NURTURE_DEMO_CHANNEL_ADAPTERS):
            adapters_reset()
            yield
    finally:
        adapters_reset()
        console.setLevel(level)


@dataclass(order=True)
class _Reaction:
    at: datetime
    key: str
    kind: str = field(compare=False)  # "open" | "reply"
    lead_id: int = field(compare=False)
    token: str = field(compare=False, default="")


class _Replay:
    """Runs the sequence engine as of each instant something falls due, in time order, with the leads'
    reactions (opened links, WeCom replies) recorded in between at their own instants."""

    def __init__(self, ctx: DemoContext, *, end: datetime, wake: list[tuple[datetime, Sequence]]) -> None:
        self.ctx, self.end = ctx, end
        self.wake = sorted(wake, key=lambda item: item[0])
        self.reactions: list[_Reaction] = []
        self.zone = ZoneInfo(settings.TIME_ZONE)
        self.ticks = self.full_ticks = self.hops = 0
        self.strategy = ContentAsset.objects.filter(slug=STRATEGY).values_list("pk", flat=True).first()

    def run(self, start: datetime) -> None:
        now, morning = start, self._morning_after(start - timedelta(days=1))
        while now <= self.end:
            self._react(until=now)
            full = now >= morning or bool(self.wake and self.wake[0][0] <= now)
            while self.wake and self.wake[0][0] <= now:
                _, sequence = self.wake.pop(0)
                sequence_status_set(sequence=sequence, status="active", now=now)
            last = Touch.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
            self._tick(now, full=full)
            if now >= morning:
                morning = self._morning_after(now)
            self._plan_reactions(after=last, now=now)
            now = self._next(now, morning)
        self._react(until=self.end)
        log.info(
            "demo sequences: %d ticks (%d full) and %d branch hops of history up to %s",
            self.ticks,
            self.full_ticks,
            self.hops,
            self.end.isoformat(),
        )

    def _tick(self, now: datetime, *, full: bool) -> None:
        """The whole sequence tick once a morning (and when a sequence starts); at the other instants
        only what they are for: the steps that fell due (a welcome sent at once) and their sending.
        A branch moves its enrollment on to a step due at once, so the steps are advanced again at the
        same instant until no branch is left (live, the next minute's tick does it)."""
        self.ticks += 1
        if full:
            self.full_ticks += 1
            counts = {k.removeprefix("steps."): v for k, v in sequences_tick(now, inline=True).items()}
        else:
            counts = steps_advance(now=now)
        made = not full
        for _ in range(12):
            if not counts.get("branched"):
                break
            counts = steps_advance(now=now)
            made = made or bool(counts.get("scheduled"))
            self.hops += 1
        if made:
            touches_dispatch(touch_ids=touches_due_ids(now=now), now=now)

    def _morning_after(self, moment: datetime) -> datetime:
        """The next 10:00 local after `moment`, when the day's steps fall due (the default send time)."""
        local = moment.astimezone(self.zone)
        morning = local.replace(hour=10, minute=0, second=0, microsecond=0)
        return morning if morning > local else morning + timedelta(days=1)

    def _next(self, now: datetime, morning: datetime) -> datetime:
        """The next instant anything falls due: a step, a touch, a sequence starting, the next morning."""
        due = Enrollment.objects.filter(state=EnrollmentState.ACTIVE, sequence__status="active").aggregate(
            m=Min("next_due_at")
        )["m"]
        touch = Touch.objects.filter(state=TouchState.SCHEDULED).aggregate(m=Min("due_at"))["m"]
        candidates = [morning, *(t for t in (due, touch) if t is not None)]
        if self.wake:
            candidates.append(self.wake[0][0])
        upcoming = max(min(candidates), now + timedelta(minutes=1))
        # Tick on whole five minutes: close due times share a tick, as they would within a minute live.
        rounded = upcoming.replace(second=0, microsecond=0)
        rounded += timedelta(minutes=-rounded.minute % 5)
        return rounded if rounded >= upcoming else rounded + timedelta(minutes=5)

    def _plan_reactions(self, *, after: int, now: datetime) -> None:
        """Draw who opens or answers the touches just sent, and when."""
        rng = self.ctx.rng
        sent = list(
            Touch.objects.filter(pk__gt=after, state=TouchState.SENT)
            .values_list("pk", "lead_id", "content_id", "idempotency_key", "sequence__trigger__type")
            .order_by("pk")
        )
        tokens = dict(
            TrackedLink.objects.filter(touch_id__in=[row[0] for row in sent]).values_list("touch_id", "token")
        )
        for touch_id, lead_id, content_id, key, trigger in sent:
            silent = trigger == "silent"
            opened = OPENED_SILENT if silent else OPENED_STRATEGY if content_id == self.strategy else OPENED
            if touch_id in tokens and rng.random() < opened:
                at = now + timedelta(
                    hours=rng.choice([0.2, 0.5, 1, 2, 3, 5, 8, 20, 26, 44]) * rng.uniform(0.7, 1.3)
                )
                heapq.heappush(self.reactions, _Reaction(at, key, "open", lead_id, tokens[touch_id]))
            if rng.random() < (REPLIED_SILENT if silent else REPLIED):
                at = now + timedelta(hours=rng.uniform(0.1, 30))
                heapq.heappush(self.reactions, _Reaction(at, key, "reply", lead_id))

    def _react(self, *, until: datetime) -> None:
        """Record the reactions due by `until`: an opened link as the link's own view, a reply as an event."""
        while self.reactions and self.reactions[0].at <= until:
            reaction = heapq.heappop(self.reactions)
            at = _awake(reaction.at, self.zone)
            if at > until:  # a night-time reaction waits for the morning
                heapq.heappush(
                    self.reactions,
                    _Reaction(at, reaction.key, reaction.kind, reaction.lead_id, reaction.token),
                )
                continue
            if reaction.kind == "open":
                link_open(token=reaction.token, method="GET", user_agent=WXWORK_AGENT, now=at)
            else:
                event_record_bulk(
                    items=[
                        EventInput(
                            type="message_in",
                            occurred_at=at,
                            properties={"text": self.ctx.rng.choice(MESSAGES_IN), "channel": "wecom"},
                            event_id=f"demo-reply-{reaction.key}",
                            lead_id=reaction.lead_id,
                            identity=None,
                            source="demo",
                        )
                    ],
                    now=at,
                )


def _awake(at: datetime, zone: ZoneInfo) -> datetime:
    """People read and reply between 08:00 and 23:00 local time: later ones move to the next morning."""
    local = at.astimezone(zone)
    if local.hour >= 23:
        return (local + timedelta(days=1)).replace(hour=8, minute=local.minute, second=local.second)
    if local.hour < 8:
        return local.replace(hour=8)
    return at


def _tasks_partly_done(ctx: DemoContext, end: datetime) -> None:
    """Owners have done most of the call tasks that are more than two days old."""
    old = Touch.objects.filter(state=TouchState.TASK_OPEN, due_at__lt=end - timedelta(days=2)).order_by("pk")
    for touch in old:
        if ctx.rng.random() < TASKS_DONE:
            task_done(touch=touch, now=touch.due_at + timedelta(hours=ctx.rng.uniform(1, 30)))
