"""``valueos worker`` with anchoring off runs the housekeeping jobs and touches no chain.

A real worker process on the test database, with no ``ETH_RPC_URL`` and ``ANVIL_BIN``
pointing nowhere, so any attempt to start or reach a chain would fail the run: a hold and
a P2P request past their deadlines must still be expired by it, and an offline allowance a
crash left OPENING (without an Idempotency-Key) abandoned by the offline sweep.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from core import p2p
from core.p2p import P2PStatus
from core.types import HoldStatus
from tests.conftest import World
from tests.integration.test_p2p import backdate, request
from tests.integration.test_vaults import Person, person

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


async def _statuses(world: World, hold_id: int, request_id: int) -> tuple[str, str]:
    async with world.ledger.engine.connect() as conn:
        hold = (
            await conn.execute(text("SELECT status FROM holds WHERE id = :id"), {"id": hold_id})
        ).scalar_one()
    req = await p2p.get_request(world.ledger, user=None, request_id=request_id)
    return hold, req.status


async def _left_opening(world: World, owner: Person) -> int:
    """An allowance row as a request killed before its hold leaves it, 10 minutes ago."""
    async with world.ledger.engine.begin() as conn:
        device = (
            await conn.execute(
                text(
                    "INSERT INTO offline_devices (user_id, public_key, name) "
                    "VALUES (:u, :k, 'phone') RETURNING id"
                ),
                {"u": owner.id, "k": os.urandom(32)},
            )
        ).scalar_one()
        return int(
            (
                await conn.execute(
                    text(
                        "INSERT INTO offline_allowances (user_id, device_id, account_id, asset, "
                        "amount, expires_at, status, request_hash, created_at) VALUES (:u, :d, "
                        ":a, :asset, 20, now() + interval '1 day', 'OPENING', '\\x00', "
                        "now() - interval '10 minutes') RETURNING id"
                    ),
                    {"u": owner.id, "d": device, "a": owner.available, "asset": world.asset},
                )
            ).scalar_one()
        )


async def _allowance(world: World, allowance_id: int) -> str:
    async with world.ledger.engine.connect() as conn:
        return str(
            (
                await conn.execute(
                    text("SELECT status FROM offline_allowances WHERE id = :id"),
                    {"id": allowance_id},
                )
            ).scalar_one()
        )


async def test_worker_without_a_chain_expires_holds_and_p2p_requests(
    world: World, database_url: str, tmp_path: Path
) -> None:
    led = world.ledger
    payer, payee = await person(world, 100), await person(world)
    hold = await led.hold(
        source=payer.available, destination=payee.available, asset=world.asset, amount=30
    )
    async with led.engine.begin() as conn:  # deadline in the past, no waiting
        await conn.execute(
            text("UPDATE holds SET expires_at = now() - interval '1 second' WHERE id = :id"),
            {"id": hold.hold_id},
        )
    asked = await request(world, payee, payer, 10)
    await backdate(led, asked.id)
    left = await _left_opening(world, payer)
    pending = (HoldStatus.PENDING, P2PStatus.PENDING)
    assert await _statuses(world, hold.hold_id, asked.id) == pending

    chainless = {"ETH_RPC_URL", "VALUEOS_ANCHOR_CONTRACT", "VALUEOS_ANCHOR_CONTRACT_FILE"}
    env = {k: v for k, v in os.environ.items() if k not in chainless}
    env |= {
        "DATABASE_URL": database_url,
        "VALUEOS_ANCHORING": "off",
        "ANVIL_BIN": str(tmp_path / "no-anvil-here"),  # starting anvil would fail
        "VALUEOS_EXPIRE_HOLDS_INTERVAL_S": "0.2",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
    }
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        proc = subprocess.Popen(  # noqa: ASYNC220 - waited on below with a deadline
            [sys.executable, "-m", "valueos", "worker"],
            env=env,
            cwd=tmp_path,  # its .valueos/ (if any) lands here, not in the repository
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = asyncio.get_running_loop().time() + 60
        expired = (HoldStatus.EXPIRED, P2PStatus.EXPIRED)
        # the sweep marks the allowance FAILED, then voids its hold: wait for both
        while (
            await _statuses(world, hold.hold_id, asked.id),
            await _allowance(world, left),
            (await led.queries.balance(payer.available)).pending,
        ) != (expired, "FAILED", 0):
            assert proc.poll() is None, f"the worker exited:\n{log.read_text()}"
            assert asyncio.get_running_loop().time() < deadline, log.read_text()
            await asyncio.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = log.read_text()
    assert "housekeeping only" in output
    assert "seal_and_anchor" not in output
    assert not (tmp_path / ".valueos").exists(), "no local chain state was created"
    assert (await led.queries.balance(payer.available)).pending == 0
