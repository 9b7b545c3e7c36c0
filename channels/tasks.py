"""Celery tasks of the channels; each area's tasks live beside it and are imported here so the worker
finds them (Celery autodiscovers `<app>.tasks`)."""

from channels.webhook_tasks import webhooks_send_task  # noqa: F401
from channels.wechat_oa.inbound import wechat_oa_payload_process_task  # noqa: F401
from channels.wecom.tasks import wecom_inbound_process  # noqa: F401
