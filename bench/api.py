"""Transfers over HTTP (a real uvicorn server on 127.0.0.1, 32 concurrent clients) next to
the same transfers through the core API (``Ledger.transfer``, 32 concurrent callers), in
the same run, on a fresh database.

    python -m bench.api [--transfers N] [--clients N] [--seconds S]

Uses DATABASE_URL when set, else an embedded PostgreSQL. Rate limiting is switched off
for the server (VALUEOS_RATE_API=0): the figure is the API's cost, not the limiter's.
Every HTTP transfer carries an Idempotency-Key (the production path). The last line is
a JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
import uuid
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


async def run_http(
    base: str, users: list[uuid.UUID], accounts: list[int], clients: int, n: int, seconds: float
) -> dict[str, Any]:
    config = jwt_auth(SECRET, 3600)
    tokens = [
        issue_token(config, Principal(u, Role.USER, frozenset({"*"}), f"u:{u}")) for u in users
    ]
    latencies: list[float] = []
    failures = 0
    per_client = n // clients
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client(i: int, http: httpx.AsyncClient) -> None:
        nonlocal failures
        rng = random.Random(i)
        headers = {"Authorization": f"Bearer {tokens[i]}"}
        for k in range(per_client):
            if time.perf_counter() > deadline:
                return
            j = rng.randrange(len(users) - 1)
            j = j + 1 if j >= i else j
            body = {"from_account_id": accounts[i], "to_user_id": str(users[j]), "amount": "0.01"}
            start = time.perf_counter()
            r = await http.post(
                "/api/v1/credits/transfer",
                json=body,
                headers={**headers, "Idempotency-Key": f"b{i}-{k}"} if KEYS else headers,
            )
            latencies.append(time.perf_counter() - start)
            if r.status_code != 201:
                failures += 1

    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as http:
        for i in range(clients):  # warm the server's caches (one transfer per client)
            await http.post(
                "/api/v1/credits/transfer",
                json={
                    "from_account_id": accounts[i],
                    "to_user_id": str(users[(i + 1) % len(users)]),
                    "amount": "0.01",
                },
                headers={"Authorization": f"Bearer {tokens[i]}"},
            )
        start = time.perf_counter()
        await asyncio.gather(*(client(i, http) for i in range(clients)))
        elapsed = time.perf_counter() - start
    return summary(latencies, elapsed, failures)


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
        for _ in range(300):
            if proc.poll() is not None:
                raise RuntimeError("the API server exited during startup")
            try:
                if (await http.get("/ready")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("the API server did not become ready")


async def main(transfers: int, clients: int, seconds: float) -> dict[str, Any]:
    url = await create_database()
    port = free_port()
    env = os.environ | {
        "DATABASE_URL": make_url(url).set(drivername="postgresql").render_as_string(False),
        "VALUEOS_JWT_SECRET": SECRET,
        "VALUEOS_RATE_API": "0",
        "VALUEOS_DB_POOL": "10",
    }
    server = subprocess.Popen(  # noqa: S603, ASYNC220 - our own server, before the timing
        [sys.executable, "-m", "uvicorn", "--factory", "api.app:create_app", "--host",
         "127.0.0.1", "--port", str(port), "--no-access-log", "--log-level", "warning"],
        env=env,
    )  # fmt: skip
    ledger = Ledger.connect(settings_for(url, pool_size=10))
    try:
        base = f"http://127.0.0.1:{port}"
        await wait_ready(base, server)
        users, accounts = await setup(ledger, max(clients * 2, 64))
        http = await run_http(base, users, accounts, clients, transfers, seconds)
        core = await run_core(ledger, accounts, clients, transfers, seconds)
        drifts = await ledger.reconcile()
    finally:
        server.terminate()
        server.wait(10)
        await ledger.close()
        await drop_database(url)
    return {
        "bench": "api",
        "clients": clients,
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
    args = parser.parse_args()
    result = asyncio.run(main(args.transfers, args.clients, args.seconds))
    h, c = result["http"], result["core"]
    print(
        f"HTTP : {h['transfers']} transfers, {h['per_second']}/s, p50 {h['p50_ms']} ms, "
        f"p99 {h['p99_ms']} ms, failures {h['failures']}"
    )
    print(
        f"core : {c['transfers']} transfers, {c['per_second']}/s, p50 {c['p50_ms']} ms, "
        f"p99 {c['p99_ms']} ms, failures {c['failures']}"
    )
    print(json.dumps(result))
    sys.exit(1 if h["failures"] or c["failures"] or result["reconciler_drifts"] else 0)
