"""The worker processes of `bench dispatch`: two Celery workers fed by the tick (with REDIS_URL), or
two forked processes fed from a shared queue (without), the console channel routed to the counting
adapter in both, and the wait until every due touch was sent or the sends stopped coming."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connections
from django.test.utils import override_settings

from channels.registry import adapters_reset
from nurture.bench.adapters import COUNTING_ADAPTER, SENDS_ENV, Sends, sends_count, sends_read, sends_start
from nurture.bench.http import _database_url
from sequences.dispatch import batches, touches_dispatch, touches_due_ids
from sequences.engine import sequences_tick
from sequences.models import PENDING_STATES, Sequence, Touch

TASK = "sequences.tasks.touches_dispatch_task"
STALL_SECONDS = 60  # no new send for this long: the rest is lost


@dataclass
class SendRun:
    how: str
    started: float  # epoch seconds: the first batch handed to the workers
    handout_seconds: float
    batches: int
    sends: Sends
    problem: str = ""
    tick_report: dict[str, int] = field(default_factory=dict)


@contextmanager
def _counting(where: str) -> Iterator[None]:
    """The console channel goes to the counting adapter, here and in processes forked from here."""
    previous = os.environ.get(SENDS_ENV)
    os.environ[SENDS_ENV] = where
    adapters = {**settings.NURTURE_CHANNEL_ADAPTERS, "console": COUNTING_ADAPTER}
    try:
        with override_settings(NURTURE_CHANNEL_ADAPTERS=adapters):
            adapters_reset()
            yield
    finally:
        adapters_reset()
        if previous is None:
            os.environ.pop(SENDS_ENV, None)
        else:
            os.environ[SENDS_ENV] = previous


def _wait_for_sends(
    *, where: str, expected: int, sequence: Sequence, workers: list[Any], alive: Callable[[Any], bool]
) -> str:
    """Until every due key was sent and no touch is pending; "" or what went wrong."""
    seen, changed = -1, time.monotonic()
    pending = Touch.objects.filter(sequence=sequence, state__in=PENDING_STATES)
    while True:
        sent = sends_count(where=where, redis_url=settings.REDIS_URL or "")
        if sent >= expected and not pending.exists():
            return ""
        if sent != seen:
            seen, changed = sent, time.monotonic()
        elif time.monotonic() - changed > STALL_SECONDS:
            return f"no send for {STALL_SECONDS} s after {sent:,} sends of {expected:,} due"
        if not all(alive(w) for w in workers):
            return f"a worker exited after {sent:,} sends of {expected:,} due"
        time.sleep(0.25)


@contextmanager
def _celery_workers(*, count: int, queue: str, env: dict[str, str]) -> Iterator[list[subprocess.Popen]]:
    """`count` Celery workers (`--pool=solo`: one process each) consuming `queue`, ready when yielded;
    stopped by their process ids at the end. Their output goes to var/bench-celery-N.log."""
    folder = Path(settings.BASE_DIR) / "var"
    folder.mkdir(parents=True, exist_ok=True)
    workers: list[subprocess.Popen] = []
    outputs = []
    paths = [folder / f"bench-celery-{i + 1}.log" for i in range(count)]
    try:
        for i, path in enumerate(paths):
            output = path.open("w")
            outputs.append(output)
            workers.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "celery",
                        "-A",
                        "nurture",
                        "worker",
                        "--pool=solo",
                        f"--queues={queue}",
                        f"--hostname=bench{i + 1}-{os.getpid()}@%h",
                        "--loglevel=INFO",
                        "--without-mingle",
                        "--without-gossip",
                        "--without-heartbeat",
                    ],
                    cwd=settings.BASE_DIR,
                    env=env,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        deadline = time.monotonic() + 120
        for worker, path in zip(workers, paths, strict=True):
            while " ready." not in path.read_text(errors="replace"):
                if worker.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"a Celery worker did not start; see {path}")
                time.sleep(0.2)
        yield workers
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        for output in outputs:
            output.close()


def send_with_celery(*, now: datetime, expected: int, sequence: Sequence, workers: int) -> SendRun:
    """Celery workers fed by the tick as in production: `sequences_tick(now, inline=False)` hands the
    due touches out in batches of NURTURE_DISPATCH_BATCH, published to a queue of this run's own."""
    import redis
    from celery.signals import before_task_publish

    from nurture.celery import app

    queue = f"bench-dispatch-{os.getpid()}"
    where = f"redis:bench:dispatch:{os.getpid()}"
    redis_url = settings.REDIS_URL
    sends_start(where=where, redis_url=redis_url)
    env = {
        **os.environ,
        "DATABASE_URL": _database_url(),
        "REDIS_URL": redis_url,
        "NURTURE_CHANNEL_ADAPTERS": json.dumps({"console": COUNTING_ADAPTER}),
        SENDS_ENV: where,
        "DEBUG": "0",
    }
    published: list[float] = []

    def on_publish(sender: str | None = None, **kwargs: Any) -> None:
        if sender == TASK:
            published.append(time.time())

    with _counting(where), _celery_workers(count=workers, queue=queue, env=env) as processes:
        default_queue = app.conf.task_default_queue
        app.conf.task_default_queue = queue
        before_task_publish.connect(on_publish, weak=False)
        try:
            started = time.perf_counter()
            report = sequences_tick(now, inline=False)
            handout = time.perf_counter() - started
        finally:
            before_task_publish.disconnect(on_publish)
            app.conf.task_default_queue = default_queue
        problem = _wait_for_sends(
            where=where,
            expected=expected,
            sequence=sequence,
            workers=processes,
            alive=lambda p: p.poll() is None,
        )
    # Read after the workers stopped, so that a send made while stopping is counted too.
    sends = sends_read(where=where, redis_url=redis_url)
    redis.Redis.from_url(redis_url).delete(f"_kombu.binding.{queue}")
    return SendRun(
        how=f"{workers} Celery workers (--pool=solo, one process each) fed by sequences_tick(inline=False)",
        started=published[0] if published else time.time(),
        handout_seconds=handout,
        batches=len(published),
        sends=sends,
        problem=problem,
        tick_report=report,
    )


def _dispatch_batches(queue: Any, now: datetime) -> None:
    """A forked worker: touches_dispatch on batches from the shared queue until None."""
    try:
        while (batch := queue.get()) is not None:
            touches_dispatch(touch_ids=batch, now=now)
    finally:
        connections.close_all()


def send_with_processes(*, now: datetime, expected: int, sequence: Sequence, workers: int) -> SendRun:
    """Without Redis (Celery would run eagerly, in this process): forked processes, each calling
    touches_dispatch on batches the tick's hand-out (`touches_due_ids`) put in a shared queue."""
    where = "table"
    sends_start(where=where)
    with _counting(where):
        started = time.perf_counter()
        ids = touches_due_ids(now=now)
        handout = time.perf_counter() - started
        context = multiprocessing.get_context("fork")
        queue = context.Queue()
        connections.close_all()  # each process opens its own
        processes = [context.Process(target=_dispatch_batches, args=(queue, now)) for _ in range(workers)]
        for process in processes:
            process.start()
        began = time.time()
        chunks = list(batches(ids, settings.NURTURE_DISPATCH_BATCH))
        for chunk in chunks:
            queue.put(chunk)
        for _ in processes:
            queue.put(None)
        problem = _wait_for_sends(
            where=where,
            expected=expected,
            sequence=sequence,
            workers=processes,
            alive=lambda p: p.is_alive() or p.exitcode == 0,
        )
        for process in processes:
            process.join(timeout=60)
    return SendRun(
        how=f"{workers} forked processes calling touches_dispatch on batches from a shared queue (no "
        "REDIS_URL, so no Celery)",
        started=began,
        handout_seconds=handout,
        batches=len(chunks),
        sends=sends_read(where=where),
        problem=problem,
    )
