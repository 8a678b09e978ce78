"""The Stellar variant of the transaction outbox: one persisted state machine per SAC call,
on the same ``chain_txs`` rows as the EVM outbox (:mod:`chain.evm.outbox`).

=========  ==================================================================================
status     what the next step does
=========  ==================================================================================
BUILT      take a free channel account (one transaction in flight per channel) and its next
           sequence number, simulate, sign (the admin signs the authorization entry, the
           channel the envelope; time bounds ``timeout_s``), store the envelope -> SIGNED, all
           in one database transaction (:func:`core.chain_txs.lease_and_sign`); the
           simulation says the call fails -> REJECTED (nothing signed, nothing sent)
SIGNED     send the stored envelope: PENDING or DUPLICATE -> BROADCAST; TRY_AGAIN_LATER ->
           stays SIGNED, the same envelope is sent again on the next pass; ERROR -> the result
           code is decoded and recorded, BROADCAST (whether it is dead is decided below)
BROADCAST  getTransaction: SUCCESS -> FINALIZED (its ledger and that ledger's hash: a closed
           Stellar ledger is final); FAILED -> FAILED (applied, the call failed: nothing
           minted, the sequence number spent); NOT_FOUND while the latest closed ledger's close
           time is not past the envelope's ``maxTime`` -> the same envelope sent again;
           NOT_FOUND after it -> EXPIRED only when provably never applied: the RPC's history
           covers every ledger it could have been applied in (its oldest ledger closed before
           the envelope existed), or the channel's sequence number never reached it. Otherwise
           it stays BROADCAST with an alarm: ops decide.
=========  ==================================================================================

A row is one intent; the envelope is stored before it is first sent and every re-send is the
same bytes (same hash); every transition is a compare-and-set on the status.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from prometheus_client import Counter
from stellar_sdk import Keypair
from stellar_sdk import xdr as sx

from chain.stellar.client import CallRefused, SendStatus, StellarClient
from core import chain_txs
from core.bridges.stellar import decode_mint_args
from core.chain_txs import UNFINISHED, ChainTx, TxStatus
from core.db import Engine

__all__ = ["StellarOutbox", "envelope_bounds"]

log = logging.getLogger(__name__)

MAX_STEPS = 10_000
AMBIGUOUS = Counter(
    "valueos_stellar_tx_ambiguous",
    "Stellar transactions past maxTime, absent, but not provably unapplied (ops must decide)",
    ["purpose"],
)
SEND_STATUS = Counter(
    "valueos_stellar_send_status", "sendTransaction answers by status", ["status"]
)


def envelope_bounds(raw: bytes) -> tuple[int, int]:
    """(minTime, maxTime) of a stored envelope (0: unbounded)."""
    env = sx.TransactionEnvelope.from_xdr_bytes(raw)
    assert env.v1 is not None  # noqa: S101 - the outbox stores v1 envelopes only
    cond = env.v1.tx.cond
    bounds = cond.time_bounds or (cond.v2.time_bounds if cond.v2 else None)
    if bounds is None:
        return 0, 0
    return bounds.min_time.time_point.uint64, bounds.max_time.time_point.uint64


@dataclass
class StellarOutbox:
    engine: Engine
    client: StellarClient
    admin: Keypair
    channels: Sequence[Keypair]
    #: the envelope's time bounds: valid for this long after it is built
    timeout_s: int = 30
    _keys: dict[str, Keypair] = field(default_factory=dict, init=False, repr=False)
    #: every channel was found busy in this round: the other BUILT rows wait for the next
    _channels_busy: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        self._keys = {k.public_key: k for k in self.channels}

    async def run_pass(self, purpose: str) -> list[tuple[int, TxStatus]]:
        """Advance every unfinished row of ``purpose`` as far as it goes without waiting."""
        steps: list[tuple[int, TxStatus]] = []
        for _ in range(MAX_STEPS):
            moved = False
            self._channels_busy = False
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
        match tx.status:
            case TxStatus.BUILT:
                return await self._from_built(tx)
            case TxStatus.SIGNED:
                return await self._from_signed(tx)
            case TxStatus.BROADCAST:
                return await self._from_broadcast(tx)
            case _:
                return False

    async def _move(self, tx: ChainTx, to: TxStatus, detail: str, **fields: object) -> bool:
        moved = await chain_txs.transition(
            self.engine, tx.id, tx.status, to, detail=detail, **fields
        )
        if moved:
            log.info("%s %s: %s -> %s: %s", tx.purpose, tx.ref, tx.status, to, detail)
        return moved

    async def _note(self, tx: ChainTx, detail: str, last_error: str) -> None:
        if tx.last_error != last_error:
            await chain_txs.transition(
                self.engine, tx.id, tx.status, tx.status, detail=detail, last_error=last_error
            )

    async def _from_built(self, tx: ChainTx) -> bool:
        if self._channels_busy:
            return False
        contract, to, amount = decode_mint_args(tx.data)

        async def sign(channel: str, seq: int) -> tuple[bytes, bytes]:
            env = await self.client.build_mint(
                contract=contract, to=to, amount=amount, channel=self._keys[channel], seq=seq,
                admin=self.admin, timeout_s=self.timeout_s,
            )  # fmt: skip
            return base64.b64decode(env.xdr), env.hash

        try:
            leased = await chain_txs.lease_and_sign(
                self.engine, tx, channels=list(self._keys), chain_sequence=self.client.account_seq,
                sign=sign, detail="signed",
            )  # fmt: skip
        except CallRefused as exc:
            return await self._move(tx, TxStatus.REJECTED, str(exc), last_error=str(exc))
        if leased is None:
            self._channels_busy = True
            return False
        log.info("%s %s: BUILT -> SIGNED: channel %s seq %d", tx.purpose, tx.ref, *leased)
        return True

    async def _send(self, tx: ChainTx) -> tuple[SendStatus, str | None]:
        assert tx.raw_tx is not None  # noqa: S101 - CHECK constraint on SIGNED rows
        sent = await self.client.send(base64.b64encode(tx.raw_tx).decode())
        SEND_STATUS.labels(sent.status.value).inc()
        return sent.status, sent.error

    async def _from_signed(self, tx: ChainTx) -> bool:
        status, error = await self._send(tx)
        if status is SendStatus.TRY_AGAIN_LATER:
            await self._note(tx, "try again later", "TRY_AGAIN_LATER: the same envelope is re-sent")
            return False
        if status is SendStatus.ERROR:
            return await self._move(tx, TxStatus.BROADCAST, f"sent: ERROR {error}",
                                    last_error=f"sendTransaction ERROR: {error}")  # fmt: skip
        return await self._move(tx, TxStatus.BROADCAST, f"sent: {status}")

    async def _from_broadcast(self, tx: ChainTx) -> bool:
        assert tx.tx_hash is not None  # noqa: S101 - CHECK'd
        assert tx.raw_tx is not None  # noqa: S101 - kept from SIGNED
        seen = await self.client.seen(tx.tx_hash)
        if seen.status in ("SUCCESS", "FAILED") and seen.ledger is not None:
            ledger_hash = await self.client.ledger_hash(seen.ledger)
            if ledger_hash is None:
                return False
            if seen.status == "SUCCESS":
                return await self._move(
                    tx, TxStatus.FINALIZED, f"ledger {seen.ledger}", block_number=seen.ledger,
                    block_hash=ledger_hash,
                )  # fmt: skip
            why = f"applied and failed in ledger {seen.ledger}: {seen.result_code}"
            return await self._move(
                tx, TxStatus.FAILED, why, block_number=seen.ledger, block_hash=ledger_hash,
                last_error=why,
            )  # fmt: skip
        min_time, max_time = envelope_bounds(tx.raw_tx)
        if not max_time or seen.latest_close_time <= max_time:
            status, error = await self._send(tx)  # dropped or not yet applied: the same bytes
            if status is SendStatus.ERROR:
                await self._note(tx, "re-sent", f"sendTransaction ERROR: {error}")
            return False
        built_at = max_time - self.timeout_s
        covered = seen.oldest_close_time <= min(built_at, min_time or built_at)
        assert tx.sender is not None  # noqa: S101 - SIGNED had them
        assert tx.nonce is not None  # noqa: S101
        on_chain = await self.client.account_seq(tx.sender)
        unreached = on_chain is not None and on_chain < tx.nonce
        if covered or unreached:
            why = (
                f"absent after ledger {seen.latest_ledger} closed past its maxTime {max_time}"
                + (" (the RPC's history covers its whole validity)" if covered else "")
                + (f" (channel sequence {on_chain} < {tx.nonce})" if unreached else "")
            )
            return await self._move(tx, TxStatus.EXPIRED, why, nonce=None, last_error=why)
        AMBIGUOUS.labels(tx.purpose).inc()
        log.error(
            "%s %s: past maxTime and absent, but its sequence number was consumed and the "
            "RPC's history does not cover its validity: not refunded", tx.purpose, tx.ref,
        )  # fmt: skip
        await self._note(tx, "ambiguous", "past maxTime, absent, sequence consumed: ops decide")
        return False
