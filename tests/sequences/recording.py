"""A recording adapter for the engine's tests: it keeps every call by idempotency key, in Redis when
REDIS_URL is set (so a Celery worker in another process records where the test reads), else in
memory. Like the providers it stands for, it honours the key: a key sent again is not delivered again
(but the second call is counted, so a test can tell)."""

from __future__ import annotations

import os
import threading
from collections import Counter

from channels.adapters.base import BaseAdapter, OutgoingMessage, SendResult, SendStatus

_PREFIX = "test:recording:"
_lock = threading.Lock()
_memory: Counter[str] = Counter()
_texts: dict[str, str] = {}


def _redis():
    url = os.environ.get("REDIS_URL")
    if not url:
        return None
    import redis

    return redis.Redis.from_url(url)


def recording_reset() -> None:
    r = _redis()
    if r is not None:
        keys = list(r.scan_iter(f"{_PREFIX}*"))
        if keys:
            r.delete(*keys)
    with _lock:
        _memory.clear()
        _texts.clear()


def recording_calls() -> Counter[str]:
    """Calls per idempotency key."""
    r = _redis()
    if r is not None:
        raw = r.hgetall(f"{_PREFIX}calls")
        return Counter({k.decode(): int(v) for k, v in raw.items()})
    with _lock:
        return Counter(_memory)


def recording_texts() -> dict[str, str]:
    r = _redis()
    if r is not None:
        return {k.decode(): v.decode() for k, v in r.hgetall(f"{_PREFIX}texts").items()}
    with _lock:
        return dict(_texts)


class RecordingAdapter(BaseAdapter):
    channel = "console"
    honours_idempotency_key = True

    def send(self, message: OutgoingMessage) -> SendResult:
        r = _redis()
        if r is not None:
            r.hincrby(f"{_PREFIX}calls", message.idempotency_key, 1)
            r.hsetnx(f"{_PREFIX}texts", message.idempotency_key, message.text)
        else:
            with _lock:
                _memory[message.idempotency_key] += 1
                _texts.setdefault(message.idempotency_key, message.text)
        return SendResult(status=SendStatus.SENT, provider_ref=f"rec:{message.idempotency_key}")
