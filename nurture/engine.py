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
from datetime import datetime

from django.utils.timezone import now as timezone_now

logger = logging.getLogger(__name__)

TickStep = Callable[[datetime], dict[str, int] | None]


@dataclass
class TickReport:
    now: datetime
    steps: dict[str, dict[str, int]] = field(default_factory=dict)
    seconds: float = 0.0


def _steps() -> list[tuple[str, TickStep]]:
    # The foundation has no periodic work yet; pools, scoring, sequences, channels and SLA add theirs.
    return []


def tick(*, now: datetime | None = None) -> TickReport:
    """Run one engine cycle as of `now` (default: the real clock)."""
    now = now or timezone_now()
    report = TickReport(now=now)
    started = time.monotonic()
    for name, step in _steps():
        result = step(now) or {}
        report.steps[name] = result
    report.seconds = time.monotonic() - started
    logger.info("tick at %s done in %.3fs: %s", now.isoformat(), report.seconds, report.steps)
    return report
