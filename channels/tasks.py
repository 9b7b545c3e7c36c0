"""Celery tasks of the channels; each area's tasks live beside it and are imported here so the worker
finds them (Celery autodiscovers `<app>.tasks`)."""
