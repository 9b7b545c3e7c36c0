"""The scoring figures of `bench pools`: every lead scored from its events (the ledger built, as after a
rule change), the nightly rescoring a day later, and the rescoring of 1,000 dirty leads, with the
default scoring model of the data migration."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from django.db import connection, transaction

from leads.models import Lead
from nurture.bench.ingest import Figure
from scoring.models import LeadScore, ScoreEntry, ScoreRun, ScoringRule
from scoring.services import scores_recompute_all, scores_tick, scores_update_dirty, scoring_rule_save

Log = Callable[[str], None]


def _rules() -> str:
    fit = ScoringRule.objects.filter(kind=ScoringRule.Kind.FIT, active=True).count()
    behaviour = ScoringRule.objects.filter(kind=ScoringRule.Kind.BEHAVIOUR, active=True).count()
    return f"the default model ({fit} fit rules, {behaviour} behaviour rules)"


def bench_scores(*, now: datetime, leads: int, dirty: int, log: Log) -> list[Figure]:
    """Score every lead from scratch, rescore them a day later, then rescore `dirty` leads."""
    figures: list[Figure] = []
    log("scores: every lead scored for the first time (the ledger built from every event)…")
    first = scores_recompute_all(now=now, rebuild_ledger=True)
    entries = ScoreEntry.objects.count()
    figures.append(
        Figure(
            key="score_first",
            label="first scoring of every lead (the ledger built from every event)",
            value=first.seconds,
            unit="s",
            target=None,
            detail=f"{first.leads:,} leads, {_rules()}: {entries:,} ledger entries written from the events, "
            f"{first.changed:,} scores set, {first.became_hot:,} hot (once, when scoring is installed)",
        )
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE scoring_scoreentry; ANALYZE scoring_leadscore")

    rule = ScoringRule.objects.filter(kind=ScoringRule.Kind.BEHAVIOUR, active=True).order_by("pk").first()
    if rule is not None:
        rule.points += 1
        scoring_rule_save(rule=rule)
        log(f"scores: the rule {rule.name} worth one point more, what the next tick does…")
        edited = _as_the_tick_does(now)
        figures.append(
            Figure(
                key="score_full_rebuild",
                label="full score recompute after a rule changed",
                value=edited.seconds,
                unit="s",
                target=60,
                detail=f"{rule.name} ({rule.event_type}, {rule.cap_per_day} a day at most) worth one point "
                f"more, then what the next tick does: "
                + (
                    f"its {ScoreEntry.objects.filter(rule=rule).count():,} entries rewritten, "
                    if edited.ledger_rebuilt
                    else f"its {ScoreEntry.objects.filter(rule=rule).count():,} entries kept (points and day "
                    "caps are read when scores are computed), "
                )
                + f"{edited.leads:,} leads rescored, {edited.changed:,} changed",
            )
        )

    log("scores: the nightly rescoring, a day later…")
    nightly = scores_recompute_all(now=now + timedelta(days=1))
    hot = LeadScore.objects.filter(temperature="hot").count()
    figures.append(
        Figure(
            key="score_full",
            label="full score recompute (nightly, a day of decay)",
            value=nightly.seconds,
            unit="s",
            target=60,
            detail=f"{nightly.leads:,} leads from {entries:,} ledger entries: {nightly.changed:,} scores "
            f"changed by a day of decay, {hot:,} hot",
        )
    )

    low = Lead.objects.order_by("pk").values_list("pk", flat=True).first() or 0
    ids = sorted(low + i for i in random.Random(7).sample(range(leads), min(dirty, leads)))
    log(f"scores: rescoring {len(ids):,} dirty leads…")
    started = time.perf_counter()
    with transaction.atomic():
        counts = scores_update_dirty(ids, now + timedelta(days=1, minutes=1))
    seconds = time.perf_counter() - started
    figures.append(
        Figure(
            key="score_dirty",
            label=f"incremental rescoring, {len(ids):,} dirty leads",
            value=seconds,
            unit="s",
            target=None,
            detail=f"scores_update_dirty (ledger difference and scores, the part of each tick's incremental "
            f"evaluation that runs before the pools): {counts.get('scored', 0):,} scored, "
            f"{counts.get('score_changed', 0):,} changed",
        )
    )
    return figures


def _as_the_tick_does(now: datetime) -> ScoreRun:
    """The scores step of the next tick after an edit (`scores_tick`): everyone rescored, after the
    ledger of the rules whose edit needs it is rebuilt. Returns the run it recorded."""
    if not scores_tick(now)["full"]:
        raise RuntimeError("an edited scoring rule left no recomputation due")
    return ScoreRun.objects.filter(kind=ScoreRun.Kind.FULL).latest("started_at")


def bench_rule_recount(*, now: datetime, log: Log) -> Figure | None:
    """A behaviour rule told to count other events (its `where` narrowed): its ledger entries are
    rebuilt (most deleted, the rest renumbered), then everyone is rescored, as the next tick does."""
    behaviour = ScoringRule.objects.filter(kind=ScoringRule.Kind.BEHAVIOUR, active=True, where={})
    rule = behaviour.order_by("pk").first()
    if rule is None:
        return None
    before = ScoreEntry.objects.filter(rule=rule).count()
    rule.where = {"form": "whitepaper"}
    scoring_rule_save(rule=rule)
    log(f"scores: the rule {rule.name} narrowed to whitepapers, what the next tick does…")
    run = _as_the_tick_does(now)
    after = ScoreEntry.objects.filter(rule=rule).count()
    return Figure(
        key="score_full_recount",
        label="full score recompute after a rule counts other events",
        value=run.seconds,
        unit="s",
        target=None,
        detail=f"{rule.name} ({rule.event_type}) narrowed to whitepapers: its ledger rebuilt ({before:,} "
        f"entries before, {after:,} after), {run.leads:,} leads rescored, {run.changed:,} changed",
    )
