"""Scoring: fit and behaviour points, decay, caps per local day and in total, thresholds, the ledger,
`lead.hot` in the outbox, dirty-only rescoring in the tick, and the nightly recomputation."""

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.utils.timezone import now as timezone_now

from leads.models import DirtyLead, Lead, Pool, PoolMembership
from leads.pools import pool_check
from leads.rules import RuleError
from leads.services import EventInput, event_record_bulk, lead_merge, lead_tags_change
from nurture.engine import tick
from nurture.models import OutboxMessage
from scoring.models import LeadScore, ScoreEntry, ScoreRun, ScoringRule, ScoringSettings
from scoring.selectors import score_explain
from scoring.services import (
    scores_due_full,
    scores_recompute_all,
    scoring_rule_check,
    scoring_rule_save,
    scoring_rules_delete,
    scoring_settings_save,
)
from tests.factories import LeadFactory

pytestmark = pytest.mark.django_db

SHANGHAI = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 11, 23, 10, 0, tzinfo=SHANGHAI)


@pytest.fixture(autouse=True)
def _own_model(db):
    # These tests build their own scoring model and pools; the defaults (data migrations) would count too.
    ScoringRule.objects.all().delete()
    Pool.objects.all().delete()
    scoring_settings_save(
        values=ScoringSettings(
            hot_score=50, warm_score=20, hot_min_engagement=10, grade_a=30, grade_b=20, grade_c=10
        )
    )


def _fit(name, points, rule):
    return scoring_rule_save(rule=ScoringRule(name=name, kind="fit", points=points, rule=rule))


def _behaviour(name, event_type, points, **kwargs):
    return scoring_rule_save(
        rule=ScoringRule(name=name, kind="behaviour", event_type=event_type, points=points, **kwargs)
    )


def _events(lead, *items):
    """Record events through the ingest service, as the API does: (type, occurred_at, properties)."""
    event_record_bulk(
        items=[
            EventInput(
                type=kind,
                occurred_at=at,
                properties=props,
                event_id=f"{lead.pk}-{kind}-{at.isoformat()}-{index}",
                lead_id=lead.pk,
                identity=None,
            )
            for index, (kind, at, props) in enumerate(items)
        ]
    )


def _score(lead):
    return LeadScore.objects.get(lead=lead)


def test_fit_rules_give_points_and_grade_while_the_lead_meets_them():
    _fit("目标行业", 15, {"field": "industry", "op": "in", "value": ["制造", "信息科技"]})
    _fit("决策层", 20, {"field": "title", "op": "contains", "value": "总监"})
    _fit("有需求", 5, {"tag": "need:*"})
    director = LeadFactory(industry="制造", title="市场总监")
    clerk = LeadFactory(industry="教育", title="市场专员")
    lead_tags_change(lead=clerk, add=["need:私域运营"], now=NOW)
    scores_recompute_all(now=NOW)
    assert (_score(director).fit, _score(director).grade) == (35, "A")
    assert (_score(clerk).fit, _score(clerk).grade) == (5, "D")
    # Fit alone is no engagement: never hot, whatever the fit.
    assert Lead.objects.get(pk=director.pk).score == 35
    assert _score(director).temperature == "warm"

    Lead.objects.filter(pk=director.pk).update(industry="教育")
    scores_recompute_all(now=NOW + timedelta(minutes=1))
    assert (_score(director).fit, _score(director).grade) == (20, "B")

    # Editing a fit rule rescores everyone at the next tick; fit rules have no ledger to rebuild.
    tick(now=NOW + timedelta(minutes=2))
    title = ScoringRule.objects.get(name="决策层")
    title.points = 30
    scoring_rule_save(rule=title)
    assert scores_due_full(now=NOW + timedelta(minutes=3)) == (True, False)
    tick(now=NOW + timedelta(minutes=3))
    assert _score(director).fit == 30


def test_behaviour_points_decay_with_the_half_life():
    _behaviour("下载白皮书", "content_viewed", 10, where={"form": "whitepaper"}, half_life_days=10)
    _behaviour("参加直播", "webinar_attended", 8)  # no half-life: never fades
    lead = LeadFactory(industry="")
    _events(
        lead,
        ("content_viewed", NOW - timedelta(days=10), {"form": "whitepaper"}),
        ("content_viewed", NOW - timedelta(days=20), {"form": "whitepaper"}),
        ("content_viewed", NOW - timedelta(days=1), {"form": "article"}),  # not a whitepaper: no points
        ("webinar_attended", NOW - timedelta(days=300), {}),
    )
    scores_recompute_all(now=NOW, rebuild_ledger=True)
    assert ScoreEntry.objects.filter(lead=lead).count() == 3
    assert _score(lead).engagement == pytest.approx(5 + 2.5 + 8)
    assert _score(lead).score == 16  # round(15.5) is 16 (banker's rounding would say 16 too)

    scores_recompute_all(now=NOW + timedelta(days=10))
    assert _score(lead).engagement == pytest.approx(2.5 + 1.25 + 8)


def test_caps_count_per_local_day_and_in_total():
    _behaviour("阅读内容", "content_viewed", 3, cap_per_day=7, cap_total=12)
    lead = LeadFactory()
    day = datetime(2026, 11, 10, 9, 0, tzinfo=SHANGHAI)
    _events(
        lead,
        # Three views on one local day: 3 + 3 + 1 (the day cap is 7).
        ("content_viewed", day, {}),
        ("content_viewed", day + timedelta(hours=1), {}),
        ("content_viewed", day.replace(hour=23, minute=30), {}),
        # 00:30 Shanghai is the UTC day of the 23:30 view, but a new local day: 3 more.
        ("content_viewed", day.replace(hour=23, minute=30) + timedelta(hours=1), {}),
        # Three days later: 2, and the total cap of 12 is reached.
        ("content_viewed", day + timedelta(days=3), {}),
        ("content_viewed", day + timedelta(days=3, hours=1), {}),
    )
    scores_recompute_all(now=NOW, rebuild_ledger=True)
    points = list(ScoreEntry.objects.filter(lead=lead).order_by("at").values_list("points", flat=True))
    assert points == [3, 3, 1, 3, 2]
    assert _score(lead).engagement == 12


def test_editing_points_or_the_day_cap_rescores_from_the_ledger_as_it_is():
    views = _behaviour("阅读内容", "content_viewed", 3, cap_per_day=7)
    lead = LeadFactory()
    day = datetime(2026, 11, 23, 9, 0, tzinfo=SHANGHAI)
    _events(lead, *(("content_viewed", day + timedelta(minutes=minute), {}) for minute in (0, 10, 20)))
    tick(now=NOW)
    assert _score(lead).score == 7  # 3 + 3 + 1
    entries = list(ScoreEntry.objects.filter(lead=lead).order_by("at").values_list("pk", "n", "points"))
    assert [(n, points) for _, n, points in entries] == [(1, 3), (2, 3), (3, 1)]

    def edited(**fields):
        for name, value in fields.items():
            setattr(views, name, value)
        scoring_rule_save(rule=views)
        assert scores_due_full(now=NOW + timedelta(minutes=1)) == (True, False)
        tick(now=NOW + timedelta(minutes=1))
        explanation = score_explain(lead=Lead.objects.get(pk=lead.pk), now=NOW + timedelta(minutes=1))
        (behaviour,) = explanation.behaviour_rules or [None]
        return (
            _score(lead).score,
            behaviour and (behaviour["events"], behaviour["points"]),
            [entry["points"] for entry in explanation.entries],
        )

    assert edited(points=2) == (6, (3, 6), [2, 2, 2])
    assert edited(cap_per_day=5) == (5, (3, 5), [1, 2, 2])  # newest first: the third view earns 1
    assert edited(points=5, cap_per_day=3) == (3, (1, 3), [3])  # the second and third earn nothing
    assert edited(points=-4, cap_per_day=None) == (-12, (3, -12), [-4, -4, -4])
    # Nothing was rewritten: the entries are the ones written first.
    assert (
        list(ScoreEntry.objects.filter(lead=lead).order_by("at").values_list("pk", "n", "points")) == entries
    )


def test_entries_written_before_the_day_ordinal_count_their_own_points():
    _behaviour("阅读内容", "content_viewed", 3, cap_per_day=7)
    lead = LeadFactory()
    _events(
        lead,
        ("content_viewed", NOW - timedelta(hours=2), {}),
        ("content_viewed", NOW - timedelta(hours=1), {}),
    )
    tick(now=NOW)
    ScoreEntry.objects.filter(lead=lead).update(n=None, points=4)
    scores_recompute_all(now=NOW + timedelta(minutes=1))
    assert _score(lead).score == 8
    scores_recompute_all(now=NOW + timedelta(minutes=2), rebuild_ledger=True)
    assert _score(lead).score == 6
    assert set(ScoreEntry.objects.filter(lead=lead).values_list("n", "points")) == {(1, 3), (2, 3)}


def test_a_new_event_rebuilds_the_ledger_from_its_own_local_day_on():
    views = _behaviour("阅读内容", "content_viewed", 3, cap_per_day=7)
    wecom = _behaviour("添加企业微信", "wecom_added", 10, cap_total=10)
    lead = LeadFactory()
    before = NOW - timedelta(days=3)
    _events(
        lead,
        ("content_viewed", before, {}),
        ("content_viewed", before + timedelta(hours=1), {}),
        ("wecom_added", before, {}),
    )
    tick(now=NOW)
    # A mark on an entry of that day: a rebuild of the day would renumber it (n = 1).
    first = ScoreEntry.objects.get(rule=views, at=before)
    ScoreEntry.objects.filter(pk=first.pk).update(n=9)

    _events(
        lead,
        ("content_viewed", NOW - timedelta(hours=2), {}),
        ("content_viewed", NOW - timedelta(hours=1), {}),
        ("wecom_added", NOW - timedelta(minutes=30), {}),
    )
    assert DirtyLead.objects.get(lead=lead).events_since == NOW - timedelta(hours=2)
    tick(now=NOW + timedelta(minutes=1))
    assert ScoreEntry.objects.get(pk=first.pk).n == 9  # the day before was not rebuilt
    today = ScoreEntry.objects.filter(rule=views, at__gte=NOW - timedelta(hours=3)).order_by("at")
    assert list(today.values_list("n", "points")) == [(1, 3), (2, 3)]
    # A rule capped in total is rebuilt whole: the second WeCom add earns nothing (no entry).
    assert list(ScoreEntry.objects.filter(rule=wecom).values_list("at", "points")) == [(before, 10)]

    # A late event of that earlier day: the ledger is rebuilt from that day, in time order.
    _events(lead, ("content_viewed", before - timedelta(minutes=30), {}))
    tick(now=NOW + timedelta(minutes=2))
    day = ScoreEntry.objects.filter(rule=views, at__lt=NOW - timedelta(hours=3)).order_by("at")
    assert list(day.values_list("n", "points")) == [(1, 3), (2, 3), (3, 1)]
    assert _score(lead).engagement == 7 + 6 + 10


def test_marks_of_new_events_keep_the_earliest_day_and_a_merge_asks_for_everything():
    from leads.pools import leads_mark_dirty

    lead = LeadFactory()
    leads_mark_dirty(lead_ids=[lead.pk], since={lead.pk: NOW}, events=True)
    leads_mark_dirty(lead_ids=[lead.pk], since={lead.pk: NOW - timedelta(days=2)}, events=True)
    leads_mark_dirty(lead_ids=[lead.pk], since={lead.pk: NOW - timedelta(days=1)}, events=True)
    leads_mark_dirty(lead_ids=[lead.pk])  # an attribute change on top changes nothing of that
    row = DirtyLead.objects.get(lead=lead)
    assert (row.events, row.events_since) == (True, NOW - timedelta(days=2))
    leads_mark_dirty(lead_ids=[lead.pk], events=True)  # no time: the whole ledger
    assert DirtyLead.objects.get(lead=lead).events_since is None
    leads_mark_dirty(lead_ids=[lead.pk], since={lead.pk: NOW}, events=True)
    assert DirtyLead.objects.get(lead=lead).events_since is None
    other = LeadFactory()
    leads_mark_dirty(lead_ids=[other.pk])
    leads_mark_dirty(lead_ids=[other.pk], since={other.pk: NOW}, events=True)
    assert (DirtyLead.objects.get(lead=other).events, DirtyLead.objects.get(lead=other).events_since) == (
        True,
        NOW,
    )


def test_a_late_event_is_capped_in_time_order():
    _behaviour("阅读内容", "content_viewed", 5, cap_per_day=5)
    lead = LeadFactory()
    day = datetime(2026, 11, 10, 15, 0, tzinfo=SHANGHAI)
    _events(lead, ("content_viewed", day, {}))
    tick(now=NOW)
    first = ScoreEntry.objects.get(lead=lead)
    assert first.points == 5
    # An event of the same morning arrives later (a batch import): it earned the day's points first.
    _events(lead, ("content_viewed", day - timedelta(hours=5), {}))
    tick(now=NOW + timedelta(minutes=1))
    # The morning view is the day's first (5 points); the afternoon one is kept as its second, which
    # earns nothing under this cap (and would if the cap were raised).
    entries = list(ScoreEntry.objects.filter(lead=lead).order_by("at").values_list("at", "n", "points"))
    assert entries == [(day - timedelta(hours=5), 1, 5), (day, 2, 0)]
    assert _score(lead).engagement == 5
    explanation = score_explain(lead=Lead.objects.get(pk=lead.pk), now=NOW + timedelta(minutes=1))
    assert [(e["at"], e["points"]) for e in explanation.entries] == [(day - timedelta(hours=5), 5)]
    assert explanation.behaviour_rules[0]["events"] == 1


def test_negative_points_lower_the_score():
    _behaviour("参加直播", "webinar_attended", 30)
    _behaviour("退订", "unsubscribed", -40)
    lead = LeadFactory()
    _events(lead, ("webinar_attended", NOW - timedelta(days=2), {}))
    tick(now=NOW)
    assert Lead.objects.get(pk=lead.pk).score == 30
    _events(lead, ("unsubscribed", NOW - timedelta(days=1), {}))
    tick(now=NOW + timedelta(minutes=1))
    assert Lead.objects.get(pk=lead.pk).score == -10
    assert _score(lead).temperature == "cold"


def test_temperature_thresholds_and_lead_hot_announced_once():
    _behaviour("开始试用", "trial_started", 30)
    _behaviour("参加直播", "webinar_attended", 25, half_life_days=5)
    lead = LeadFactory()
    _events(lead, ("trial_started", NOW - timedelta(hours=2), {}))
    tick(now=NOW)
    assert (Lead.objects.get(pk=lead.pk).score, Lead.objects.get(pk=lead.pk).temperature) == (30, "warm")
    _events(lead, ("webinar_attended", NOW - timedelta(hours=1), {}))
    tick(now=NOW + timedelta(minutes=1))
    lead.refresh_from_db()
    assert (lead.score, lead.temperature) == (55, "hot")
    assert _score(lead).hot_since == NOW + timedelta(minutes=1)
    hot = OutboxMessage.objects.filter(type="lead.hot", lead_id=lead.pk)
    assert list(hot.values_list("data", flat=True)) == [{"temperature": "hot", "score": 55}]

    # Ticks again, and a full recomputation, announce nothing new while it stays hot.
    tick(now=NOW + timedelta(minutes=2))
    scores_recompute_all(now=NOW + timedelta(minutes=3))
    assert hot.count() == 1
    # The webinar fades (half-life 5 days): warm again ten days on, then hot again is a new message.
    scores_recompute_all(now=NOW + timedelta(days=10))
    assert Lead.objects.get(pk=lead.pk).temperature == "warm"
    assert _score(lead).hot_since is None
    _events(lead, ("webinar_attended", NOW + timedelta(days=10), {}))
    tick(now=NOW + timedelta(days=10, minutes=1))
    assert Lead.objects.get(pk=lead.pk).temperature == "hot"
    assert hot.count() == 2


def test_hot_needs_engagement_not_only_fit():
    _fit("目标行业", 60, {"field": "industry", "op": "eq", "value": "制造"})
    _behaviour("打开邮件", "email_opened", 5)
    lead = LeadFactory(industry="制造")
    tick(now=NOW)
    assert (_score(lead).score, _score(lead).temperature) == (60, "warm")
    _events(lead, ("email_opened", NOW, {}), ("email_opened", NOW + timedelta(seconds=1), {}))
    tick(now=NOW + timedelta(minutes=1))
    assert (_score(lead).score, _score(lead).temperature) == (70, "hot")


def test_editing_thresholds_or_rules_rescores_everyone_at_the_next_tick():
    rule = _behaviour("打开邮件", "email_opened", 5)
    leads = [LeadFactory() for _ in range(3)]
    for lead in leads:
        _events(lead, ("email_opened", NOW - timedelta(days=1), {}))
    tick(now=NOW)
    assert {Lead.objects.get(pk=lead.pk).temperature for lead in leads} == {"cold"}
    assert scores_due_full(now=NOW + timedelta(minutes=1)) == (False, False)

    scoring_settings_save(
        values=ScoringSettings(
            hot_score=50, warm_score=5, hot_min_engagement=10, grade_a=30, grade_b=20, grade_c=10
        )
    )
    assert scores_due_full(now=NOW + timedelta(minutes=1)) == (True, False)
    tick(now=NOW + timedelta(minutes=1))
    assert {Lead.objects.get(pk=lead.pk).temperature for lead in leads} == {"warm"}

    # Points are read from the rule when scores are computed: everyone is rescored, the ledger stays.
    rule.points = 50
    scoring_rule_save(rule=rule)
    assert scores_due_full(now=NOW + timedelta(minutes=2)) == (True, False)
    tick(now=NOW + timedelta(minutes=2))
    assert set(ScoreEntry.objects.filter(rule=rule).values_list("points", flat=True)) == {5}  # as written
    assert {Lead.objects.get(pk=lead.pk).temperature for lead in leads} == {"hot"}
    assert {Lead.objects.get(pk=lead.pk).score for lead in leads} == {50}

    # What the rule counts changed: its entries are rebuilt before everyone is rescored.
    rule.where = {"form": "whitepaper"}
    scoring_rule_save(rule=rule)
    assert scores_due_full(now=NOW + timedelta(minutes=3)) == (True, True)
    tick(now=NOW + timedelta(minutes=3))
    assert not ScoreEntry.objects.filter(rule=rule).exists()
    assert {Lead.objects.get(pk=lead.pk).temperature for lead in leads} == {"cold"}
    assert ScoreRun.objects.filter(kind="full", ledger_rebuilt=True).count() == 2

    rule.where = {}
    scoring_rule_save(rule=rule)
    tick(now=NOW + timedelta(minutes=4))
    assert {Lead.objects.get(pk=lead.pk).score for lead in leads} == {50}
    scoring_rules_delete(rules=ScoringRule.objects.filter(pk=rule.pk))
    assert scores_due_full(now=NOW + timedelta(minutes=5)) == (True, False)
    tick(now=NOW + timedelta(minutes=5))
    assert {Lead.objects.get(pk=lead.pk).score for lead in leads} == {0}


def test_the_nightly_recomputation_moves_decayed_scores_without_any_write():
    _behaviour("参加直播", "webinar_attended", 40, half_life_days=7)
    lead = LeadFactory()
    _events(lead, ("webinar_attended", NOW - timedelta(hours=1), {}))
    tick(now=NOW)
    assert Lead.objects.get(pk=lead.pk).score == 40
    # The same evening: nothing due, nothing rescored.
    evening = datetime(2026, 11, 23, 22, 0, tzinfo=SHANGHAI)
    assert scores_due_full(now=evening) == (False, False)
    # 03:00 the next night (NURTURE_SCORE_NIGHTLY_HOUR): everyone is rescored as of then.
    night = datetime(2026, 11, 24, 3, 0, 30, tzinfo=SHANGHAI)
    assert scores_due_full(now=night) == (True, False)
    report = tick(now=night + timedelta(days=6))
    assert report.steps["scores"]["full"] == 1
    age_days = (night + timedelta(days=6) - (NOW - timedelta(hours=1))).total_seconds() / 86400
    assert Lead.objects.get(pk=lead.pk).score == round(40 * 0.5 ** (age_days / 7))
    assert tick(now=night + timedelta(days=6, minutes=1)).steps["scores"]["full"] == 0


def test_dirty_leads_are_rescored_in_the_tick_before_the_pools_read_the_score():
    _behaviour("开始试用", "trial_started", 30)
    pool_check(slug="engaged", rule={"score_gte": 25})
    pool = Pool.objects.create(slug="engaged", name="engaged", rule={"score_gte": 25})
    lead, other = LeadFactory(), LeadFactory()
    tick(now=NOW)
    _events(lead, ("trial_started", NOW, {}))
    report = tick(now=NOW + timedelta(minutes=1))
    assert report.steps["pools"]["scored"] == 1  # only the lead the event marked dirty
    assert PoolMembership.objects.filter(pool=pool, left_at__isnull=True).get().lead_id == lead.pk
    assert Lead.objects.get(pk=other.pk).score == 0


def test_a_tag_change_rescores_without_rebuilding_the_ledger_but_an_event_rebuilds_it():
    _behaviour("开始试用", "trial_started", 30)
    _fit("制造", 10, {"tag": "industry:制造"})
    lead = LeadFactory()
    _events(lead, ("trial_started", NOW - timedelta(hours=1), {}))
    tick(now=NOW)
    assert _score(lead).score == 30
    entry = ScoreEntry.objects.get(lead=lead)
    lead_tags_change(lead=lead, add=["industry:制造"], now=NOW)  # an attribute: the fit moves
    assert list(DirtyLead.objects.values_list("events", flat=True)) == [False]
    tick(now=NOW + timedelta(minutes=1))
    assert _score(lead).score == 40
    assert ScoreEntry.objects.get(lead=lead).pk == entry.pk
    _events(lead, ("trial_started", NOW + timedelta(minutes=1), {}))  # a new event: its entry is written
    lead_tags_change(lead=lead, add=["industry:制造"], now=NOW)  # a later attribute mark keeps `events`
    assert list(DirtyLead.objects.values_list("events", flat=True)) == [True]
    tick(now=NOW + timedelta(minutes=2))
    assert ScoreEntry.objects.filter(lead=lead).count() == 2
    assert _score(lead).score == 70


def test_a_full_recomputation_marks_changed_leads_dirty_for_pools_that_read_the_score():
    _behaviour("参加直播", "webinar_attended", 40, half_life_days=2)
    pool = Pool.objects.create(slug="engaged", name="engaged", rule={"score_gte": 30})
    lead = LeadFactory()
    _events(lead, ("webinar_attended", NOW, {}))
    tick(now=NOW)
    assert PoolMembership.objects.filter(pool=pool, lead=lead, left_at__isnull=True).exists()
    # Four days later the nightly pass finds 10 points: the pool lets the lead go at the next tick.
    later = NOW + timedelta(days=4)
    scores_recompute_all(now=later)
    assert DirtyLead.objects.filter(lead=lead).exists()
    tick(now=later + timedelta(minutes=1))
    assert not PoolMembership.objects.filter(pool=pool, lead=lead, left_at__isnull=True).exists()


def test_the_explanation_adds_up_to_the_score():
    _fit("目标行业", 15, {"field": "industry", "op": "eq", "value": "制造"})
    _fit("教育行业", 10, {"field": "industry", "op": "eq", "value": "教育"})
    views = _behaviour("阅读内容", "content_viewed", 4, cap_per_day=4, half_life_days=30)
    trial = _behaviour("开始试用", "trial_started", 25)
    lead = LeadFactory(industry="制造")
    _events(
        lead,
        ("content_viewed", NOW - timedelta(days=30), {}),
        ("content_viewed", NOW - timedelta(days=30, hours=-1), {}),  # same day: capped to nothing
        ("trial_started", NOW - timedelta(days=3), {}),
    )
    tick(now=NOW)
    with time_machine.travel(NOW, tick=False):
        explanation = score_explain(lead=lead, now=timezone_now())
    assert [r["name"] for r in explanation.fit_rules] == ["目标行业"]
    by_rule = {r["rule"]: r for r in explanation.behaviour_rules}
    assert by_rule[views.pk]["events"] == 1 and by_rule[views.pk]["decayed"] == pytest.approx(2.0)
    assert by_rule[trial.pk]["decayed"] == 25
    assert (
        explanation.fit + round(sum(r["decayed"] for r in explanation.behaviour_rules)) == explanation.score
    )
    assert explanation.score == 15 + 27 == explanation.stored["score"]
    assert [e["event_type"] for e in explanation.entries] == ["trial_started", "content_viewed"]


def test_merging_rescores_the_survivor():
    _behaviour("开始试用", "trial_started", 30)
    survivor, merged = LeadFactory(), LeadFactory()
    _events(merged, ("trial_started", NOW - timedelta(days=1), {}))
    tick(now=NOW)
    assert _score(merged).score == 30
    lead_merge(survivor=survivor, merged=merged, why="test", now=NOW)
    tick(now=NOW + timedelta(minutes=1))
    assert (_score(survivor).score, Lead.objects.get(pk=survivor.pk).score) == (30, 30)
    assert not LeadScore.objects.filter(lead_id=merged.pk).exists()


def test_bad_scoring_rules_are_refused_with_their_path():
    with pytest.raises(RuleError, match=r"^all\[1\]\.op: must be one of"):
        scoring_rule_check(
            kind="fit",
            rule={"all": [{"tag": "need:*"}, {"field": "industry", "op": "like", "value": "x"}]},
            event_type="",
            where={},
        )
    with pytest.raises(RuleError, match="no pool 'vip'"):
        scoring_rule_check(kind="fit", rule={"pool": "vip"}, event_type="", where={})
    with pytest.raises(RuleError, match=r"^event_type: "):
        scoring_rule_check(kind="behaviour", rule=None, event_type=" ", where={})
    with pytest.raises(RuleError, match=r"^where\.form: must be a string"):
        scoring_rule_check(kind="behaviour", rule=None, event_type="content_viewed", where={"form": ["a"]})
    with pytest.raises(RuleError):
        scoring_rule_save(rule=ScoringRule(name="x", kind="fit", points=5, rule={"any": []}))
    assert not ScoringRule.objects.exists()


def test_a_new_temperature_moves_updated_at_but_a_drifting_score_does_not():
    _behaviour("参加直播", "webinar_attended", 60, half_life_days=30)
    lead = LeadFactory()
    _events(lead, ("webinar_attended", NOW - timedelta(hours=1), {}))
    tick(now=NOW)
    hot = Lead.objects.get(pk=lead.pk)
    assert hot.temperature == "hot"
    # A day of decay: 60 → 59, still hot; a sync by updated_since is not sent the lead again.
    scores_recompute_all(now=NOW + timedelta(days=1))
    drifted = Lead.objects.get(pk=lead.pk)
    assert (drifted.score, drifted.temperature, drifted.updated_at) == (59, "hot", hot.updated_at)
    # Thirty days on it is warm: that is news.
    scores_recompute_all(now=NOW + timedelta(days=30))
    warm = Lead.objects.get(pk=lead.pk)
    assert (warm.score, warm.temperature) == (30, "warm") and warm.updated_at > hot.updated_at


def test_editing_one_rule_rewrites_only_its_own_entries():
    views = _behaviour("阅读内容", "content_viewed", 3)
    trial = _behaviour("开始试用", "trial_started", 20)
    lead = LeadFactory()
    _events(
        lead, ("content_viewed", NOW - timedelta(days=1), {}), ("trial_started", NOW - timedelta(days=1), {})
    )
    tick(now=NOW)
    trial_entry = ScoreEntry.objects.get(rule=trial)
    views_entry = ScoreEntry.objects.get(rule=views)
    # A points edit rescores from the ledger as it is.
    views.points = 7
    scoring_rule_save(rule=views)
    tick(now=NOW + timedelta(minutes=1))
    assert Lead.objects.get(pk=lead.pk).score == 27
    assert ScoreEntry.objects.get(rule=views).points == 3  # not rewritten
    # A cap in total makes the points depend on earlier events: the rule's entries are rebuilt.
    views.cap_total = 5
    scoring_rule_save(rule=views)
    assert scores_due_full(now=NOW + timedelta(minutes=2)) == (True, True)
    tick(now=NOW + timedelta(minutes=2))
    assert ScoreEntry.objects.get(rule=views).points == 5
    assert ScoreEntry.objects.get(rule=views).pk == views_entry.pk  # updated in place
    assert ScoreEntry.objects.get(rule=trial).pk == trial_entry.pk  # untouched
    assert Lead.objects.get(pk=lead.pk).score == 25
    # Switched off: its entries stop counting; switched on again: rebuilt (events may have come since).
    views.active = False
    scoring_rule_save(rule=views)
    assert scores_due_full(now=NOW + timedelta(minutes=3)) == (True, False)
    tick(now=NOW + timedelta(minutes=3))
    assert Lead.objects.get(pk=lead.pk).score == 20
    _events(lead, ("content_viewed", NOW + timedelta(minutes=3), {}))
    tick(now=NOW + timedelta(minutes=4))
    # The new event rebuilt the lead's ledger of that day, for the active rules only; the rule's old
    # entry is left and counts for nothing while it is off.
    assert ScoreEntry.objects.filter(rule=views).count() == 1
    assert Lead.objects.get(pk=lead.pk).score == 20
    views.active, views.cap_total = True, None
    scoring_rule_save(rule=views)
    assert scores_due_full(now=NOW + timedelta(minutes=5)) == (True, True)
    tick(now=NOW + timedelta(minutes=5))
    assert ScoreEntry.objects.filter(rule=views).count() == 2
    assert Lead.objects.get(pk=lead.pk).score == 34  # 7 + 7 + 20
    # Deleting a lead takes its ledger with it (the ORM cascades; the table has no constraint).
    lead.delete()
    assert not ScoreEntry.objects.exists()
