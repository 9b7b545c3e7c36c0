"""The API over real HTTP: gunicorn serving the bench database, several clients posting at once."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
from django.conf import settings
from django.db import connection


@dataclass
class HttpRun:
    seconds: float
    answers: list[dict]
    failures: list[str]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _database_url() -> str:
    """DATABASE_URL of the database the default connection points at (the bench's)."""
    conf = connection.settings_dict
    user = quote(conf.get("USER") or "", safe="")
    password = quote(conf.get("PASSWORD") or "", safe="")
    auth = f"{user}:{password}@" if password else f"{user}@" if user else ""
    host = conf.get("HOST") or "127.0.0.1"
    port = f":{conf['PORT']}" if conf.get("PORT") else ""
    return f"postgres://{auth}{host}{port}/{conf['NAME']}"


@contextmanager
def gunicorn_serving(*, workers: int) -> Iterator[str]:
    """Run `gunicorn nurture.wsgi` with `workers` sync workers on the bench database; yield its URL.
    The server is stopped (by its own process id) when the block ends."""
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request on the terminal
    port = _free_port()
    env = {**os.environ, "DATABASE_URL": _database_url(), "DEBUG": "0"}
    log = Path(settings.BASE_DIR) / "var" / "bench-gunicorn.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as output:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "nurture.wsgi:application",
                f"--workers={workers}",
                f"--bind=127.0.0.1:{port}",
                "--timeout=120",
            ],
            cwd=settings.BASE_DIR,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    httpx.get(f"{url}/api/schema/", timeout=5)
                    break
                except httpx.TransportError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"gunicorn did not start; see {log}") from None
                    time.sleep(0.2)
            yield url
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def post_concurrently(*, url: str, key: str, path: str, bodies: list[bytes], clients: int) -> HttpRun:
    """POST the bodies with `clients` connections at once, each taking the next body when free."""
    lock = threading.Lock()
    queue = iter(enumerate(bodies))
    answers: list[dict | None] = [None] * len(bodies)
    failures: list[str] = []

    def client_loop() -> None:
        headers = {"Authorization": f"Token {key}", "Content-Type": "application/json"}
        with httpx.Client(base_url=url, headers=headers, timeout=300) as client:
            while True:
                with lock:
                    item = next(queue, None)
                if item is None:
                    return
                index, body = item
                response = client.post(path, content=body)
                if response.status_code == 200:
                    answers[index] = response.json()
                else:
                    failures.append(f"{response.status_code}: {' '.join(response.text.split())[:160]}")

    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    return HttpRun(seconds=seconds, answers=[a for a in answers if a is not None], failures=failures)
