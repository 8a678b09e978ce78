"""The on-chain transaction outbox: one persisted state machine per outgoing transaction.

A client (the anchor job, a bridge) stores its intent with :func:`core.chain_txs.enqueue`,
BUILT, in its own database transaction; :class:`Outbox` then takes it to FINALIZED. Every step
is one transition persisted in ``chain_txs`` (and logged in ``chain_tx_events``) before the
next one starts, so a process can die anywhere and the next pass resumes from the database and
the chain:

=========  ==================================================================================
status     what the next step does
=========  ==================================================================================
BUILT      price the call, take the signer's next nonce (shared by every worker, see
           :func:`core.chain_txs.sign_and_store`), sign, store the raw bytes -> SIGNED; the
           node says the call reverts -> REJECTED (nothing signed; the client decides)
SIGNED     broadcast the stored bytes (the same hash on every retry) -> BROADCAST
BROADCAST  receipt? success -> CONFIRMED (block number + hash); reverted -> FAILED (the client
           decides); an earlier transaction of the row (one a fee bump replaced) mined instead
           -> CONFIRMED (or FAILED) with that one; still pending after ``bump_after_s`` ->
           re-signed with the same nonce and both fees +12.5%, stored -> SIGNED; unknown to the
           node (dropped, reorged out) -> the same bytes sent again (re-signed like a pending
           one once overdue: nodes drop what the base fee outgrew), or back to BUILT for a new
           nonce when another transaction consumed this one
CONFIRMED  block hash at that height still ours? deep enough (``confirmations`` blocks, or at
           or below the node's ``finalized`` block with ``Finality.FINALIZED``) -> FINALIZED;
           block replaced (reorg) -> re-included elsewhere: new block; else BROADCAST (then
           sent again)
=========  ==================================================================================

Exactly once: a row is one intent (``purpose`` + ``ref`` is unique); the bytes are stored
before they are sent; every transition is a compare-and-set on the status, so of two workers
advancing one row only one moves it, and a replacement the loser signed is never sent. A nonce
belongs to one row (advisory lock per signer and a unique index).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from prometheus_client import Counter, Gauge

from chain.evm.client import CallReverted, EvmClient, InsufficientFunds, Mined
from core import chain_txs
from core.chain_txs import UNFINISHED, ChainTx, TxStatus
from core.db import Engine

__all__ = ["Finality", "Outbox"]

log = logging.getLogger(__name__)

#: safety bound on transitions per pass (a pass normally stops when every row has to wait)
MAX_STEPS = 10_000
_CAPPED = "pending, not re-signed"

SIGNER_BALANCE = Gauge(
    "valueos_chain_signer_balance_wei",
    "Balance of a signer when last found short of funds (wei)",
    ["sender"],
)
INSUFFICIENT_FUNDS = Counter(
    "valueos_chain_tx_insufficient_funds",
    "Transactions not signed because the signer could not pay for them",
    ["purpose"],
)
FEE_BUMPS = Counter(
    "valueos_chain_tx_fee_bumps", "Stuck transactions re-signed with higher fees", ["purpose"]
)


class Finality(StrEnum):
    #: FINALIZED at ``confirmations`` blocks
    DEPTH = "depth"
    #: FINALIZED when the node's ``finalized`` block reaches the transaction's block (depth
    #: when the node has no such tag)
    FINALIZED = "finalized"


@dataclass
class Outbox:
    engine: Engine
    client: EvmClient
    confirmations: int = 12
    #: re-sign a BROADCAST transaction still pending this many seconds after it was sent
    #: (same nonce, both fees +12.5%); None: never
    bump_after_s: float | None = 180.0
    #: never sign a replacement whose maxFeePerGas exceeds this (wei); None: no cap
    max_fee_cap: int | None = None
    finality: Finality = Finality.DEPTH
    #: rows re-signed in the current pass (at most one fee bump per row and pass)
    _bumped: set[int] = field(default_factory=set, init=False, repr=False)

    def __post_init__(self) -> None:
        self.finality = Finality(self.finality)  # a bad string is a ValueError here

    def begin_pass(self) -> None:
        self._bumped.clear()

    async def run_pass(self, purpose: str) -> list[tuple[int, TxStatus]]:
        """Advance every unfinished row of ``purpose`` as far as it goes without waiting, one
        row after the other (oldest first); returns the transitions made as (row id, new
        status)."""
        self.begin_pass()
        steps: list[tuple[int, TxStatus]] = []
        for _ in range(MAX_STEPS):
            moved = False
            for tx in await chain_txs.unfinished_txs(self.engine, purpose):
                current: ChainTx | None = tx
                while current is not None and await self.advance(current):
                    moved = True
                    after = await chain_txs.get_tx(self.engine, current.id)
                    steps.append((current.id, after.status if after else current.status))
                    current = after if after is not None and after.status in UNFINISHED else None
            if not moved:
                return steps
        return steps

    async def advance(self, tx: ChainTx) -> bool:
        """Make at most one transition of ``tx``; False when it has to wait."""
        match tx.status:
            case TxStatus.BUILT:
                return await self._from_built(tx)
            case TxStatus.SIGNED:
                return await self._from_signed(tx)
            case TxStatus.BROADCAST:
                return await self._from_broadcast(tx)
            case TxStatus.CONFIRMED:
                return await self._from_confirmed(tx)
            case _:
                return False

    async def _move(self, tx: ChainTx, to: TxStatus, detail: str, **fields: Any) -> bool:
        moved = await chain_txs.transition(
            self.engine, tx.id, tx.status, to, detail=detail, **fields
        )
        if moved:
            log.info("%s %s: %s -> %s: %s", tx.purpose, tx.ref, tx.status, to, detail)
        return moved

    async def _note(self, tx: ChainTx, detail: str, last_error: str) -> None:
        """Record an error on the row without changing its status."""
        await chain_txs.transition(
            self.engine, tx.id, tx.status, tx.status, detail=detail, last_error=last_error
        )

    async def _unfunded(self, tx: ChainTx, exc: InsufficientFunds) -> None:
        INSUFFICIENT_FUNDS.labels(tx.purpose).inc()
        SIGNER_BALANCE.labels(exc.sender).set(exc.balance)
        log.error("%s %s: %s", tx.purpose, tx.ref, exc)
        await self._note(tx, "insufficient funds", str(exc))

    # -- the transitions -------------------------------------------------------------------
    async def _from_built(self, tx: ChainTx) -> bool:
        try:
            prepared = await self.client.prepare(tx.to_address, tx.data, tx.value_wei)
        except InsufficientFunds as exc:
            await self._unfunded(tx, exc)
            raise
        except CallReverted as exc:  # the contract refuses it: nothing to sign
            return await self._move(tx, TxStatus.REJECTED, str(exc), last_error=str(exc))

        async def sign(nonce: int) -> tuple[bytes, bytes]:
            signed = self.client.sign(prepared, nonce)
            return signed.raw, signed.tx_hash

        nonce = await chain_txs.sign_and_store(
            self.engine, tx, sender=self.client.sender, chain_nonce=prepared.chain_nonce,
            sign=sign, detail="signed",
        )  # fmt: skip
        if nonce is not None:
            log.info("%s %s: BUILT -> SIGNED: nonce %d", tx.purpose, tx.ref, nonce)
        return nonce is not None

    async def _from_signed(self, tx: ChainTx) -> bool:
        assert tx.raw_tx is not None  # noqa: S101 - CHECK constraint on SIGNED rows
        await self.client.broadcast(tx.raw_tx)
        return await self._move(tx, TxStatus.BROADCAST, "sent")

    async def _from_broadcast(self, tx: ChainTx) -> bool:
        assert tx.tx_hash is not None  # noqa: S101 - CHECK constraint
        mined = await self.client.mined(tx.tx_hash)
        if mined is None:
            mined = await self._mined_replaced(tx)
            if mined is None:
                if await self.client.known(tx.tx_hash):
                    return await self._maybe_bump(tx)  # pending in the mempool
                return await self._resend_or_resign(tx, "transaction unknown to the node")
            why = f"the transaction 0x{mined.tx_hash.hex()} it replaced was mined"
        else:
            why = ""
        if not mined.success:
            return await self._move(
                tx, TxStatus.FAILED, f"reverted in block {mined.block_number}",
                tx_hash=mined.tx_hash, block_number=mined.block_number,
                block_hash=mined.block_hash, gas_used=mined.gas_used,
                last_error=f"reverted in block {mined.block_number}",
            )  # fmt: skip
        return await self._move(
            tx, TxStatus.CONFIRMED, f"block {mined.block_number}" + (f": {why}" if why else ""),
            tx_hash=mined.tx_hash, block_number=mined.block_number, block_hash=mined.block_hash,
            gas_used=mined.gas_used,
        )  # fmt: skip

    async def _mined_replaced(self, tx: ChainTx) -> Mined | None:
        """A receipt of an earlier transaction of this row (one a fee bump replaced, or one
        signed before a re-sign): the current one can then never be mined."""
        for tx_hash in await chain_txs.tx_hashes(self.engine, tx.id):
            if tx_hash != tx.tx_hash:
                mined = await self.client.mined(tx_hash)
                if mined is not None:
                    return mined
        return None

    async def _resend_or_resign(self, tx: ChainTx, why: str) -> bool:
        """The transaction is neither mined nor known to the node (dropped, reorged out)."""
        if (
            tx.raw_tx is not None
            and tx.nonce is not None
            and await self.client.confirmed_nonce() <= tx.nonce
        ):
            if tx.status is TxStatus.BROADCAST and await self._maybe_bump(tx):
                return True  # dropped and overdue (e.g. the base fee outgrew it): re-signed
            await self.client.broadcast(tx.raw_tx)  # nonce still free: the same bytes
            log.info("%s %s: %s, sent the same transaction again", tx.purpose, tx.ref, why)
            return False
        return await self._move(tx, TxStatus.BUILT, f"{why}; nonce used elsewhere, re-sign")

    async def _maybe_bump(self, tx: ChainTx) -> bool:
        """Pending: once ``bump_after_s`` have passed since it was sent, re-sign it with the
        same nonce and higher fees, stored (SIGNED) before the broadcast."""
        if (
            self.bump_after_s is None
            or tx.raw_tx is None
            or tx.age_s < self.bump_after_s
            or tx.id in self._bumped
        ):
            return False
        try:
            bumped = await self.client.bump_fees(tx.raw_tx)
        except InsufficientFunds as exc:
            await self._unfunded(tx, exc)
            raise
        if self.max_fee_cap is not None and bumped.max_fee > self.max_fee_cap:
            if not (tx.last_error or "").startswith(_CAPPED):  # note it once
                await self._note(
                    tx, "fee cap",
                    f"{_CAPPED}: a replacement would need maxFeePerGas {bumped.max_fee} wei, "
                    f"above the cap {self.max_fee_cap}",
                )  # fmt: skip
            return False
        FEE_BUMPS.labels(tx.purpose).inc()
        self._bumped.add(tx.id)
        return await self._move(
            tx, TxStatus.SIGNED,
            f"fee bump after {tx.age_s:.0f}s pending: nonce {bumped.nonce}, maxFeePerGas "
            f"{bumped.max_fee}, maxPriorityFeePerGas {bumped.max_priority_fee}",
            raw_tx=bumped.raw, tx_hash=bumped.tx_hash,
        )  # fmt: skip

    async def _from_confirmed(self, tx: ChainTx) -> bool:
        if tx.block_number is None or tx.tx_hash is None:  # pragma: no cover - CHECK'd
            raise ValueError(f"chain tx {tx.id}: CONFIRMED without a block")
        canonical = await self.client.block_hash(tx.block_number)
        if canonical != tx.block_hash:
            mined = await self.client.mined(tx.tx_hash)
            if mined is not None and mined.success:
                return await self._move(
                    tx, TxStatus.CONFIRMED, f"reorg: now in block {mined.block_number}",
                    block_number=mined.block_number, block_hash=mined.block_hash,
                )  # fmt: skip
            return await self._move(
                tx, TxStatus.BROADCAST, f"reorg: block {tx.block_number} replaced",
                block_number=None, block_hash=None,
            )  # fmt: skip
        finalized = None
        if self.finality is Finality.FINALIZED:
            finalized = await self.client.finalized_block()
        if finalized is not None:
            if finalized < tx.block_number:
                return False
            why = f"at or below the finalized block {finalized}"
        else:
            depth = await self.client.head() - tx.block_number + 1
            if depth < self.confirmations:
                return False
            why = f"{depth} confirmations"
        return await self._move(tx, TxStatus.FINALIZED, why)
