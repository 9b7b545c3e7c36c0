"""The Celery app: tasks carry ids, beat only says "tick" (schedules in nurture/schedules.py)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "nurture.settings")

app = Celery("nurture")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.on_after_finalize.connect
def _setup_schedule(sender: Celery, **kwargs: object) -> None:
    from nurture.schedules import BEAT_SCHEDULE

    sender.conf.beat_schedule = BEAT_SCHEDULE
