"""Celery task of the outbound webhooks: the tick claims due deliveries, a worker POSTs them."""

from celery import shared_task
from django.utils.dateparse import parse_datetime

from channels.webhooks import webhooks_send


@shared_task(ignore_result=True, acks_late=True)
def webhooks_send_task(delivery_ids: list[int], claimed_at: str) -> None:
    """POST deliveries the tick claimed at `claimed_at`; ones claimed again since are left alone."""
    at = parse_datetime(claimed_at)
    if at is not None:
        webhooks_send(delivery_ids=delivery_ids, claimed_at=at, restamp=True)
