from celery import shared_task

from nurture.engine import tick


@shared_task(ignore_result=True, acks_late=True)
def engine_tick() -> None:
    """One engine cycle as of the real clock; safe to run twice or concurrently."""
    tick(inline=False)
