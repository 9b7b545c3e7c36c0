"""The engine's tick: one full cycle, calling each app's services in order, as of one `now`.

Each step re-derives its work from the tables, so a tick that runs twice at the same instant, or two
ticks at once, change nothing the second time. Later issues add their steps (pools, scores, silence,
enrollments, due touches, dispatch, SLA, webhooks) to STEPS.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.utils.timezone import now as timezone_now

logger = logging.getLogger(__name__)

# How long the record of engine ticks is kept (one a minute).
TICK_HISTORY = timedelta(days=7)

TickStep = Callable[..., dict[str, int] | None]


@dataclass
class TickReport:
    now: datetime
    steps: dict[str, dict[str, int]] = field(default_factory=dict)
    seconds: float = 0.0


def _steps() -> list[tuple[str, TickStep]]:
    # In order: what later steps read comes first. Scoring, sequences, channels and SLA add theirs.
    from channels.autotags import autotags_tick
    from channels.inbound import inbound_process_pending
    from channels.webhooks import webhooks_tick
    from leads.pools import pools_tick
    from scoring.services import scores_tick
    from sequences.engine import sequences_tick
    from workspace.services import workspace_tick

    # The leads marked dirty are rescored inside pools_tick (before the pools read the scores); the
    # scores step is the nightly or after-a-change recomputation of everyone.
    return [
        ("inbound", inbound_process_pending),  # lost callback tasks: their events feed everything below
        ("autotags", autotags_tick),  # reads the dirty leads before the pools take them
        ("pools", pools_tick),
        ("scores", scores_tick),
        ("sequences", sequences_tick),
        ("sla", workspace_tick),  # staff tasks done and calls logged above count as follow-ups
        ("webhooks", webhooks_tick),
    ]


def tick(*, now: datetime | None = None, inline: bool = True) -> TickReport:
    """Run one engine cycle as of `now` (default: the real clock) and record it as a TickRun.

    `inline`: due touches are sent in this process (`manage.py tick`, the embedded demo); otherwise
    in batches by Celery workers (beat's tick)."""
    from nurture.models import TickRun

    now = now or timezone_now()
    report = TickReport(now=now)
    started_at = timezone_now()
    started = time.monotonic()
    error = ""
    try:
        for name, step in _steps():
            takes_inline = name in ("sequences", "webhooks")
            report.steps[name] = (step(now, inline=inline) if takes_inline else step(now)) or {}
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        report.seconds = time.monotonic() - started
        TickRun.objects.create(
            now=now, started_at=started_at, seconds=report.seconds, steps=report.steps, error=error
        )
        TickRun.objects.filter(started_at__lt=started_at - TICK_HISTORY).delete()
        logger.info("tick as of %s done in %.3fs: %s", now.isoformat(), report.seconds, report.steps)
    return report
