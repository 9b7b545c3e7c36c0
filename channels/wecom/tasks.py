"""Celery tasks of the WeCom callbacks: ids in, a service does the work."""

from celery import shared_task
from django.utils.timezone import now as timezone_now

from channels.wecom.inbound import wecom_payload_process


@shared_task(ignore_result=True, acks_late=True)
def wecom_inbound_process(payload_id: int) -> None:
    """Act on one stored WeCom callback (a second delivery does nothing; a failure waits for the tick)."""
    wecom_payload_process(payload_id=payload_id, now=timezone_now())
