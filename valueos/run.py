"""``valueos run``: the whole system in one command, on embedded defaults (``make run``).

1. The database: ``DATABASE_URL``, or the embedded PostgreSQL in ``VALUEOS_DATA_DIR``
   (``.valueos/pgdata``) started by *this* process; migrated to head here, once, before
   anything else uses it.
2. Two child processes sharing it through ``DATABASE_URL``: ``valueos serve`` (the HTTP
   API; its first start creates an admin and prints its API key once) and ``valueos
   worker`` (every job; it starts the local dev anvil with LedgerAnchor deployed unless
   ``ETH_RPC_URL`` is set; ``--no-anchoring`` / ``VALUEOS_ANCHORING=off``: housekeeping
   only, no chain).
3. Once the API answers ``/health``: where to go.

Stopping: Ctrl-C (SIGINT) or SIGTERM sends SIGTERM to each child (the API shuts down, the
worker stops its anvil); after :data:`GRACE_S` seconds whatever is left in a child's
process group (each child leads its own) is killed; then this process exits and the
embedded PostgreSQL it started stops with it (pgserver's exit hook). If a child exits on
its own, the others are stopped the same way and ``run`` exits non-zero.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import urllib.error
import urllib.request

from sqlalchemy.engine import make_url

from api.settings import api_settings
from core.db import migrate, resolve_url
from core.settings import database_settings
from jobs.settings import parse_switch

#: seconds a child gets to stop after SIGTERM before its process group is killed
GRACE_S = 20.0
#: how long to wait for the API's /health before saying it is slow (it keeps running)
READY_S = 180.0
_POLL_S = 0.25


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - our own http URL
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


async def _wait_healthy(url: str, api: asyncio.subprocess.Process) -> bool:
    deadline = asyncio.get_running_loop().time() + READY_S
    while asyncio.get_running_loop().time() < deadline and api.returncode is None:
        if await asyncio.to_thread(_answers, url):
            return True
        await asyncio.sleep(_POLL_S)
    return False


def _banner(base: str, database: str, anchoring: str) -> str:
    return f"""
Value OS is running. Ctrl-C stops everything.
  API           {base}/api/v1  (probes: /health, /ready)
  API docs      {base}/schema/swagger  (spec: {base}/schema/openapi.json)
  admin access  the first start printed an admin API key above (shown once). A token:
                  curl -X POST -H 'X-API-Key: <key>' {base}/api/v1/auth/token
                lost the key? with the same environment, in another shell:
                  valueos create-user --role ADMIN   (prints a bearer token)
  database      {database}
  worker        {anchoring}; hold expiry, P2P housekeeping, limit-bucket pruning
""".rstrip()


async def _announce(
    base: str, api: asyncio.subprocess.Process, database: str, anchoring: str
) -> None:
    if await _wait_healthy(f"{base}/health", api):
        print(_banner(base, database, anchoring), flush=True)
    elif api.returncode is None:
        print(f"valueos run: the API does not answer {base}/health yet", flush=True)


async def _stop(children: dict[str, asyncio.subprocess.Process]) -> bool:
    """SIGTERM every child, wait up to GRACE_S, then kill what is left of each one's
    process group (grandchildren included). True if every child stopped in time."""
    if not children:
        return True
    for proc in children.values():
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
    waiting = [asyncio.ensure_future(proc.wait()) for proc in children.values()]
    _, late = await asyncio.wait(waiting, timeout=GRACE_S)
    for name, proc in children.items():
        if proc.returncode is None:
            print(f"valueos run: {name} did not stop within {GRACE_S:g}s; killing it", flush=True)
        # each child leads its own process group (start_new_session): this reaches a
        # grandchild its parent could not stop (e.g. anvil of a killed worker)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    for task in waiting:
        await task
    return not late


async def _supervise(
    commands: dict[str, list[str]], env: dict[str, str], base: str, database: str, anchoring: str
) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    children: dict[str, asyncio.subprocess.Process] = {}
    announce: asyncio.Future[None] | None = None
    code = 0
    try:
        for name, argv in commands.items():
            children[name] = await asyncio.create_subprocess_exec(
                *argv, env=env, start_new_session=True
            )
        print(
            "valueos run: "
            + ", ".join(f"{name} pid {proc.pid}" for name, proc in children.items()),
            flush=True,
        )
        announce = asyncio.ensure_future(_announce(base, children["api"], database, anchoring))
        exits = {asyncio.ensure_future(proc.wait()): name for name, proc in children.items()}
        stopping = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait([*exits, stopping], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task in exits:
                name = exits[task]
                print(
                    f"valueos run: {name} exited with code {children[name].returncode}; "
                    "stopping the others",
                    flush=True,
                )
                code = 1
        stopping.cancel()
    finally:
        if announce is not None:
            announce.cancel()
        if not await _stop(children):
            code = 1
        print(f"valueos run: stopped ({', '.join(children) or 'nothing started'})", flush=True)
    return code


def main(command: str, argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=f"valueos {command}", description=__doc__)
    parser.add_argument("--host", help="where the API listens (default: VALUEOS_HOST)")
    parser.add_argument("--port", type=int, help="(default: VALUEOS_PORT)")
    parser.add_argument(
        "--no-anchoring",
        action="store_true",
        help="the worker runs housekeeping only, no chain (VALUEOS_ANCHORING=off)",
    )
    ns = parser.parse_args(argv)
    try:
        parse_switch("VALUEOS_ANCHORING", os.environ.get("VALUEOS_ANCHORING", "on"))
    except ValueError as exc:
        print(f"valueos {command}: {exc}")
        return 1

    db = database_settings()
    url = resolve_url(db)  # starts the embedded PostgreSQL unless DATABASE_URL is set
    migrate(url)
    if db.url:
        database = f"DATABASE_URL (database {make_url(url).database})"
    else:
        database = f"embedded PostgreSQL in {db.data_dir} (stops with valueos run)"
    env = dict(os.environ) | {"DATABASE_URL": url, "PYTHONUNBUFFERED": "1"}
    if ns.no_anchoring:
        env["VALUEOS_ANCHORING"] = "off"
    if not parse_switch("VALUEOS_ANCHORING", env.get("VALUEOS_ANCHORING", "on")):
        anchoring = "anchoring off (no chain)"
    elif env.get("ETH_RPC_URL"):
        anchoring = "seal + anchor on ETH_RPC_URL"
    else:
        anchoring = "seal + anchor on a local anvil (LedgerAnchor deployed, state in .valueos/)"
    settings = api_settings()
    host = settings.host if ns.host is None else ns.host
    port = settings.port if ns.port is None else ns.port
    python = [sys.executable, "-m", "valueos"]
    commands = {
        "api": [*python, "serve", "--host", host, "--port", str(port)],
        "worker": [*python, "worker"],
    }
    shown = "127.0.0.1" if host in {"0.0.0.0", "::", ""} else host  # noqa: S104
    base = f"http://{shown}:{port}"
    return asyncio.run(_supervise(commands, env, base, database, anchoring))
