"""Transfers over HTTP (a real server on 127.0.0.1 started like production, ``valueos
serve``; 32 concurrent clients) next to the same transfers through the core API
(``Ledger.transfer``, 32 concurrent callers), in the same run, on a fresh database.

    python -m bench.api [--transfers N] [--clients N] [--seconds S] [--workers N]
                        [--client aiohttp|httpx]

Uses DATABASE_URL when set, else an embedded PostgreSQL. Rate limiting is switched off
for the server (VALUEOS_RATE_API=0): the figure is the API's cost, not the limiter's.
Every HTTP transfer carries an Idempotency-Key (the production path). The HTTP load runs
in its own process (aiohttp by default: the client must not be what is measured) and
reports its CPU per transfer; the server's CPU per transfer is read from /proc. The last
line is a JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.engine import make_url

from api.auth import Principal, issue_token, jwt_auth
from core.credentials import Credentials
from core.ledger import Ledger
from core.types import AccountKind, Actor, AssetKind, OperationType, Role, SystemAccount
from tests.conftest import settings_for
from tests.support import create_database, drop_database

ACTOR = Actor("bench", Role.SYSTEM)
SECRET = "bench-" + "k" * 58
KEYS = os.environ.get("BENCH_NO_KEYS") is None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pids: list[int], *, children: bool = False) -> float:
    """User + system CPU of processes (with ``children``: and their children, i.e. the
    uvicorn workers) from /proc; a process that is gone counts 0."""
    ticks = os.sysconf("SC_CLK_TCK")
    everyone = list(pids)
    for pid in pids if children else []:
        with contextlib.suppress(OSError):
            everyone += map(int, Path(f"/proc/{pid}/task/{pid}/children").read_text().split())
    total = 0.0
    for pid in everyone:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


async def setup(ledger: Ledger, users: int) -> tuple[list[uuid.UUID], list[int]]:
    await ledger.accounts.create_asset(
        code="BENCH", name="bench", scale=2, kind=AssetKind.POINTS, actor=ACTOR
    )
    issuance = await ledger.accounts.system_account("BENCH", SystemAccount.ISSUANCE, actor=ACTOR)
    creds = Credentials(ledger.engine)
    ids, accounts = [], []
    for _ in range(users):
        user = await creds.create_user(email=None, role=Role.USER, actor=ACTOR)
        wallet = await ledger.accounts.ensure_wallet(user.id, "BENCH", actor=ACTOR)
        await ledger.transfer(
            source=issuance,
            destination=wallet[AccountKind.AVAILABLE],
            asset="BENCH",
            amount=10**12,
            type_=OperationType.MINT,
        )
        ids.append(user.id)
        accounts.append(wallet[AccountKind.AVAILABLE])
    return ids, accounts


async def _client_loop(
    spec: dict[str, Any], post: Any, latencies: list[float], failures: list[int]
) -> None:
    """Each of ``clients`` callers posts its share of transfers, one at a time."""
    users, accounts, tokens = spec["users"], spec["accounts"], spec["tokens"]
    per_client = spec["transfers"] // spec["clients"]
    deadline = time.perf_counter() + spec["seconds"]

    async def client(i: int) -> None:
        rng = random.Random(i)
        auth = f"Bearer {tokens[i]}"
        for k in range(per_client):
            if time.perf_counter() > deadline:
                return
            j = rng.randrange(len(users) - 1)
            j = j + 1 if j >= i else j
            body = {"from_account_id": accounts[i], "to_user_id": users[j], "amount": "0.01"}
            headers = {"Authorization": auth, "Content-Type": "application/json"}
            if spec["keys"]:
                headers["Idempotency-Key"] = f"b{i}-{k}"
            start = time.perf_counter()
            status = await post(json.dumps(body).encode(), headers)
            latencies.append(time.perf_counter() - start)
            if status != 201:
                failures.append(status)

    await asyncio.gather(*(client(i) for i in range(spec["clients"])))


async def http_client(spec: dict[str, Any]) -> dict[str, Any]:
    """The HTTP load, run in its own process (``--client``): one warm-up transfer per
    client, then the timed phase. Reports its own CPU so the client's cost is visible."""
    url = spec["base"] + "/api/v1/credits/transfer"
    latencies: list[float] = []
    failures: list[int] = []
    if spec["client"] == "httpx":
        limits = httpx.Limits(
            max_connections=spec["clients"], max_keepalive_connections=spec["clients"]
        )
        async with httpx.AsyncClient(limits=limits, timeout=30) as hx:

            async def post(body: bytes, headers: dict[str, str]) -> int:
                return (await hx.post(url, content=body, headers=headers)).status_code

            return await _timed(spec, post, latencies, failures)
    import aiohttp  # noqa: PLC0415 - only the load process needs it

    connector = aiohttp.TCPConnector(limit=spec["clients"])
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def post_aio(body: bytes, headers: dict[str, str]) -> int:
            async with session.post(url, data=body, headers=headers) as r:
                await r.read()
                return r.status

        return await _timed(spec, post_aio, latencies, failures)


async def _timed(
    spec: dict[str, Any], post: Any, latencies: list[float], failures: list[int]
) -> dict[str, Any]:
    warm = {**spec, "transfers": spec["clients"], "keys": False}
    await _client_loop(warm, post, [], failures)  # warm the server's caches
    if failures:
        raise RuntimeError(f"warm-up transfers failed: {failures[:5]}")
    print("go", flush=True)  # the parent samples the server's CPU from here
    cpu = time.process_time()
    start = time.perf_counter()
    await _client_loop(spec, post, latencies, failures)
    elapsed = time.perf_counter() - start
    out = summary(latencies, elapsed, len(failures))
    out["client_cpu_ms_per_transfer"] = round(
        (time.process_time() - cpu) * 1000 / max(1, len(latencies)), 3
    )
    return out


async def run_http(
    base: str,
    server: subprocess.Popen[bytes],
    users: list[uuid.UUID],
    accounts: list[int],
    clients: int,
    n: int,
    seconds: float,
    client: str,
) -> dict[str, Any]:
    """Run the load process; meanwhile measure the CPU of the server (all its workers)."""
    config = jwt_auth(SECRET, 3600)
    spec = {
        "base": base,
        "client": client,
        "clients": clients,
        "transfers": n,
        "seconds": seconds,
        "keys": KEYS,
        "users": [str(u) for u in users],
        "accounts": accounts,
        "tokens": [
            issue_token(config, Principal(u, Role.USER, frozenset({"*"}), f"u:{u}")) for u in users
        ],
    }
    load = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.api", "--load",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdin, stdout = load.stdin, load.stdout
    if stdin is None or stdout is None:  # pragma: no cover - both are pipes
        raise RuntimeError("no pipes to the load process")
    stdin.write(json.dumps(spec).encode())
    await stdin.drain()
    stdin.close()
    # the load process warms up first (the server's pool fills): sample from its "go"
    if (await stdout.readline()).strip() != b"go":
        raise RuntimeError("the load process failed before its timed phase")
    server_cpu = cpu_seconds([server.pid], children=True)
    result: dict[str, Any] = json.loads(await stdout.read())
    server_cpu = cpu_seconds([server.pid], children=True) - server_cpu
    if await load.wait() != 0:
        raise RuntimeError("the load process failed")
    done = max(1, result["transfers"])
    result["client"] = client
    result["server_cpu_ms_per_transfer"] = round(server_cpu * 1000 / done, 3)
    return result


async def run_core(
    ledger: Ledger, accounts: list[int], clients: int, n: int, seconds: float
) -> dict[str, Any]:
    latencies: list[float] = []
    failures = 0
    per_client = n // clients
    deadline = time.perf_counter() + seconds

    async def caller(i: int) -> None:
        nonlocal failures
        rng = random.Random(1000 + i)
        for k in range(per_client):
            if time.perf_counter() > deadline:
                return
            j = rng.randrange(len(accounts) - 1)
            j = j + 1 if j >= i else j
            start = time.perf_counter()
            try:
                await ledger.transfer(
                    source=accounts[i],
                    destination=accounts[j],
                    asset="BENCH",
                    amount=1,
                    actor=ACTOR,
                    idempotency_key=f"core-{i}-{k}",
                )
            except Exception:  # counted and reported
                failures += 1
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(caller(i) for i in range(clients)))
    return summary(latencies, time.perf_counter() - start, failures)


def summary(latencies: list[float], elapsed: float, failures: int) -> dict[str, Any]:
    return {
        "transfers": len(latencies),
        "failures": failures,
        "seconds": round(elapsed, 2),
        "per_second": round(len(latencies) / elapsed, 1) if elapsed else 0.0,
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 2) if latencies else 0.0,
    }


async def wait_ready(base: str, proc: subprocess.Popen[bytes]) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=2) as http:
        for _ in range(600):
            if proc.poll() is not None:
                raise RuntimeError("the API server exited during startup")
            try:
                if (await http.get("/ready")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("the API server did not become ready")


async def main(
    transfers: int, clients: int, seconds: float, workers: int, client: str
) -> dict[str, Any]:
    url = await create_database()
    port = free_port()
    env = os.environ | {
        "DATABASE_URL": make_url(url).set(drivername="postgresql").render_as_string(False),
        "VALUEOS_JWT_SECRET": SECRET,
        "VALUEOS_RATE_API": "0",
        "VALUEOS_DB_POOL": "10",
    }
    # the production entry point (migrate, first admin, JSON logs incl. the access log);
    # its output goes to a file, as a deployment's would go to a collector
    server_log = open(os.devnull, "wb")  # noqa: SIM115, ASYNC230 - before the timing
    server = subprocess.Popen(  # noqa: S603, ASYNC220 - our own server, before the timing
        [sys.executable, "-m", "valueos", "serve", "--host", "127.0.0.1",
         "--port", str(port), "--workers", str(workers)],
        env=env, stdout=server_log, stderr=server_log,
    )  # fmt: skip
    ledger = Ledger.connect(settings_for(url, pool_size=10))
    try:
        base = f"http://127.0.0.1:{port}"
        await wait_ready(base, server)
        users, accounts = await setup(ledger, max(clients * 2, 64))
        http = await run_http(base, server, users, accounts, clients, transfers, seconds, client)
        core = await run_core(ledger, accounts, clients, transfers, seconds)
        drifts = await ledger.reconcile()
    finally:
        server.terminate()
        server.wait(10)
        server_log.close()
        await ledger.close()
        await drop_database(url)
    return {
        "bench": "api",
        "clients": clients,
        "workers": workers,
        "http": http,
        "core": core,
        "http_vs_core": round(http["per_second"] / core["per_second"], 3)
        if core["per_second"]
        else None,
        "reconciler_drifts": len(drifts),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--transfers", type=int, default=4000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60.0, help="cap per phase")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument(
        "--client", choices=("aiohttp", "httpx"), default="aiohttp", help="HTTP load client"
    )
    parser.add_argument("--load", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:  # the load process: spec on stdin, "go", then the result as JSON
        import uvloop

        spec = json.loads(sys.stdin.read())
        print(json.dumps(uvloop.run(http_client(spec))), flush=True)
        sys.exit(0)
    result = asyncio.run(
        main(args.transfers, args.clients, args.seconds, args.workers, args.client)
    )
    h, c = result["http"], result["core"]
    print(
        f"HTTP : {h['transfers']} transfers, {h['per_second']}/s, p50 {h['p50_ms']} ms, "
        f"p99 {h['p99_ms']} ms, failures {h['failures']}; CPU per transfer: server "
        f"{h['server_cpu_ms_per_transfer']} ms, client ({h['client']}) "
        f"{h['client_cpu_ms_per_transfer']} ms"
    )
    print(
        f"core : {c['transfers']} transfers, {c['per_second']}/s, p50 {c['p50_ms']} ms, "
        f"p99 {c['p99_ms']} ms, failures {c['failures']}"
    )
    print(json.dumps(result))
    sys.exit(1 if h["failures"] or c["failures"] or result["reconciler_drifts"] else 0)
