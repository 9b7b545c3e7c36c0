"""Every periodic task of the product, in one place. Beat only says "tick"; the tick re-derives work."""

BEAT_SCHEDULE = {
    "engine-tick": {
        "task": "nurture.tasks.engine_tick",
        "schedule": 60.0,
        "options": {"expires": 55},
    },
}
