"""The seal -> build trees -> anchor -> confirm -> finalize job.

The anchor transaction of each epoch is one row of the on-chain outbox
(:mod:`chain.evm.outbox`), which signs, sends, re-sends, bumps, follows reorgs and finalizes
it. This job decides what only the ledger knows, one persisted step at a time, so it can stop
anywhere (crash, deploy, kill -9) and the next run resumes from the database and the chain:

* an epoch is anchored only after the previous one is CONFIRMED (the contract takes epochs in
  order, each on the previous header);
* while nothing is signed for it (SEALED: no outbox row, or BUILT, or FAILED) it reads the
  contract first: our header already there -> the row adopts the transaction of its
  ``Anchored`` event (CONFIRMED); another header there -> :class:`AnchorConflict`, recorded,
  never retried; else the ``anchor(...)`` call is stored as the epoch's outbox row (BUILT) and
  signed; a reverted one (FAILED) is built again;
* from SIGNED on, each step is the outbox's.

Before anything is signed the job checks (once per job) that the anchors already stored were
sent to the configured chain id and contract -- or, for a contract that continues an earlier
one's header chain from its genesis epoch G, that the anchors sent elsewhere end at G and that
its genesis header is our header of G -- and that the contract's ledger id is ours
(:class:`AnchorConfigMismatch` otherwise: it refuses to run). The outbox checks before every
signature that the signer can pay ``gas * maxFeePerGas``
(:class:`chain.evm.client.InsufficientFunds`, also stored as the row's ``last_error`` and
counted in ``valueos_chain_tx_insufficient_funds_total``).

While an integrity alarm is open (:mod:`core.integrity`) nothing is sealed, built or newly
signed; a sealer that finds the rows disagreeing with the anchored past raises one instead of
building (never a traceback).

Exactly once: one worker at a time advances anchors (session advisory lock); the outbox gives
a nonce to one row; the contract accepts each epoch once, only in order and only on the right
previous header, so a duplicate send can never anchor twice or anchor a different root.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from chain.evm.anchor import AnchorClient, AnchorConflict
from chain.evm.outbox import Finality, Outbox
from core import chain_txs, integrity
from core.anchors import (
    AnchorRecord,
    AnchorStatus,
    adopt,
    anchor_lock,
    anchor_targets,
    attach_tx,
    get_anchor,
    record_conflict,
    unfinished_anchors,
)
from core.chain_txs import ChainTx, TxStatus
from core.db import Engine
from core.epochs import EpochRoots, compute_pending_roots, seal_open_epoch
from core.errors import LedgerIntegrityError

log = logging.getLogger(__name__)

#: safety bound on transitions per pass (a pass normally stops when it has to wait)
MAX_STEPS = 10_000


class AnchorConfigMismatch(RuntimeError):
    """The stored anchors were sent to another chain or contract than the configured one (or the
    contract belongs to another ledger): running would split the anchors across two places."""


@dataclass
class PassResult:
    sealed: int | None = None
    built: list[int] = field(default_factory=list)
    steps: list[tuple[int, AnchorStatus | None]] = field(default_factory=list)
    locked_out: bool = False
    #: an integrity alarm is open (or was raised by this run): nothing sealed, built or anchored
    paused: bool = False


@dataclass
class AnchorJob:
    engine: Engine
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
    finality: str = Finality.DEPTH
    _config_checked: bool = field(default=False, init=False, repr=False)
    _outbox: Outbox = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.finality not in tuple(Finality):
            raise ValueError(
                f"finality must be one of {tuple(str(f) for f in Finality)}, not {self.finality!r}"
            )
        self._outbox = Outbox(self.engine, self.client)

    @property
    def outbox(self) -> Outbox:
        """The outbox carrying the anchors, with this job's current settings."""
        box = self._outbox
        box.confirmations, box.bump_after_s = self.confirmations, self.bump_after_s
        box.max_fee_cap, box.finality = self.max_fee_cap, Finality(self.finality)
        return box

    async def check_config(self) -> None:
        """Refuse to run against another chain, contract or ledger than the stored anchors."""
        chain_id, address = await self.client.chain_id(), self.client.address
        genesis = await self.client.genesis_epoch()
        for stored_chain, stored_address, last_sent in await anchor_targets(self.engine):
            if stored_chain == chain_id and stored_address.lower() == address.lower():
                continue
            if last_sent > genesis:  # an earlier contract's epochs end at this one's genesis
                raise AnchorConfigMismatch(
                    f"anchors in the database were sent to chain id {stored_chain}, contract "
                    f"{stored_address}; the configuration says chain id {chain_id}, contract "
                    f"{address} (ETH_RPC_URL / VALUEOS_ANCHOR_CONTRACT): refusing to anchor"
                )
        if genesis > 0:
            ours = await get_anchor(self.engine, genesis)
            theirs = (await self.client.onchain_epoch(genesis)).header
            if ours is None or ours.roots.header != theirs:
                raise AnchorConfigMismatch(
                    f"contract {address} continues the header chain from epoch {genesis} with "
                    f"header 0x{theirs.hex()}, which is not this ledger's header of that epoch: "
                    "refusing to anchor"
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
        if await integrity.paused(self.engine):
            log.error("sealing and anchoring paused: an integrity alarm is open (valueos audit)")
            result.paused = True
            return result
        try:
            if seal:
                result.sealed = await self.seal(force=force_seal)
            result.built = [r.epoch for r in await self.build()]
        except LedgerIntegrityError as exc:
            await integrity.alarm_from_error(self.engine, "sealer", exc)
            result.paused = True
            return result
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
            self.outbox.begin_pass()
            for _ in range(MAX_STEPS):
                for record in await unfinished_anchors(self.engine):
                    if await self.advance(record):
                        after = await get_anchor(self.engine, record.epoch)
                        result.steps.append((record.epoch, after.status if after else None))
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
        tx = None if record.tx_id is None else await chain_txs.get_tx(self.engine, record.tx_id)
        if tx is None or tx.status in (TxStatus.BUILT, TxStatus.FAILED, TxStatus.REJECTED):
            return await self._unsigned(record, tx)
        return await self.outbox.advance(tx)

    def _calldata(self, r: EpochRoots) -> bytes:
        return self.client.anchor_calldata(
            epoch=r.epoch, prev_header=r.prev_header, entries_root=r.entries_root,
            balances_root=r.balances_root, first_seq=r.first_seq, last_seq=r.last_seq,
            leaf_count=r.leaf_count,
        )  # fmt: skip

    async def _unsigned(self, record: AnchorRecord, tx: ChainTx | None) -> bool:
        """SEALED: nothing of this epoch is signed (no outbox row, BUILT, FAILED, REJECTED)."""
        r = record.roots
        if await integrity.paused(self.engine):
            return False  # an integrity alarm is open: anchor nothing new
        if r.epoch > 1:
            prev = await get_anchor(self.engine, r.epoch - 1)
            if prev is None or prev.status not in (AnchorStatus.CONFIRMED, AnchorStatus.FINALIZED):
                return False  # the contract takes epochs in order: wait for the previous one
        onchain = await self.client.onchain_epoch(r.epoch)
        if onchain.anchored:
            if onchain.header != r.header:
                await record_conflict(
                    self.engine, r.epoch, "another header is anchored for this epoch"
                )
                raise AnchorConflict(
                    f"epoch {r.epoch}: the contract holds header 0x{onchain.header.hex()}, "
                    f"ours is 0x{r.header.hex()}; refusing to continue"
                )
            return await self._adopt(record, tx)
        if tx is None:
            await attach_tx(
                self.engine, r.epoch, chain_id=await self.client.chain_id(),
                contract=self.client.address, calldata=self._calldata(r),
            )  # fmt: skip
            return True
        if tx.status in (TxStatus.FAILED, TxStatus.REJECTED):
            await chain_txs.transition(
                self.engine, tx.id, tx.status, TxStatus.BUILT,
                detail="reverted; build again", data=self._calldata(r),
            )  # fmt: skip
            return False  # signed again on the next pass, not in a hot loop
        return await self.outbox.advance(tx)

    async def _adopt(self, record: AnchorRecord, tx: ChainTx | None) -> bool:
        """Our header is on chain: the outbox row becomes the transaction of its event."""
        mined = await self.client.find_anchored_event(record.epoch)
        if mined is None:
            return False  # anchored, but its event is not visible yet
        if tx is None:
            tx_id = await attach_tx(
                self.engine, record.epoch, chain_id=await self.client.chain_id(),
                contract=self.client.address, calldata=self._calldata(record.roots),
            )  # fmt: skip
            status = TxStatus.BUILT
        else:
            tx_id, status = tx.id, tx.status
        return await adopt(
            self.engine, tx_id, status, tx_hash=mined.tx_hash, block_number=mined.block_number,
            block_hash=mined.block_hash, gas_used=mined.gas_used,
            detail="found on chain (adopted after a restart)",
        )  # fmt: skip
