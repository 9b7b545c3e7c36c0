"""The embedded path of `make demo`: migrate, load_demo and rundemo on SQLite, each in a subprocess."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MANAGE = [sys.executable, str(ROOT / "manage.py")]

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def test_embedded_demo_migrates_loads_and_serves(tmp_path):
    env = {name: value for name, value in os.environ.items() if name not in ("DATABASE_URL", "REDIS_URL")}
    env.update(NURTURE_VAR_DIR=str(tmp_path), DEBUG="1", PYTHONUNBUFFERED="1")
    for command in (["migrate", "--noinput"], ["load_demo"]):
        done = subprocess.run(
            [*MANAGE, *command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stdout + done.stderr
    assert "sqlite" in done.stdout and "leads_created" in done.stdout
    assert (tmp_path / "nurture.sqlite3").exists()

    port = _free_port()
    log_path = tmp_path / "rundemo.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [*MANAGE, "rundemo", f"127.0.0.1:{port}"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        pending = {"/", "/admin/login/", "/static/nurture/site.css"}
        ticked = False
        deadline = time.monotonic() + 120
        while (pending or not ticked) and time.monotonic() < deadline and server.poll() is None:
            pending = {path for path in pending if _status(f"http://127.0.0.1:{port}{path}") != 200}
            ticked = "demo scheduler: first tick done" in log_path.read_text()
            time.sleep(0.3)
        assert not pending and ticked, (
            f"no 200 from {sorted(pending)}, ticked={ticked}:\n{log_path.read_text()}"
        )
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
