"""The sequence part of the tick, in the order the issue gives: exits → completion → triggers and
enrollment → due steps → stale touches and dead workers → dispatch → task deadlines."""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.db import transaction

from sequences.confirm import touches_confirm_poll
from sequences.dispatch import steps_advance
from sequences.sending import (
    touches_dispatch,
    touches_due_batches,
    touches_reconcile,
    touches_skip_stale,
)
from sequences.services import (
    sequences_complete,
    sequences_exit,
    sequences_lock,
    sequences_unlock,
    tasks_escalate,
)
from sequences.triggers import sequences_trigger


def sequences_tick(now: datetime, *, inline: bool = True) -> dict[str, int]:
    """One pass of the sequence engine as of `now`. `inline` sends in this process (`manage.py
    tick`); otherwise batches of touch ids go to Celery workers after the commit."""
    if not sequences_lock():
        return {"locked": 1}  # another tick is running these steps: it will do them
    try:
        report: dict[str, int] = {}
        for name, counts in (
            ("exited", sequences_exit(now=now)),
            ("completion", sequences_complete(now=now)),
            ("triggers", sequences_trigger(now=now)),
            ("steps", steps_advance(now=now)),
        ):
            for key, value in counts.items():
                if value:
                    report[f"{name}.{key}"] = value
        report["stale"] = touches_skip_stale(now=now)
        for key, value in touches_reconcile(now=now).items():
            report[key] = value
        for key, value in touches_confirm_poll(now=now).items():
            report[f"confirm.{key}"] = value
        due = touches_due_batches(now=now, size=settings.NURTURE_DISPATCH_BATCH)
        report["due"] = sum(len(batch) for batch in due)
        if inline:
            for batch in due:
                for key, value in touches_dispatch(touch_ids=batch, now=now).items():
                    report[f"dispatch.{key}"] = report.get(f"dispatch.{key}", 0) + value
        else:
            from sequences.tasks import touches_dispatch_task

            for batch in due:
                transaction.on_commit(lambda batch=batch: touches_dispatch_task.delay(batch, now.isoformat()))
        report.update({f"tasks.{k}": v for k, v in tasks_escalate(now=now).items()})
        return {k: v for k, v in report.items() if v}
    finally:
        sequences_unlock()
