"""``valueos serve`` as ``make run`` starts it: embedded PostgreSQL, first admin, SIGTERM.

A real process on a free loopback port, with no ``DATABASE_URL``: the embedded server is
started in a data directory of its own and must be stopped when ``serve`` is (a lingering
PostgreSQL after Ctrl-C or ``docker stop`` is a bug users see).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(condition: object, deadline_s: float, what: str) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def test_serve_on_embedded_postgres_prints_admin_key_and_stops_cleanly(tmp_path: Path) -> None:
    # a short path: the embedded server's Unix socket lives in its data directory
    data = Path(f"/tmp/vo-serve-{os.getpid()}")  # noqa: S108 - socket path length limit
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env |= {
        "VALUEOS_DATA_DIR": str(data),
        "VALUEOS_JWT_KEY_FILE": str(tmp_path / "jwt.key"),
        "VALUEOS_PORT": str(port),
    }
    log = (tmp_path / "serve.log").open("w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "valueos.cli", "serve"], env=env, stdout=log, stderr=log
    )
    try:

        def ready() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200
            except httpx.HTTPError:
                return proc.poll() is not None  # stop waiting if it died

        _wait_for(ready, 120, "/ready")
        assert proc.poll() is None, Path(log.name).read_text()
        key = re.search(r"vo_[A-Za-z0-9_-]+", Path(log.name).read_text())
        assert key, "the first admin's API key is printed"
        me = httpx.get(f"http://127.0.0.1:{port}/api/v1/me", headers={"X-API-Key": key.group(0)})
        assert me.status_code == 200, (key.group(0), me.text, Path(log.name).read_text()[:1500])
        assert me.json()["role"] == "ADMIN"
        # the real server names no software and lets no cache keep an answer
        assert "server" not in me.headers and me.headers["cache-control"] == "no-store"
        assert (data / "postmaster.pid").exists()

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        # pgserver's exit hook stopped the embedded PostgreSQL
        _wait_for(lambda: not (data / "postmaster.pid").exists(), 30, "PostgreSQL to stop")
    finally:
        if proc.poll() is None:
            proc.kill()
        # stop a leftover server whatever happened above, then drop its data
        leftover = ["pkill", "-f", "--", f"-D {data}"]
        subprocess.run(leftover, check=False)  # noqa: S603
        shutil.rmtree(data, ignore_errors=True)
