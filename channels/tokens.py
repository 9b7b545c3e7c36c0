"""Provider access tokens (WeCom, WeChat official account), cached and refreshed once for everybody.

A token lives in Redis (settings.REDIS_URL) under the caller's key until a few minutes before the
provider says it expires; without Redis (SQLite, eager test mode) in a dict of this process. A missing
token is fetched behind a lock (Redis `lock`, else a threading lock), so that many workers or threads
that find it expired at the same moment call the provider's token endpoint once: the others wait and
read what the first one stored (providers rate-limit their token endpoints and refuse a storm of
fetches).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from functools import cache

from django.conf import settings

from channels.adapters.base import RetryableError

# Stop using a token this long before the provider's expiry (clock skew, calls in flight).
EARLY_SECONDS = 300
# How long a refresher may hold the lock, and how long the others wait for it.
LOCK_SECONDS = 30

# Deletes KEYS[1] only when it still holds ARGV[1] (compare-and-delete).
_DELETE_IF_EQUAL = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""

_local: dict[str, tuple[str, float]] = {}
_local_guard = threading.Lock()
_local_locks: dict[str, threading.Lock] = {}


@cache
def _redis(url: str):
    import redis

    return redis.Redis.from_url(url, decode_responses=True)


def _ttl(expires_in: int) -> int:
    """Seconds to keep a token the provider says lives `expires_in` seconds."""
    return max(1, expires_in - EARLY_SECONDS if expires_in > 2 * EARLY_SECONDS else expires_in // 2)


def token_get(*, key: str, fetch: Callable[[], tuple[str, int]]) -> str:
    """The cached token under `key`, or a fresh one from `fetch()` → (token, expires_in seconds),
    fetched once however many callers find it missing at the same time."""
    url = settings.REDIS_URL
    if url:
        return _token_get_redis(_redis(url), key, fetch)
    return _token_get_local(key, fetch)


def token_invalidate(*, key: str, token: str) -> None:
    """Forget `token` (the provider refused it) — only if it is still the cached one, so that a caller
    who held an old token does not throw away the fresh one somebody else just fetched."""
    url = settings.REDIS_URL
    if url:
        _redis(url).eval(_DELETE_IF_EQUAL, 1, key, token)
        return
    with _local_guard:
        cached = _local.get(key)
        if cached and cached[0] == token:
            del _local[key]


def tokens_reset() -> None:
    """Forget the in-process tokens (tests); Redis keys are the caller's to delete."""
    with _local_guard:
        _local.clear()


def _token_get_redis(client, key: str, fetch: Callable[[], tuple[str, int]]) -> str:
    import redis

    token = client.get(key)
    if token:
        return token
    try:
        with client.lock(f"{key}:lock", timeout=LOCK_SECONDS, blocking_timeout=LOCK_SECONDS):
            token = client.get(key)  # somebody refreshed it while we waited
            if token:
                return token
            token, expires_in = fetch()
            client.set(key, token, ex=_ttl(expires_in))
            return token
    except redis.exceptions.LockError as exc:
        raise RetryableError(f"token refresh lock {key}: {exc}", retry_after=5) from exc
    except redis.exceptions.RedisError as exc:
        raise RetryableError(f"token cache {key}: {exc}", retry_after=5) from exc


def _token_get_local(key: str, fetch: Callable[[], tuple[str, int]]) -> str:
    def cached() -> str | None:
        with _local_guard:
            entry = _local.get(key)
            if entry and entry[1] > time.time():
                return entry[0]
            return None

    token = cached()
    if token:
        return token
    with _local_guard:
        lock = _local_locks.setdefault(key, threading.Lock())
    with lock:
        token = cached()
        if token:
            return token
        token, expires_in = fetch()
        with _local_guard:
            _local[key] = (token, time.time() + _ttl(expires_in))
        return token
