"""Migration 0010 moves anchors signed before it into the outbox, and back on downgrade."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from alembic import command

from core.db import alembic_config, migrate_async
from tests.support import create_database, drop_database, raw_connect

pytestmark = pytest.mark.integration

BEFORE = "0009_policy_usage_pruning"
CONTRACT = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
SENDER = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"


@pytest.fixture
async def url() -> AsyncIterator[str]:
    url = await create_database(migrated=False)
    try:
        yield url
    finally:
        await drop_database(url)


async def seed_anchors(url: str) -> None:
    """Three epochs at 0009: one only sealed, one broadcast, one finalized."""
    conn = await raw_connect(url)
    try:
        await conn.execute("UPDATE epochs SET status = 'SEALED', last_seq = 0 WHERE id = 1")
        for epoch in (1, 2, 3):
            if epoch > 1:
                await conn.execute(
                    "INSERT INTO epochs (id, status, last_seq) VALUES ($1, 'SEALED', 0)", epoch
                )
            await conn.execute(
                "INSERT INTO epoch_roots (epoch, ledger_id, prev_header, entries_root, "
                "balances_root, first_seq, last_seq, leaf_count, balance_count, cut_seq, header) "
                "VALUES ($1, $2, $2, $2, $2, 0, 0, 0, 0, 0, $3)",
                epoch, b"\x01" * 32, bytes([epoch]) * 32,
            )  # fmt: skip
        await conn.execute("INSERT INTO epoch_anchors (epoch, status) VALUES (1, 'SEALED')")
        await conn.execute(
            "INSERT INTO epoch_anchors (epoch, status, chain_id, contract_address, sender, nonce, "
            "raw_tx, tx_hash, attempts) VALUES (2, 'BROADCAST', 31337, $1, $2, 7, $3, $4, 1)",
            CONTRACT, SENDER, b"\xaa" * 100, b"\x02" * 32,
        )  # fmt: skip
        await conn.execute(
            "INSERT INTO epoch_anchors (epoch, status, chain_id, contract_address, sender, nonce, "
            "tx_hash, block_number, block_hash, gas_used, attempts) "
            "VALUES (3, 'FINALIZED', 31337, $1, $2, 8, $3, 42, $4, 95000, 2)",
            CONTRACT, SENDER, b"\x03" * 32, b"\x04" * 32,
        )  # fmt: skip
        await conn.execute(
            "INSERT INTO anchor_events (epoch, from_status, to_status, tx_hash, detail) "
            "VALUES (2, 'SIGNED', 'BROADCAST', $1, 'sent')",
            b"\x02" * 32,
        )
    finally:
        await conn.close()


COLUMNS = "epoch, status, chain_id, contract_address, sender, nonce, tx_hash, block_number, " \
    "block_hash, gas_used, attempts"  # fmt: skip


async def anchors(url: str, table: str) -> list[tuple[object, ...]]:
    conn = await raw_connect(url)
    try:
        rows = await conn.fetch(f"SELECT {COLUMNS} FROM {table} ORDER BY epoch")
    finally:
        await conn.close()
    return [tuple(r) for r in rows]


async def test_anchors_move_into_the_outbox_and_back(url: str) -> None:
    await migrate_async(url, BEFORE)
    await seed_anchors(url)
    before = await anchors(url, "epoch_anchors")

    await migrate_async(url)
    assert await anchors(url, "anchor_state") == before
    conn = await raw_connect(url)
    try:
        rows = await conn.fetch("SELECT purpose, ref, status FROM chain_txs ORDER BY id")
        history = await conn.fetch("SELECT to_status, detail FROM chain_tx_events")
    finally:
        await conn.close()
    assert [tuple(r) for r in rows] == [("anchor", "2", "BROADCAST"), ("anchor", "3", "FINALIZED")]
    assert [tuple(r) for r in history] == [("BROADCAST", "sent")]

    await asyncio.to_thread(command.downgrade, alembic_config(url), BEFORE)
    assert await anchors(url, "epoch_anchors") == before
