from celery import shared_task
from django.utils.dateparse import parse_datetime

from sequences.dispatch import touches_dispatch


@shared_task(ignore_result=True, acks_late=True)
def touches_dispatch_task(touch_ids: list[int], now: str | None = None) -> None:
    """Send a batch of due touches (due as of the tick's `now`); a second delivery of the same batch
    sends nothing twice."""
    touches_dispatch(touch_ids=touch_ids, now=parse_datetime(now) if now else None)
