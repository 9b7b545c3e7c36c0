"""Per-provider rate limits: a token bucket in Redis shared by every worker (one bucket per provider and
account, the adapter's `rate_key`). Without Redis (the embedded demo, SQLite tests) the bucket lives in
this process."""

from __future__ import annotations

import threading
import time
from functools import cache

import redis
from django.conf import settings

# KEYS[1] the bucket; ARGV rate (tokens/s), burst, tokens wanted. Returns 0 when taken, else the
# milliseconds until that many tokens are there (nothing is taken then). Redis's own clock, so workers
# on several hosts agree.
_TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local wanted = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + (now - at) * rate / 1000)
local wait = 0
if tokens >= wanted then
  tokens = tokens - wanted
else
  wait = math.ceil((wanted - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return wait
"""


@cache
def _redis() -> redis.Redis | None:
    url = settings.REDIS_URL
    return redis.Redis.from_url(url) if url else None


@cache
def _script(client: redis.Redis):  # type: ignore[no-untyped-def]
    return client.register_script(_TAKE)


_local: dict[str, tuple[float, float]] = {}
_local_lock = threading.Lock()


def bucket_take(*, key: str, rate: float, burst: int, tokens: int = 1) -> float:
    """Take `tokens` from the bucket `key` refilled at `rate` per second up to `burst`. Returns 0.0
    when taken, else the seconds to wait before that many are there (nothing taken)."""
    tokens = min(tokens, burst)
    client = _redis()
    if client is not None:
        waited = _script(client)(keys=[f"nurture:bucket:{key}"], args=[rate, burst, tokens])
        return int(waited) / 1000
    with _local_lock:
        now = time.monotonic()
        level, at = _local.get(key, (float(burst), now))
        level = min(float(burst), level + (now - at) * rate)
        if level >= tokens:
            _local[key] = (level - tokens, now)
            return 0.0
        _local[key] = (level, now)
        return (tokens - level) / rate


def bucket_wait(*, key: str, rate: float, burst: int, tokens: int = 1, max_wait: float = 2.0) -> bool:
    """Take tokens, sleeping while the wait is short; False when it would be longer than `max_wait`
    (the caller puts the work back for later)."""
    deadline = time.monotonic() + max_wait
    while True:
        wait = bucket_take(key=key, rate=rate, burst=burst, tokens=tokens)
        if wait == 0:
            return True
        if time.monotonic() + wait > deadline:
            return False
        time.sleep(wait)


def buckets_reset() -> None:
    """Forget the in-process buckets and the Redis connection (tests that change settings)."""
    with _local_lock:
        _local.clear()
    _redis.cache_clear()
    _script.cache_clear()
