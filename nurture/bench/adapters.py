"""The counting no-op adapter of `bench dispatch`: it sends nothing and records every idempotency key
it is offered, with the process and the wall-clock time, where the bench reads them back after the
run. Routed to through `NURTURE_CHANNEL_ADAPTERS` (the environment of the Celery workers the bench
starts, or the settings the forked worker processes inherit)."""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass, field

from django.db import connection

from channels.adapters.base import BaseAdapter, OutgoingMessage, SendResult, SendStatus

COUNTING_ADAPTER = "nurture.bench.adapters.CountingAdapter"
# Where the sends of a run are counted: "redis:<key prefix>" (with REDIS_URL) or "table".
SENDS_ENV = "NURTURE_BENCH_SENDS"
SENDS_TABLE = "bench_dispatch_sends"


def _redis(url: str):
    import redis

    return redis.Redis.from_url(url)


class CountingAdapter(BaseAdapter):
    """Accepts every message like `NoopAdapter`, and counts it: one Redis RPUSH per send ("pid time
    key" onto the run's list) when the bench runs with REDIS_URL, else one INSERT into an unlogged
    table of the bench database. Nothing is buffered, so a worker that dies loses no count."""

    channel = "console"
    # It stands for `NoopAdapter` (and the console, and providers that deduplicate by key): results are
    # written a batch at a time, as they are for those. Before, each send's result was its own UPDATE.
    honours_idempotency_key = True

    def __init__(self) -> None:
        self._where = os.environ.get(SENDS_ENV, "")
        self._client = None
        if self._where.startswith("redis:"):
            self._client = _redis(os.environ["REDIS_URL"])
            self._list = f"{self._where.removeprefix('redis:')}:sends"

    def configured(self) -> bool:
        return bool(self._where)

    def send(self, message: OutgoingMessage) -> SendResult:
        at, pid = time.time(), os.getpid()  # the pid at the call: a forked worker is not its parent
        if self._client is not None:
            self._client.rpush(self._list, f"{pid} {at:.6f} {message.idempotency_key}")
        else:
            with connection.cursor() as cursor:
                cursor.execute(
                    f"INSERT INTO {SENDS_TABLE} (key, pid, at) VALUES (%s, %s, %s)",
                    [message.idempotency_key, pid, at],
                )
        return SendResult(status=SendStatus.SENT, provider_ref=message.idempotency_key)


@dataclass
class Sends:
    """What the adapter recorded: sends per key and per process, first and last send (epoch s)."""

    keys: Counter[str] = field(default_factory=Counter)
    workers: dict[str, int] = field(default_factory=dict)
    first: float | None = None
    last: float | None = None

    @property
    def total(self) -> int:
        return sum(self.keys.values())

    @property
    def duplicates(self) -> int:
        """Sends of a key beyond its first."""
        return sum(n - 1 for n in self.keys.values() if n > 1)


def _list(where: str) -> str:
    return f"{where.removeprefix('redis:')}:sends"


def sends_start(*, where: str, redis_url: str = "") -> None:
    """Start counting from nothing: the run's Redis list deleted, or the table (re)created."""
    if where.startswith("redis:"):
        _redis(redis_url).delete(_list(where))
        return
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {SENDS_TABLE}")
        cursor.execute(
            f"CREATE UNLOGGED TABLE {SENDS_TABLE} "
            "(key text NOT NULL, pid integer NOT NULL, at double precision NOT NULL)"
        )


def sends_count(*, where: str, redis_url: str = "") -> int:
    """Sends so far, a key sent twice counting twice (cheap: the bench polls it while workers run)."""
    if where.startswith("redis:"):
        return int(_redis(redis_url).llen(_list(where)))
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {SENDS_TABLE}")
        return int(cursor.fetchone()[0])


def sends_read(*, where: str, redis_url: str = "", clear: bool = True) -> Sends:
    """Everything recorded; with `clear`, the run's Redis list or table is removed afterwards."""
    rows: list[tuple[str, float, str]] = []
    if where.startswith("redis:"):
        client = _redis(redis_url)
        for entry in client.lrange(_list(where), 0, -1):
            pid, at, key = entry.decode().split(" ", 2)
            rows.append((pid, float(at), key))
        if clear:
            client.delete(_list(where))
    else:
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT pid::text, at, key FROM {SENDS_TABLE}")
            rows = list(cursor.fetchall())
            if clear:
                cursor.execute(f"DROP TABLE {SENDS_TABLE}")
    return Sends(
        keys=Counter(key for _, _, key in rows),
        workers=dict(Counter(pid for pid, _, _ in rows)),
        first=min((at for _, at, _ in rows), default=None),
        last=max((at for _, at, _ in rows), default=None),
    )
