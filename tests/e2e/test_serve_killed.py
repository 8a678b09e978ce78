"""A real ``valueos serve`` SIGKILLed while a burst of transfers is in flight, then restarted:
every idempotency key has exactly one effect, and the reconciler finds no drift.

The kill lands as soon as the first response of the burst is back, with the rest still in
the server (queued, in the batcher, or inside a batch's database transaction); the test checks
that some requests really went unanswered, so it cannot pass without a mid-flight kill. The
clients then retry every request with its key against the restarted server.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from core.credentials import Credentials
from core.ledger import Ledger
from core.reconcile import reconcile
from core.types import AccountKind, Actor, OperationType, Role
from tests.conftest import make_world, settings_for
from tests.support import create_database, drop_database

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ACTOR = Actor("kill-test", Role.SYSTEM)
BURST = 300
AMOUNT_MINOR = 100  # "1.00" at scale 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def db_url() -> AsyncIterator[str]:
    url = await create_database()
    try:
        yield url
    finally:
        await drop_database(url)


class Server:
    """``valueos serve`` on ``db_url`` as a child process."""

    def __init__(self, db_url: str, tmp: Path) -> None:
        self.port = _free_port()
        self.env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"} | {
            "DATABASE_URL": db_url,
            "VALUEOS_PORT": str(self.port),
            "VALUEOS_JWT_KEY_FILE": str(tmp / "jwt.key"),
            "VALUEOS_RATE_API": "100000",
        }
        self.log = tmp / "serve.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        with self.log.open("a") as log:
            self.proc = subprocess.Popen(  # noqa: ASYNC220 - returns at once; our command
                [sys.executable, "-m", "valueos.cli", "serve"],
                env=self.env, stdout=log, stderr=log,
            )  # fmt: skip
        async with httpx.AsyncClient() as http:
            for _ in range(600):  # up to ~60 s: a condition, polled
                if self.proc.poll() is not None:
                    pytest.fail(f"serve exited: {self.log.read_text()[-2000:]}")
                try:
                    if (await http.get(self.url + "/ready", timeout=2)).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
        pytest.fail("serve never became ready")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def send(http: httpx.AsyncClient, url: str, key: str, body: dict[str, Any]) -> Any:
    return await http.post(
        url + "/api/v1/credits/transfer", json=body, headers={"Idempotency-Key": key}
    )


async def test_serve_killed_mid_batch_then_retried_moves_each_transfer_once(
    db_url: str, tmp_path: Path
) -> None:
    ledger = Ledger.connect(settings_for(db_url))
    server = Server(db_url, tmp_path)
    try:
        world = await make_world(ledger)
        creds = Credentials(ledger.engine)
        alice = await creds.create_user(email=None, role=Role.USER, actor=ACTOR)
        bob = await creds.create_user(email=None, role=Role.USER, actor=ACTOR)
        _, api_key = await creds.create_api_key(
            user_id=alice.id, name="kill test", scopes=("*",), actor=ACTOR
        )
        source = (await ledger.accounts.ensure_wallet(alice.id, world.asset, actor=ACTOR))[
            AccountKind.AVAILABLE
        ]
        target = (await ledger.accounts.ensure_wallet(bob.id, world.asset, actor=ACTOR))[
            AccountKind.AVAILABLE
        ]
        funded = 10 * BURST * AMOUNT_MINOR
        await ledger.transfer(
            source=world.issuance, destination=source, asset=world.asset, amount=funded,
            type_=OperationType.MINT,
        )  # fmt: skip
        body = {"from_account_id": source, "to_user_id": str(bob.id), "amount": "1.00"}
        keys = [f"kill-{uuid.uuid4().hex}" for _ in range(BURST)]

        await server.start()
        limits = httpx.Limits(max_connections=BURST)
        headers = {"X-API-Key": api_key}
        async with httpx.AsyncClient(limits=limits, headers=headers, timeout=30) as http:
            tasks = [asyncio.create_task(send(http, server.url, k, body)) for k in keys]
            await next(asyncio.as_completed(tasks))
            assert server.proc is not None
            server.proc.kill()  # SIGKILL while the burst is in flight
            assert server.proc.wait(timeout=30) == -signal.SIGKILL
            first = await asyncio.gather(*tasks, return_exceptions=True)
        answered = {k: r for k, r in zip(keys, first, strict=True) if isinstance(r, httpx.Response)}
        assert len(answered) < BURST, "the kill landed after the whole burst was answered"
        assert all(r.status_code == 201 for r in answered.values()), [
            r.text for r in answered.values() if r.status_code != 201
        ]

        # the unanswered requests' claims are left in progress; their process is gone, so
        # the retries below take them over at once (no waiting out an age)
        async with ledger.engine.connect() as conn:
            in_progress = (
                await conn.execute(
                    text(
                        "SELECT count(*) FROM api_idempotency "
                        "WHERE response IS NULL AND key = ANY(:keys)"
                    ),
                    {"keys": keys},
                )
            ).scalar_one()
        assert in_progress > 0, "no request was left in progress by the kill"

        await server.start()  # the clients retry every request with its key
        async with httpx.AsyncClient(limits=limits, headers=headers, timeout=60) as http:
            again = await asyncio.gather(*(send(http, server.url, k, body) for k in keys))
        assert [r.status_code for r in again] == [201] * BURST, [r.text for r in again][:3]
        for key, response in answered.items():  # a replay answers what the first call did
            assert again[keys.index(key)].json() == response.json()

        assert len({r.json()["id"] for r in again}) == BURST
        balances = await ledger.queries.balances([source, target])
        assert balances[target].posted == BURST * AMOUNT_MINOR, "each key moved money once"
        assert balances[source].posted == funded - BURST * AMOUNT_MINOR
        assert await reconcile(ledger.engine) == []
    finally:
        server.stop()
        await ledger.close()
