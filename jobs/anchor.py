"""The seal -> build trees -> anchor -> confirm -> finalize job.

Every step is one state transition persisted in ``epoch_anchors`` before the next one starts,
so the job can stop anywhere (crash, deploy, kill -9) and the next run resumes from the
database and the chain:

=========  ==================================================================================
state      what the next run does
=========  ==================================================================================
(none)     sealed epoch without roots: build and store its trees and header -> SEALED
SEALED     read the contract first: our header already there -> adopt the tx of its
           ``Anchored`` event (CONFIRMED); another header there -> AnchorConflict, stop;
           else sign with the next nonce under the anchoring lock, persist -> SIGNED
SIGNED     broadcast the persisted bytes (same tx hash on every retry) -> BROADCAST
BROADCAST  receipt? success -> CONFIRMED (block number + hash); reverted -> re-read the
           contract, else back to SEALED; a transaction it replaced (fee bump) mined instead
           -> CONFIRMED with that one; still pending after ``bump_after_s`` -> re-signed with
           the same nonce and both fees +12.5%, persisted -> SIGNED (then broadcast); unknown
           to the node (dropped) -> re-send the same bytes (re-signed like a pending one once
           overdue: nodes drop what the base fee outgrew), or back to SEALED when the nonce
           was consumed by another transaction
CONFIRMED  block hash at that height still ours? deep enough (``confirmations`` blocks, or at
           or below the node's ``finalized`` block with ``finality="finalized"``) -> contract
           re-read -> FINALIZED; block replaced (reorg) -> re-included elsewhere: new block;
           else BROADCAST and sent again
=========  ==================================================================================

Before anything is signed the job checks (once per job) that the anchors already stored were
sent to the configured chain id and contract, and that the contract's ledger id is ours
(:class:`AnchorConfigMismatch` otherwise: it refuses to run), and before every signature that
the signer can pay ``gas * maxFeePerGas`` (:class:`chain.evm.anchor.InsufficientFunds`, also
stored as the anchor's ``last_error`` and counted in
``valueos_anchor_insufficient_funds_total``).

Exactly-once: one worker at a time signs (session advisory lock); a nonce is used by one
signed transaction; the contract accepts each epoch once, only in order and only on the right
previous header, so a duplicate send can never anchor twice or anchor a different root.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter, Gauge
from sqlalchemy.ext.asyncio import AsyncEngine

from chain.evm.anchor import AnchorClient, AnchorConflict, ChainError, InsufficientFunds, Mined
from core.anchors import (
    AnchorRecord,
    anchor_lock,
    anchor_targets,
    anchor_tx_hashes,
    get_anchor,
    transition,
    unfinished_anchors,
)
from core.epochs import EpochRoots, compute_pending_roots, seal_open_epoch

log = logging.getLogger(__name__)

#: safety bound on transitions per pass (a pass normally stops when it has to wait)
MAX_STEPS = 10_000
FINALITY_MODES = ("depth", "finalized")
_CAPPED = "pending, not re-signed"

SIGNER_BALANCE = Gauge(
    "valueos_anchor_signer_balance_wei", "Balance of the anchor signer when last checked (wei)"
)
INSUFFICIENT_FUNDS = Counter(
    "valueos_anchor_insufficient_funds",
    "Anchor transactions not signed because the signer could not pay for them",
)
FEE_BUMPS = Counter(
    "valueos_anchor_fee_bumps", "Stuck anchor transactions re-signed with higher fees"
)


class AnchorConfigMismatch(RuntimeError):
    """The stored anchors were sent to another chain or contract than the configured one (or the
    contract belongs to another ledger): running would split the anchors across two places."""


@dataclass
class PassResult:
    sealed: int | None = None
    built: list[int] = field(default_factory=list)
    steps: list[tuple[int, str]] = field(default_factory=list)
    locked_out: bool = False


@dataclass
class AnchorJob:
    engine: AsyncEngine
    client: AnchorClient
    ledger_id: bytes
    confirmations: int = 12
    seal_empty: bool = False
    #: re-sign a BROADCAST transaction still pending this many seconds after it was sent
    #: (same nonce, both fees +12.5%); None: never
    bump_after_s: float | None = 180.0
    #: never sign a replacement whose maxFeePerGas exceeds this (wei); None: no cap
    max_fee_cap: int | None = None
    #: "depth": FINALIZED at ``confirmations`` blocks; "finalized": when the node's
    #: ``finalized`` block reaches the anchor's block (depth when the node has no such tag)
    finality: str = "depth"
    _config_checked: bool = field(default=False, init=False, repr=False)
    #: epochs re-signed in the current pass (at most one fee bump per epoch and pass)
    _bumped: set[int] = field(default_factory=set, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.finality not in FINALITY_MODES:
            raise ValueError(f"finality must be one of {FINALITY_MODES}, not {self.finality!r}")

    async def check_config(self) -> None:
        """Refuse to run against another chain, contract or ledger than the stored anchors."""
        chain_id, address = await self.client.chain_id(), self.client.address
        for stored_chain, stored_address in await anchor_targets(self.engine):
            chain_differs = stored_chain is not None and stored_chain != chain_id
            address_differs = (
                stored_address is not None and stored_address.lower() != address.lower()
            )
            if chain_differs or address_differs:
                raise AnchorConfigMismatch(
                    f"anchors in the database were sent to chain id {stored_chain}, contract "
                    f"{stored_address}; the configuration says chain id {chain_id}, contract "
                    f"{address} (ETH_RPC_URL / VALUEOS_ANCHOR_CONTRACT): refusing to anchor"
                )
        onchain = await self.client.ledger_id()
        if onchain != self.ledger_id:
            raise AnchorConfigMismatch(
                f"contract {address} on chain id {chain_id} anchors ledger 0x{onchain.hex()}, "
                f"this ledger is 0x{self.ledger_id.hex()}: refusing to anchor"
            )
        self._config_checked = True

    # -- the pipeline --------------------------------------------------------------------
    async def seal(self, *, force: bool = False) -> int | None:
        """Seal the open epoch (skipped when empty unless ``force`` or ``seal_empty``)."""
        epoch = await seal_open_epoch(self.engine, allow_empty=force or self.seal_empty)
        if epoch is not None:
            log.info("sealed epoch %d", epoch)
        return epoch

    async def build(self) -> list[EpochRoots]:
        return await compute_pending_roots(self.engine, self.ledger_id)

    async def run_once(self, *, seal: bool = True, force_seal: bool = False) -> PassResult:
        """Seal (optionally), build missing trees, then advance every anchor as far as it goes
        without waiting."""
        result = PassResult()
        if seal:
            result.sealed = await self.seal(force=force_seal)
        result.built = [r.epoch for r in await self.build()]
        await self.anchor_pass(result)
        return result

    async def anchor_pass(self, result: PassResult | None = None) -> PassResult:
        result = result or PassResult()
        async with anchor_lock(self.engine) as got:
            if not got:
                result.locked_out = True
                return result
            if not self._config_checked:
                await self.check_config()
            self._bumped.clear()
            for _ in range(MAX_STEPS):
                for record in await unfinished_anchors(self.engine):
                    if await self.advance(record):
                        after = await get_anchor(self.engine, record.epoch)
                        result.steps.append((record.epoch, after.status if after else "?"))
                        break
                else:
                    return result
        return result

    async def run_until_final(
        self, *, deadline_s: float, poll: float = 1.0, seal: bool = True, force_seal: bool = False
    ) -> list[AnchorRecord]:
        """``valueos anchor --now``: one run, then poll until every anchor is FINALIZED or the
        deadline passes; returns the anchors still unfinished (empty: all final)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + deadline_s
        await self.run_once(seal=seal, force_seal=force_seal)
        while (pending := await unfinished_anchors(self.engine)) and loop.time() < deadline:
            await asyncio.sleep(poll)
            await self.anchor_pass()
        return pending

    # -- one transition ------------------------------------------------------------------
    async def advance(self, record: AnchorRecord) -> bool:
        """Make at most one transition of ``record``; False when it has to wait."""
        handler = {
            "SEALED": self._from_sealed,
            "SIGNED": self._from_signed,
            "BROADCAST": self._from_broadcast,
            "CONFIRMED": self._from_confirmed,
        }[record.status]
        return await handler(record)

    async def _move(self, record: AnchorRecord, to: str, detail: str, **fields: Any) -> bool:
        moved = await transition(
            self.engine, record.epoch, record.status, to, detail=detail, **fields
        )
        if moved:
            log.info("epoch %d anchor %s -> %s: %s", record.epoch, record.status, to, detail)
        return moved

    async def _from_sealed(self, record: AnchorRecord) -> bool:
        r = record.roots
        if r.epoch > 1:
            prev = await get_anchor(self.engine, r.epoch - 1)
            if prev is None or prev.status not in ("CONFIRMED", "FINALIZED"):
                return False  # the contract takes epochs in order: wait for the previous one
        onchain = await self.client.onchain_epoch(r.epoch)
        if onchain.anchored:
            if onchain.header != r.header:
                await transition(
                    self.engine, r.epoch, "SEALED", "SEALED",
                    detail="conflict", last_error="another header is anchored for this epoch",
                )  # fmt: skip
                raise AnchorConflict(
                    f"epoch {r.epoch}: the contract holds header 0x{onchain.header.hex()}, "
                    f"ours is 0x{r.header.hex()}; refusing to continue"
                )
            mined = await self.client.find_anchored_event(r.epoch)
            if mined is None:
                return False  # anchored, but its event is not visible yet
            return await self._move(
                record, "CONFIRMED", "found on chain (adopted after a restart)",
                chain_id=await self.client.chain_id(), contract_address=self.client.address,
                tx_hash=mined.tx_hash, block_number=mined.block_number,
                block_hash=mined.block_hash, gas_used=mined.gas_used,
            )  # fmt: skip
        try:
            signed = await self.client.sign_anchor(
                epoch=r.epoch, prev_header=r.prev_header, entries_root=r.entries_root,
                balances_root=r.balances_root, first_seq=r.first_seq, last_seq=r.last_seq,
                leaf_count=r.leaf_count,
            )  # fmt: skip
        except InsufficientFunds as exc:
            await self._unfunded(record, exc)
            raise
        return await self._move(
            record, "SIGNED", f"nonce {signed.nonce}",
            chain_id=await self.client.chain_id(), contract_address=self.client.address,
            sender=signed.sender, nonce=signed.nonce, raw_tx=signed.raw,
            tx_hash=signed.tx_hash, attempts=record.attempts + 1, last_error=None,
        )  # fmt: skip

    async def _from_signed(self, record: AnchorRecord) -> bool:
        assert record.raw_tx is not None  # noqa: S101 - CHECK constraint on SIGNED rows
        await self.client.broadcast(record.raw_tx)
        return await self._move(record, "BROADCAST", "sent")

    async def _resend_or_resign(self, record: AnchorRecord, why: str) -> bool:
        """The transaction is neither mined nor known to the node (dropped, reorged out)."""
        if (
            record.raw_tx is not None
            and record.nonce is not None
            and await self.client.confirmed_nonce() <= record.nonce
        ):
            if record.status == "BROADCAST" and await self._maybe_bump(record):
                return True  # dropped and overdue (e.g. the base fee outgrew it): re-signed
            await self.client.broadcast(record.raw_tx)  # nonce still free: the same bytes
            log.info("epoch %d: %s, sent the same transaction again", record.epoch, why)
            return False
        return await self._move(record, "SEALED", f"{why}; nonce used elsewhere, re-sign")

    async def _unfunded(self, record: AnchorRecord, exc: InsufficientFunds) -> None:
        INSUFFICIENT_FUNDS.inc()
        SIGNER_BALANCE.set(exc.balance)
        log.error("epoch %d: %s", record.epoch, exc)
        await transition(
            self.engine, record.epoch, record.status, record.status,
            detail="insufficient funds", last_error=str(exc),
        )  # fmt: skip

    async def _from_broadcast(self, record: AnchorRecord) -> bool:
        assert record.tx_hash is not None  # noqa: S101 - CHECK constraint
        mined = await self.client.mined(record.tx_hash)
        if mined is None:
            replaced = await self._mined_replaced(record)
            if replaced is not None:
                return await self._move(
                    record, "CONFIRMED",
                    f"block {replaced.block_number}: the transaction 0x{replaced.tx_hash.hex()} "
                    "it replaced was mined",
                    tx_hash=replaced.tx_hash, raw_tx=None, block_number=replaced.block_number,
                    block_hash=replaced.block_hash, gas_used=replaced.gas_used,
                )  # fmt: skip
            if await self.client.known(record.tx_hash):
                return await self._maybe_bump(record)  # pending in the mempool
            return await self._resend_or_resign(record, "transaction unknown to the node")
        if mined.success:
            return await self._move(
                record, "CONFIRMED", f"block {mined.block_number}",
                block_number=mined.block_number, block_hash=mined.block_hash,
                gas_used=mined.gas_used,
            )  # fmt: skip
        onchain = await self.client.onchain_epoch(record.epoch)
        if onchain.header == record.roots.header:
            return await self._move(
                record, "SEALED", "reverted but anchored by another transaction; adopt it"
            )
        await self._move(
            record, "SEALED", "reverted", last_error=f"anchor tx reverted in {mined.block_number}"
        )
        return False  # retried on the next pass, not in a hot loop

    async def _mined_replaced(self, record: AnchorRecord) -> Mined | None:
        """A successful receipt of an earlier transaction of this epoch (one a fee bump
        replaced, or one signed before a re-sign): the current one can then never be mined."""
        for tx_hash in await anchor_tx_hashes(self.engine, record.epoch):
            if tx_hash != record.tx_hash:
                mined = await self.client.mined(tx_hash)
                if mined is not None and mined.success:
                    return mined
        return None

    async def _maybe_bump(self, record: AnchorRecord) -> bool:
        """Pending: once ``bump_after_s`` have passed since it was sent, re-sign it with the same
        nonce and higher fees, persisted (SIGNED) before the broadcast."""
        if (
            self.bump_after_s is None
            or record.raw_tx is None
            or record.age_s is None
            or record.age_s < self.bump_after_s
            or record.epoch in self._bumped
        ):
            return False
        try:
            bumped = await self.client.bump_fees(record.raw_tx)
        except InsufficientFunds as exc:
            await self._unfunded(record, exc)
            raise
        if self.max_fee_cap is not None and bumped.max_fee > self.max_fee_cap:
            if not (record.last_error or "").startswith(_CAPPED):  # note it once
                await transition(
                    self.engine, record.epoch, "BROADCAST", "BROADCAST", detail="fee cap",
                    last_error=f"{_CAPPED}: a replacement would need maxFeePerGas "
                    f"{bumped.max_fee} wei, above the cap {self.max_fee_cap}",
                )  # fmt: skip
            return False
        FEE_BUMPS.inc()
        self._bumped.add(record.epoch)
        return await self._move(
            record, "SIGNED",
            f"fee bump after {record.age_s:.0f}s pending: nonce {bumped.nonce}, maxFeePerGas "
            f"{bumped.max_fee}, maxPriorityFeePerGas {bumped.max_priority_fee}",
            raw_tx=bumped.raw, tx_hash=bumped.tx_hash,
        )  # fmt: skip

    async def _from_confirmed(self, record: AnchorRecord) -> bool:
        if record.block_number is None or record.tx_hash is None:  # pragma: no cover
            raise ValueError(f"epoch {record.epoch}: CONFIRMED without a block")  # CHECK'd
        canonical = await self.client.block_hash(record.block_number)
        if canonical != record.block_hash:
            mined = await self.client.mined(record.tx_hash)
            if mined is not None and mined.success:
                return await self._move(
                    record, "CONFIRMED", f"reorg: now in block {mined.block_number}",
                    block_number=mined.block_number, block_hash=mined.block_hash,
                )  # fmt: skip
            return await self._move(
                record, "BROADCAST", f"reorg: block {record.block_number} replaced",
                block_number=None, block_hash=None,
            )  # fmt: skip
        finalized = None
        if self.finality == "finalized":
            finalized = await self.client.finalized_block()
        if finalized is not None:
            if finalized < record.block_number:
                return False
            why = f"at or below the finalized block {finalized}"
        else:
            depth = await self.client.head() - record.block_number + 1
            if depth < self.confirmations:
                return False
            why = f"{depth} confirmations"
        onchain = await self.client.onchain_epoch(record.epoch)
        if onchain.header != record.roots.header:  # pragma: no cover - defensive
            raise ChainError(f"epoch {record.epoch}: confirmed, but the contract disagrees")
        return await self._move(record, "FINALIZED", why)
