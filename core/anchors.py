"""Anchor rows: each sealed epoch's anchor, carried by one outbox row (:mod:`core.chain_txs`).

``epoch_anchors`` holds what belongs to the epoch (its outbox row, a conflict found on the chain)
and ``anchor_events`` the epoch-level events (sealed, conflict); the transaction itself lives in
``chain_txs``. The view ``anchor_state`` shows an anchor with one status: SEALED while nothing is
signed (no row, BUILT, or FAILED), else its transaction's status. The decisions are made in
:mod:`jobs.anchor`; this module only persists them, so a crash at any step resumes from here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import StrEnum

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from core import chain_txs
from core.chain_txs import TxPurpose, TxStatus, opt_bytes
from core.epochs import EpochRoots, raw_connection, roots_from_row

#: Session advisory lock held by the one worker that advances anchors (they go in epoch order).
ANCHOR_LOCK_KEY = 0x76616C75656F7332


class AnchorStatus(StrEnum):
    """An anchor's status as ``anchor_state`` shows it: SEALED while nothing is signed for the
    epoch, then the status of the outbox row carrying it."""

    SEALED = "SEALED"
    SIGNED = "SIGNED"
    BROADCAST = "BROADCAST"
    CONFIRMED = "CONFIRMED"
    FINALIZED = "FINALIZED"


@dataclass(frozen=True, slots=True)
class AnchorRecord:
    roots: EpochRoots
    status: AnchorStatus
    tx_id: int | None
    chain_id: int | None
    contract_address: str | None
    sender: str | None
    nonce: int | None
    raw_tx: bytes | None
    tx_hash: bytes | None
    block_number: int | None
    block_hash: bytes | None
    gas_used: int | None
    attempts: int
    last_error: str | None

    @property
    def epoch(self) -> int:
        return self.roots.epoch


def anchor_from_row(row: asyncpg.Record) -> AnchorRecord:
    return AnchorRecord(
        roots=roots_from_row(row),
        status=AnchorStatus(row["status"]),
        tx_id=row["tx_id"],
        chain_id=row["chain_id"],
        contract_address=row["contract_address"],
        sender=row["sender"],
        nonce=row["nonce"],
        raw_tx=opt_bytes(row["raw_tx"]),
        tx_hash=opt_bytes(row["tx_hash"]),
        block_number=row["block_number"],
        block_hash=opt_bytes(row["block_hash"]),
        gas_used=row["gas_used"],
        attempts=row["attempts"],
        last_error=row["last_error"],
    )


#: an anchor and its roots; callers add WHERE / ORDER BY
ANCHOR_SELECT = (
    "SELECT r.*, a.status, a.tx_id, a.chain_id, a.contract_address, a.sender, a.nonce, "
    "a.raw_tx, a.tx_hash, a.block_number, a.block_hash, a.gas_used, a.attempts, a.last_error "
    "FROM anchor_state a JOIN epoch_roots r ON r.epoch = a.epoch "
)


async def get_anchor(engine: AsyncEngine, epoch: int) -> AnchorRecord | None:
    async with raw_connection(engine) as conn:
        row = await conn.fetchrow(ANCHOR_SELECT + "WHERE a.epoch = $1", epoch)
    return anchor_from_row(row) if row else None


async def unfinished_anchors(engine: AsyncEngine) -> list[AnchorRecord]:
    """Every anchor not FINALIZED yet, oldest epoch first."""
    async with raw_connection(engine) as conn:
        rows = await conn.fetch(ANCHOR_SELECT + "WHERE a.status <> 'FINALIZED' ORDER BY a.epoch")
    return [anchor_from_row(r) for r in rows]


async def anchor_targets(engine: AsyncEngine) -> list[tuple[int, str, int]]:
    """The distinct (chain id, contract address) pairs the stored anchors were sent to, each
    with the highest epoch sent there."""
    async with raw_connection(engine) as conn:
        rows = await conn.fetch(
            "SELECT chain_id, to_address, max(ref::bigint) FROM chain_txs WHERE purpose = $1 "
            "GROUP BY chain_id, to_address",
            TxPurpose.ANCHOR,
        )
    return [(r[0], r[1], r[2]) for r in rows]


async def attach_tx(
    engine: AsyncEngine, epoch: int, *, chain_id: int, contract: str, calldata: bytes
) -> int:
    """The outbox row of ``epoch``'s anchor call (BUILT), linked to the epoch; one DB
    transaction, so an epoch never has a row it does not know about."""
    async with raw_connection(engine) as conn, conn.transaction():
        tx_id = await chain_txs.enqueue(
            conn, purpose=TxPurpose.ANCHOR, ref=str(epoch), chain_id=chain_id,
            to_address=contract, data=calldata, detail=f"anchor of epoch {epoch}",
        )  # fmt: skip
        await conn.execute(
            "UPDATE epoch_anchors SET tx_id = $2, updated_at = clock_timestamp() WHERE epoch = $1",
            epoch,
            tx_id,
        )
    return tx_id


async def record_conflict(engine: AsyncEngine, epoch: int, message: str) -> None:
    """Another header is anchored for ``epoch``: kept on the anchor, logged, never retried."""
    async with raw_connection(engine) as conn, conn.transaction():
        await conn.execute(
            "UPDATE epoch_anchors SET last_error = $2, updated_at = clock_timestamp() "
            "WHERE epoch = $1",
            epoch,
            message,
        )
        await conn.execute(
            "INSERT INTO anchor_events (epoch, from_status, to_status, detail) "
            "VALUES ($1, 'SEALED', 'SEALED', 'conflict')",
            epoch,
        )


async def adopt(
    engine: AsyncEngine,
    tx_id: int,
    from_status: TxStatus,
    *,
    tx_hash: bytes,
    block_number: int,
    block_hash: bytes,
    gas_used: int,
    detail: str,
) -> bool:
    """The anchor is on chain, carried by ``tx_hash``: the row becomes that transaction,
    CONFIRMED (no raw bytes: it may not be one we signed)."""
    return await chain_txs.transition(
        engine, tx_id, from_status, TxStatus.CONFIRMED, detail=detail, raw_tx=None,
        tx_hash=tx_hash, block_number=block_number, block_hash=block_hash, gas_used=gas_used,
    )  # fmt: skip


@asynccontextmanager
async def anchor_lock(engine: AsyncEngine) -> AsyncIterator[bool]:
    """Hold the anchoring lock for the block (True), or yield False when another worker has it.

    Anchors go in epoch order, each on the previous header: one worker at a time decides
    what to send. Nonces are safe without it (the outbox allocates them per signer).
    """
    async with raw_connection(engine) as conn:
        got: bool = await conn.fetchval("SELECT pg_try_advisory_lock($1)", ANCHOR_LOCK_KEY)
        try:
            yield got
        finally:
            if got:
                await conn.execute("SELECT pg_advisory_unlock($1)", ANCHOR_LOCK_KEY)
