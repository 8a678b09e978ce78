"""Anchor rows: the state machine of one epoch's anchor transaction, and the signer lock.

The chain side (signing, sending, confirming) is in :mod:`jobs.anchor` over
:mod:`chain.evm.anchor`; this module only persists what it decided, so a crash at any step resumes
from the stored state.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from core.epochs import EpochRoots, raw_connection, roots_from_row

#: Anchor states, in order. SEALED: roots stored, nothing sent. SIGNED: the raw transaction and
#: its hash are persisted (before any broadcast). BROADCAST: handed to the node. CONFIRMED: in
#: a block (hash recorded). FINALIZED: ``confirmations`` deep and the block hash re-checked.
ANCHOR_STATUSES = ("SEALED", "SIGNED", "BROADCAST", "CONFIRMED", "FINALIZED")
#: Session advisory lock held by the one worker that signs and sends anchors (nonce safety).
ANCHOR_LOCK_KEY = 0x76616C75656F7332


@dataclass(frozen=True, slots=True)
class AnchorRecord:
    roots: EpochRoots
    status: str
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
    #: seconds since the last transition (database clock); None when not selected
    age_s: float | None = None

    @property
    def epoch(self) -> int:
        return self.roots.epoch


def _opt_bytes(value: Any) -> bytes | None:
    return None if value is None else bytes(value)


def anchor_from_row(row: asyncpg.Record) -> AnchorRecord:
    return AnchorRecord(
        roots=roots_from_row(row),
        status=row["status"],
        chain_id=row["chain_id"],
        contract_address=row["contract_address"],
        sender=row["sender"],
        nonce=row["nonce"],
        raw_tx=_opt_bytes(row["raw_tx"]),
        tx_hash=_opt_bytes(row["tx_hash"]),
        block_number=row["block_number"],
        block_hash=_opt_bytes(row["block_hash"]),
        gas_used=row["gas_used"],
        attempts=row["attempts"],
        last_error=row["last_error"],
        age_s=None if row.get("age_s") is None else float(row["age_s"]),
    )


_ANCHOR_SELECT = (
    "SELECT r.*, a.status, a.chain_id, a.contract_address, a.sender, a.nonce, a.raw_tx, "
    "a.tx_hash, a.block_number, a.block_hash, a.gas_used, a.attempts, a.last_error, "
    "extract(epoch FROM clock_timestamp() - a.updated_at)::float8 AS age_s "
    "FROM epoch_anchors a JOIN epoch_roots r ON r.epoch = a.epoch "
)


async def get_anchor(engine: AsyncEngine, epoch: int) -> AnchorRecord | None:
    async with raw_connection(engine) as conn:
        row = await conn.fetchrow(_ANCHOR_SELECT + "WHERE a.epoch = $1", epoch)
    return anchor_from_row(row) if row else None


async def unfinished_anchors(engine: AsyncEngine) -> list[AnchorRecord]:
    """Every anchor not FINALIZED yet, oldest epoch first."""
    async with raw_connection(engine) as conn:
        rows = await conn.fetch(_ANCHOR_SELECT + "WHERE a.status <> 'FINALIZED' ORDER BY a.epoch")
    return [anchor_from_row(r) for r in rows]


async def anchor_tx_hashes(engine: AsyncEngine, epoch: int) -> list[bytes]:
    """Every transaction hash ever recorded for ``epoch``'s anchor, newest first: the current
    one and those it replaced (fee bumps, re-signs). Any of them may be the one mined."""
    async with raw_connection(engine) as conn:
        rows = await conn.fetch(
            "SELECT tx_hash FROM anchor_events WHERE epoch = $1 AND tx_hash IS NOT NULL "
            "GROUP BY tx_hash ORDER BY max(id) DESC",
            epoch,
        )
    return [bytes(r[0]) for r in rows]


async def anchor_targets(engine: AsyncEngine) -> list[tuple[int | None, str | None]]:
    """The distinct (chain id, contract address) pairs the stored anchors were sent to."""
    async with raw_connection(engine) as conn:
        rows = await conn.fetch(
            "SELECT DISTINCT chain_id, contract_address FROM epoch_anchors "
            "WHERE chain_id IS NOT NULL OR contract_address IS NOT NULL"
        )
    return [(r[0], r[1]) for r in rows]


_CLEARED_ON_RESET = ("nonce", "raw_tx", "tx_hash", "block_number", "block_hash", "gas_used")
_SETTABLE = frozenset(
    {"chain_id", "contract_address", "sender", *_CLEARED_ON_RESET, "last_error", "attempts"}
)


async def transition(
    engine: AsyncEngine,
    epoch: int,
    from_status: str,
    to_status: str,
    *,
    detail: str | None = None,
    **fields: Any,
) -> bool:
    """Move an anchor ``from_status -> to_status`` and set ``fields``; False if it was not in
    ``from_status`` any more (another worker moved it). Every transition is logged in
    ``anchor_events``; a move back to SEALED clears the transaction fields."""
    if to_status not in ANCHOR_STATUSES or not set(fields) <= _SETTABLE:
        raise ValueError(f"bad anchor transition to {to_status} with {sorted(fields)}")
    if to_status == "SEALED":
        fields = dict.fromkeys(_CLEARED_ON_RESET) | fields
    names = sorted(fields)
    assignments = "".join(f", {name} = ${i + 4}" for i, name in enumerate(names))
    async with raw_connection(engine) as conn, conn.transaction():
        row = await conn.fetchrow(
            f"UPDATE epoch_anchors SET status = $3, updated_at = clock_timestamp(){assignments} "
            "WHERE epoch = $1 AND status = $2 RETURNING tx_hash",
            epoch,
            from_status,
            to_status,
            *(fields[name] for name in names),
        )
        if row is None:
            return False
        await conn.execute(
            "INSERT INTO anchor_events (epoch, from_status, to_status, tx_hash, detail) "
            "VALUES ($1, $2, $3, $4, $5)",
            epoch,
            from_status,
            to_status,
            row["tx_hash"],
            detail,
        )
    return True


@asynccontextmanager
async def anchor_lock(engine: AsyncEngine) -> AsyncIterator[bool]:
    """Hold the anchoring lock for the block (True), or yield False when another worker has it.

    Whoever holds it is the only process choosing nonces and signing, so a nonce is never
    given to two anchors; the signed transaction is persisted before it is broadcast.
    """
    async with raw_connection(engine) as conn:
        got: bool = await conn.fetchval("SELECT pg_try_advisory_lock($1)", ANCHOR_LOCK_KEY)
        try:
            yield got
        finally:
            if got:
                await conn.execute("SELECT pg_advisory_unlock($1)", ANCHOR_LOCK_KEY)
