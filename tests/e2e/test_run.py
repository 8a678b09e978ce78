"""``valueos run`` (``make run``): everything in one command, and SIGTERM stops everything.

A real ``valueos run`` in a temporary working directory (its ``.valueos/``: embedded
PostgreSQL, anvil state, JWT key), on a free port, with no ``DATABASE_URL`` nor
``ETH_RPC_URL``: it must serve the API, anchor an epoch on the local anvil through the
worker (the API lists it FINALIZED), and on SIGTERM leave no process behind: the API, the
worker, anvil, and the embedded PostgreSQL (with its backends) that ``run`` started.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
OUTSIDE = {
    "DATABASE_URL",
    "ETH_RPC_URL",
    "REDIS_URL",
    "VALUEOS_DATA_DIR",
    "VALUEOS_ANCHOR_CONTRACT",
    "VALUEOS_ANCHOR_CONTRACT_FILE",
    "VALUEOS_ANCHOR_KEY",
    "VALUEOS_ANCHORING",
    "VALUEOS_JWT_SECRET",
    "VALUEOS_JWT_KEY_FILE",
    "XDG_RUNTIME_DIR",  # unset: platformdirs would warn on every command without the fix
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(condition: Callable[[], bool], deadline_s: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}:\n{log.read_text()[-4000:]}")
        time.sleep(0.2)


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _start_run(work: Path, port: int, *args: str, **extra_env: str) -> subprocess.Popen[bytes]:
    """``valueos run`` in ``work`` (its output in work/run.log), once its banner is out."""
    env = {k: v for k, v in os.environ.items() if k not in OUTSIDE}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    log = work / "run.log"
    with log.open("w") as out:
        run = subprocess.Popen(  # noqa: S603 - our own command line
            [sys.executable, "-m", "valueos", "run", "--port", str(port), *args],
            cwd=work,
            env=env | extra_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for(
            lambda: "Value OS is running" in log.read_text() or run.poll() is not None,
            90,
            "the banner",
            log,
        )
        assert run.poll() is None, log.read_text()
    except BaseException:
        _interrupt(run)
        raise
    return run


def _interrupt(run: subprocess.Popen[bytes]) -> None:
    """Stop a run that failed its test: SIGTERM (it cleans up), SIGKILL if it hangs."""
    if run.poll() is None:
        run.send_signal(signal.SIGTERM)
        try:
            run.wait(timeout=30)
        except subprocess.TimeoutExpired:
            run.kill()
            run.wait()


def test_run_starts_everything_and_sigterm_stops_everything() -> None:
    # short: the embedded server's Unix socket lives in its data directory
    work = Path(tempfile.mkdtemp(prefix="vo-run-", dir="/tmp"))
    port = _free_port()
    log = work / "run.log"
    started: list[psutil.Process] = []
    base = f"http://127.0.0.1:{port}"
    run: subprocess.Popen[bytes] | None = None
    try:
        # the worker's first run seals and anchors epoch 1, and passes again soon for finality
        run = _start_run(work, port, VALUEOS_SEAL_EMPTY="1", VALUEOS_ANCHOR_INTERVAL_S="2")
        text = log.read_text()
        assert f"{base}/schema/swagger" in text
        assert "RuntimeDirWarning" not in text
        key = re.search(r"vo_[A-Za-z0-9_-]+", text)
        assert key, "the first start prints the admin's API key"

        def anchored() -> bool:
            answer = httpx.get(
                f"{base}/api/v1/anchors", headers={"X-API-Key": key.group(0)}, timeout=5
            )
            assert answer.status_code == 200, answer.text
            return any(
                a["epoch"] == 1 and a["status"] == "FINALIZED" for a in answer.json()["anchors"]
            )

        _wait_for(anchored, 60, "epoch 1 FINALIZED on the local anvil", log)

        started = psutil.Process(run.pid).children(recursive=True)
        names = sorted(p.name() for p in started)
        commands = [" ".join(p.cmdline()) for p in started]
        assert "anvil" in names, names
        assert any("valueos serve" in c for c in commands), commands
        assert any("valueos worker" in c for c in commands), commands
        postmaster_pid = int((work / ".valueos/pgdata/postmaster.pid").read_text().split()[0])
        postmaster = psutil.Process(postmaster_pid)  # pg_ctl detached it from `run`
        started += [postmaster, *postmaster.children(recursive=True)]

        run.send_signal(signal.SIGTERM)
        assert run.wait(timeout=60) == 0, log.read_text()[-4000:]
        _wait_for(lambda: not any(_alive(p) for p in started), 30, "every process to be gone", log)
        assert not (work / ".valueos/pgdata/postmaster.pid").exists()
        assert "valueos run: stopped" in log.read_text()
    finally:
        if run is not None:
            _interrupt(run)
        for proc in started:  # leftovers of a failed run, by pid (psutil checks identity)
            if _alive(proc):
                proc.kill()
        shutil.rmtree(work, ignore_errors=True)


def test_a_child_that_dies_stops_the_others_and_run_fails() -> None:
    work = Path(tempfile.mkdtemp(prefix="vo-run-", dir="/tmp"))
    port = _free_port()
    log = work / "run.log"
    started: list[psutil.Process] = []
    run: subprocess.Popen[bytes] | None = None
    try:
        run = _start_run(work, port, "--no-anchoring")
        _wait_for(lambda: "housekeeping only" in log.read_text(), 30, "the worker", log)
        started = psutil.Process(run.pid).children(recursive=True)
        assert "anvil" not in [p.name() for p in started], "no chain with --no-anchoring"
        worker = next(p for p in started if "valueos worker" in " ".join(p.cmdline()))
        postmaster_pid = int((work / ".valueos/pgdata/postmaster.pid").read_text().split()[0])
        started.append(psutil.Process(postmaster_pid))

        worker.kill()
        assert run.wait(timeout=60) == 1, log.read_text()[-4000:]
        assert "worker exited with code -9; stopping the others" in log.read_text()
        _wait_for(lambda: not any(_alive(p) for p in started), 30, "every process to be gone", log)
    finally:
        if run is not None:
            _interrupt(run)
        for proc in started:
            if _alive(proc):
                proc.kill()
        shutil.rmtree(work, ignore_errors=True)
