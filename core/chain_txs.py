"""The on-chain transaction outbox: what it persists (``chain_txs``, ``chain_tx_events``).

One row per intent, named by its client: ``purpose`` (anchor, bridge mint, ...) and ``ref``
(the epoch, the bridge id). The row holds the call and the state of the transaction that carries
it; the lifecycle (signing, sending, receipts, reorgs, finality) is in
:mod:`chain.evm.outbox`, which persists every decision here before acting on it.

A nonce is taken by :func:`allocate_nonce` inside the transaction that stores the signed bytes,
under a per-(chain, sender) advisory lock, so any number of workers share one signer without
ever giving one nonce to two rows; the unique index ``chain_txs_nonce`` enforces it again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from core.epochs import raw_connection
from core.types import ChainIntent

__all__ = [
    "UNFINISHED",
    "ChainTx",
    "TxPurpose",
    "TxStatus",
    "batch",
    "batchable_rows",
    "chain_txs_select",
    "end_carried",
    "enqueue",
    "finished_unsettled",
    "get_tx",
    "get_tx_by_ref",
    "insert_intent",
    "lease_and_sign",
    "opt_bytes",
    "sign_and_store",
    "transition",
    "tx_from_row",
    "tx_hashes",
    "unfinished_txs",
]


class TxStatus(StrEnum):
    """BUILT: the call is stored, nothing signed. SIGNED: raw bytes and hash stored (before any
    broadcast). BROADCAST: handed to the node. CONFIRMED: in a block (hash recorded).
    FINALIZED: deep enough, block re-checked. FAILED: mined, but reverted (the nonce is spent).
    REJECTED: the node says the call reverts, so it was never signed (no nonce used).
    BATCHED: another row's transaction carries this call (``carrier_id``). EXPIRED (Stellar):
    signed and sent, provably never applied (a closed ledger passed its ``maxTime``), its
    sequence number released. After FAILED, REJECTED or EXPIRED the client decides what
    follows (e.g. :func:`transition` back to BUILT, or a refund)."""

    BUILT = "BUILT"
    SIGNED = "SIGNED"
    BROADCAST = "BROADCAST"
    CONFIRMED = "CONFIRMED"
    FINALIZED = "FINALIZED"
    FAILED = "FAILED"
    REJECTED = "REJECTED"
    BATCHED = "BATCHED"
    EXPIRED = "EXPIRED"


UNFINISHED = (TxStatus.BUILT, TxStatus.SIGNED, TxStatus.BROADCAST, TxStatus.CONFIRMED)


class TxPurpose(StrEnum):
    ANCHOR = "anchor"


@dataclass(frozen=True, slots=True)
class ChainTx:
    id: int
    purpose: str
    ref: str
    chain_id: int
    sender: str | None
    to_address: str
    data: bytes
    value_wei: int
    status: TxStatus
    nonce: int | None
    raw_tx: bytes | None
    tx_hash: bytes | None
    block_number: int | None
    block_hash: bytes | None
    gas_used: int | None
    attempts: int
    last_error: str | None
    #: seconds since the last transition (database clock)
    age_s: float
    #: the row whose transaction carries this one's call (BATCHED)
    carrier_id: int | None = None


def opt_bytes(value: Any) -> bytes | None:
    """A nullable bytea column as bytes."""
    return None if value is None else bytes(value)


def tx_from_row(row: asyncpg.Record) -> ChainTx:
    return ChainTx(
        id=row["id"],
        purpose=row["purpose"],
        ref=row["ref"],
        chain_id=row["chain_id"],
        sender=row["sender"],
        to_address=row["to_address"],
        data=bytes(row["data"]),
        value_wei=int(row["value_wei"]),
        status=TxStatus(row["status"]),
        nonce=row["nonce"],
        raw_tx=opt_bytes(row["raw_tx"]),
        tx_hash=opt_bytes(row["tx_hash"]),
        block_number=row["block_number"],
        block_hash=opt_bytes(row["block_hash"]),
        gas_used=row["gas_used"],
        attempts=row["attempts"],
        carrier_id=row["carrier_id"],
        last_error=row["last_error"],
        age_s=float(row["age_s"]),
    )


def chain_txs_select(alias: str = "chain_txs") -> str:
    """``SELECT`` of whole rows (as :func:`tx_from_row` reads them); callers add the rest."""
    return (
        f"SELECT {alias}.*, extract(epoch FROM clock_timestamp() - {alias}.updated_at)::float8 "
        f"AS age_s FROM chain_txs {alias} "
    )


_SELECT = chain_txs_select()
_EVENT = (
    "INSERT INTO chain_tx_events (tx_id, from_status, to_status, tx_hash, detail) "
    "VALUES ($1, $2, $3, $4, $5)"
)


async def enqueue(
    conn: asyncpg.Connection,
    *,
    purpose: str,
    ref: str,
    chain_id: int,
    to_address: str,
    data: bytes,
    value_wei: int = 0,
    detail: str | None = None,
) -> int:
    """Store the intent (BUILT) on ``conn`` -- inside the caller's database transaction, so a
    bridge's debit and its mint commit together -- and return its id. The same intent again
    returns the existing row's id; ``purpose`` + ``ref`` with another call is a ValueError."""
    row = await conn.fetchrow(
        "INSERT INTO chain_txs (purpose, ref, chain_id, to_address, data, value_wei, status) "
        "VALUES ($1, $2, $3, $4, $5, $6, 'BUILT') ON CONFLICT (purpose, ref) DO NOTHING "
        "RETURNING id",
        purpose, ref, chain_id, to_address, data, value_wei,
    )  # fmt: skip
    if row is not None:
        await conn.execute(_EVENT, row["id"], None, TxStatus.BUILT, None, detail)
        return int(row["id"])
    existing = await conn.fetchrow(
        "SELECT id, chain_id, to_address, data, value_wei FROM chain_txs "
        "WHERE purpose = $1 AND ref = $2",
        purpose,
        ref,
    )
    same = (existing["chain_id"], existing["to_address"].lower(), bytes(existing["data"])) == (
        chain_id,
        to_address.lower(),
        data,
    ) and int(existing["value_wei"]) == value_wei
    if not same:
        raise ValueError(f"chain tx {purpose}/{ref} exists with another call")
    return int(existing["id"])


async def insert_intent(conn: asyncpg.Connection, intent: ChainIntent, *, detail: str) -> int:
    """Store ``intent`` (BUILT) on ``conn``, in the caller's transaction; a ``purpose`` +
    ``ref`` already taken is a unique violation (the caller's whole transaction fails)."""
    tx_id: int = await conn.fetchval(
        "INSERT INTO chain_txs (purpose, ref, chain_id, to_address, data, value_wei, status) "
        "VALUES ($1, $2, $3, $4, $5, $6, 'BUILT') RETURNING id",
        intent.purpose, intent.ref, intent.chain_id, intent.to_address, intent.data,
        intent.value_wei,
    )  # fmt: skip
    await conn.execute(_EVENT, tx_id, None, TxStatus.BUILT, None, detail)
    return tx_id


class _Taken(Exception):
    """A row to batch was moved by another worker meanwhile (rolls the batch back)."""


async def batch(
    engine: AsyncEngine, members: Sequence[ChainTx], carrier: ChainIntent
) -> int | None:
    """Put BUILT ``members`` under one new carrier row (BUILT) whose call does all of theirs, in
    one database transaction; None (nothing changed) when one of them is not BUILT any more."""
    ids = [m.id for m in members]
    try:
        async with raw_connection(engine) as conn, conn.transaction():
            carrier_id = await insert_intent(conn, carrier, detail=f"carries {len(ids)} rows")
            moved = await conn.fetch(
                "UPDATE chain_txs SET status = 'BATCHED', carrier_id = $1, "
                "updated_at = clock_timestamp() WHERE id = ANY($2::bigint[]) AND status = 'BUILT' "
                "RETURNING id",
                carrier_id,
                ids,
            )
            if len(moved) != len(ids):
                raise _Taken
            await conn.executemany(
                _EVENT, [(i, TxStatus.BUILT, TxStatus.BATCHED, None, f"carried by {carrier_id}")
                         for i in ids],
            )  # fmt: skip
    except _Taken:
        return None
    return carrier_id


_CARRIED_FINAL = """
UPDATE chain_txs m SET status = 'FINALIZED', tx_hash = c.tx_hash, block_number = c.block_number,
       block_hash = c.block_hash, updated_at = clock_timestamp()
FROM chain_txs c
WHERE m.carrier_id = c.id AND m.status = 'BATCHED' AND c.status = 'FINALIZED'
RETURNING m.id, c.tx_hash
"""
_CARRIED_BACK = """
UPDATE chain_txs m SET status = 'BUILT', updated_at = clock_timestamp()
FROM chain_txs c
WHERE m.carrier_id = c.id AND m.status = 'BATCHED' AND c.status IN ('FAILED', 'REJECTED')
RETURNING m.id, c.id AS carrier
"""


async def end_carried(engine: AsyncEngine) -> int:
    """Rows whose carrier has ended: FINALIZED -> they are FINALIZED too (its hash and block);
    FAILED or REJECTED -> BUILT again, keeping ``carrier_id`` so they are never batched again
    and go alone (one bad call cannot hold the others back). Returns how many rows moved."""
    async with raw_connection(engine) as conn, conn.transaction():
        final = await conn.fetch(_CARRIED_FINAL)
        back = await conn.fetch(_CARRIED_BACK)
        await conn.executemany(
            _EVENT,
            [(r["id"], TxStatus.BATCHED, TxStatus.FINALIZED, r["tx_hash"], "carrier final")
             for r in final]
            + [(r["id"], TxStatus.BATCHED, TxStatus.BUILT, None,
                f"carrier {r['carrier']} failed: sent alone") for r in back],
        )  # fmt: skip
    return len(final) + len(back)


async def batchable_rows(engine: AsyncEngine, purpose: str, *, limit: int) -> list[ChainTx]:
    """BUILT rows of ``purpose`` never carried before, oldest first."""
    async with raw_connection(engine) as conn:
        rows = await conn.fetch(
            _SELECT + "WHERE purpose = $1 AND status = 'BUILT' AND carrier_id IS NULL "
            "ORDER BY id LIMIT $2",
            purpose,
            limit,
        )
    return [tx_from_row(r) for r in rows]


async def get_tx(engine: AsyncEngine, tx_id: int) -> ChainTx | None:
    async with raw_connection(engine) as conn:
        row = await conn.fetchrow(_SELECT + "WHERE id = $1", tx_id)
    return tx_from_row(row) if row else None


async def get_tx_by_ref(engine: AsyncEngine, purpose: str, ref: str) -> ChainTx | None:
    async with raw_connection(engine) as conn:
        row = await conn.fetchrow(_SELECT + "WHERE purpose = $1 AND ref = $2", purpose, ref)
    return tx_from_row(row) if row else None


async def unfinished_txs(engine: AsyncEngine, purpose: str) -> list[ChainTx]:
    """The rows of ``purpose`` not FINALIZED nor FAILED, oldest first."""
    async with raw_connection(engine) as conn:
        rows = await conn.fetch(
            _SELECT + "WHERE purpose = $1 AND status = ANY($2::text[]) ORDER BY id",
            purpose,
            list(UNFINISHED),
        )
    return [tx_from_row(r) for r in rows]


async def tx_hashes(engine: AsyncEngine, tx_id: int) -> list[bytes]:
    """Every transaction hash ever recorded for the row, newest first: the current one and
    those it replaced (fee bumps, re-signs). Any of them may be the one mined."""
    async with raw_connection(engine) as conn:
        rows = await conn.fetch(
            "SELECT tx_hash FROM chain_tx_events WHERE tx_id = $1 AND tx_hash IS NOT NULL "
            "GROUP BY tx_hash ORDER BY max(id) DESC",
            tx_id,
        )
    return [bytes(r[0]) for r in rows]


#: what a transition may set; a move back to BUILT clears the transaction fields
_TX_FIELDS = ("nonce", "raw_tx", "tx_hash", "block_number", "block_hash", "gas_used")
_SETTABLE = frozenset({*_TX_FIELDS, "sender", "data", "attempts", "last_error"})


async def transition(
    engine: AsyncEngine,
    tx_id: int,
    from_status: TxStatus,
    to_status: TxStatus,
    *,
    detail: str | None = None,
    **fields: Any,
) -> bool:
    """Move row ``tx_id`` ``from_status -> to_status`` and set ``fields``; False when it was not
    in ``from_status`` any more (another worker moved it). Every transition is logged in
    ``chain_tx_events`` with the hash current after it."""
    if not set(fields) <= _SETTABLE:
        raise ValueError(f"bad chain tx transition to {to_status} with {sorted(fields)}")
    if to_status is TxStatus.BUILT:
        fields = dict.fromkeys(_TX_FIELDS) | fields
    async with raw_connection(engine) as conn, conn.transaction():
        return await _transition(conn, tx_id, from_status, to_status, detail, fields)


async def _transition(
    conn: asyncpg.Connection,
    tx_id: int,
    from_status: TxStatus,
    to_status: TxStatus,
    detail: str | None,
    fields: dict[str, Any],
) -> bool:
    names = sorted(fields)
    assignments = "".join(f", {name} = ${i + 4}" for i, name in enumerate(names))
    row = await conn.fetchrow(
        f"UPDATE chain_txs SET status = $3, updated_at = clock_timestamp(){assignments} "
        "WHERE id = $1 AND status = $2 RETURNING tx_hash",
        tx_id,
        from_status,
        to_status,
        *(fields[name] for name in names),
    )
    if row is None:
        return False
    await conn.execute(_EVENT, tx_id, from_status, to_status, row["tx_hash"], detail)
    return True


#: sign(nonce) -> (raw bytes, tx hash); called with the signer's nonce lock held
Signer = Callable[[int], Awaitable[tuple[bytes, bytes]]]


async def sign_and_store(
    engine: AsyncEngine,
    tx: ChainTx,
    *,
    sender: str,
    chain_nonce: int,
    sign: Signer,
    detail: str,
) -> int | None:
    """BUILT -> SIGNED with a fresh nonce: under the (chain, sender) lock, the nonce is the
    larger of ``chain_nonce`` (the node's pending count) and one past every nonce our rows hold
    for the sender; ``sign`` signs with it and the bytes are stored in the same database
    transaction. Returns the nonce, or None when another worker moved the row first."""
    async with raw_connection(engine) as conn, conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, $2))", sender.lower(), tx.chain_id
        )
        ours = await conn.fetchval(
            "SELECT max(nonce) + 1 FROM chain_txs WHERE chain_id = $1 AND sender = $2",
            tx.chain_id,
            sender,
        )
        nonce = max(chain_nonce, ours or 0)
        raw, tx_hash = await sign(nonce)
        moved = await _transition(
            conn, tx.id, TxStatus.BUILT, TxStatus.SIGNED, detail,
            {"sender": sender, "nonce": nonce, "raw_tx": raw, "tx_hash": tx_hash,
             "attempts": tx.attempts + 1, "last_error": None},
        )  # fmt: skip
    return nonce if moved else None


#: sign(channel, sequence number) -> (envelope bytes, tx hash); called with the channel held
ChannelSigner = Callable[[str, int], Awaitable[tuple[bytes, bytes]]]
#: the channel account's current sequence number on the chain (None: no such account)
ChainSequence = Callable[[str], Awaitable[int | None]]


async def lease_and_sign(
    engine: AsyncEngine,
    tx: ChainTx,
    *,
    channels: Sequence[str],
    chain_sequence: ChainSequence,
    sign: ChannelSigner,
    detail: str,
) -> tuple[str, int] | None:
    """BUILT -> SIGNED through a free channel account (Stellar): one transaction in flight per
    channel. Under the channel's advisory lock (tried, never waited for), a channel with no row
    SIGNED or BROADCAST is taken; the sequence number is the larger of the chain's + 1 and one
    past every sequence number our rows still hold for it; ``sign`` builds the envelope with it
    and the bytes are stored in the same database transaction. Returns (channel, sequence), or
    None when every channel is busy or another worker moved the row first."""
    if not channels:
        return None
    start = tx.id % len(channels)
    async with raw_connection(engine) as conn, conn.transaction():
        taken = {
            r["sender"]
            for r in await conn.fetch(
                "SELECT DISTINCT sender FROM chain_txs WHERE chain_id = $1 AND sender = ANY($2) "
                "AND status IN ('SIGNED', 'BROADCAST')",
                tx.chain_id,
                list(channels),
            )
        }
        for channel in [c for c in [*channels[start:], *channels[:start]] if c not in taken]:
            held = await conn.fetchval(
                "SELECT pg_try_advisory_xact_lock(hashtextextended($1, $2))", channel, tx.chain_id
            )
            if not held:
                continue
            busy = await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM chain_txs WHERE chain_id = $1 AND sender = $2 "
                "AND status IN ('SIGNED', 'BROADCAST'))",
                tx.chain_id,
                channel,
            )
            if busy:
                continue
            on_chain = await chain_sequence(channel)
            if on_chain is None:
                continue
            ours = await conn.fetchval(
                "SELECT max(nonce) + 1 FROM chain_txs WHERE chain_id = $1 AND sender = $2",
                tx.chain_id,
                channel,
            )
            seq = max(on_chain + 1, ours or 0)
            raw, tx_hash = await sign(channel, seq)
            moved = await _transition(
                conn, tx.id, TxStatus.BUILT, TxStatus.SIGNED, detail,
                {"sender": channel, "nonce": seq, "raw_tx": raw, "tx_hash": tx_hash,
                 "attempts": tx.attempts + 1, "last_error": None},
            )  # fmt: skip
            return (channel, seq) if moved else None
    return None


async def finished_unsettled(
    engine: AsyncEngine, purpose: str, settled_by: Sequence[str], *, limit: int
) -> list[ChainTx]:
    """Rows of ``purpose`` the outbox has finished with (FINALIZED, FAILED, REJECTED, EXPIRED)
    whose client has not settled them yet: no operation has the idempotency key
    ``prefix || ref`` for any prefix in ``settled_by``. Oldest first."""
    async with raw_connection(engine) as conn:
        rows = await conn.fetch(
            _SELECT + "WHERE purpose = $1 "
            "AND status IN ('FINALIZED', 'FAILED', 'REJECTED', 'EXPIRED') AND NOT EXISTS ("
            "  SELECT 1 FROM operations s WHERE s.idempotency_key = ANY("
            "    SELECT p || chain_txs.ref FROM unnest($2::text[]) AS p)) "
            "ORDER BY id LIMIT $3",
            purpose,
            list(settled_by),
            limit,
        )
    return [tx_from_row(r) for r in rows]
