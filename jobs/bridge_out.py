"""The ERC-20 bridge-out job body: send the stored mints, then settle what the outbox finished.

One pass:

1. mint rows waiting to be signed are gathered per token into carriers of up to ``batch_max``:
   one ``mintBatch`` transaction each (:func:`core.chain_txs.batch`; a row that was carried
   once and came back goes alone);
2. the outbox advances every mint and carrier row: sign with the minter's key, send,
   re-send, bump, follow reorgs, finalize (:class:`chain.evm.outbox.Outbox`); the rows of a
   final carrier are final, those of a failed one are sent alone
   (:func:`core.chain_txs.end_carried`);
3. each bridge-out whose mint the outbox is done with is settled
   (:func:`core.bridges.erc20.settle`): FINALIZED -> BRIDGED_OUT; FAILED or REJECTED (the
   contract refuses the mint) -> refunded only when
   the token says the bridge id was never minted (``minted(bridgeId)`` is false), else it
   counts as minted.

While an integrity alarm is open (:mod:`core.integrity`) steps 1 and 2 are skipped: no mint is
signed or sent until an operator acknowledges it.

A pass can stop anywhere: the outbox resumes from its rows, and settling is idempotent.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from chain.evm.bridge_token import mint_batch_calldata
from chain.evm.outbox import Outbox
from core import chain_txs, integrity
from core.bridges.erc20 import (
    BATCH_PURPOSE,
    MINT_PURPOSE,
    Settlement,
    decode_mint,
    settle_many,
    unsettled_mints,
)
from core.chain_txs import ChainTx, TxStatus
from core.ledger import Ledger
from core.types import Actor, ChainIntent, Role
from merkle.tree import keccak256

log = logging.getLogger(__name__)

BRIDGE_ACTOR = Actor("worker:bridge-out", Role.SYSTEM)

#: (token address, bridge id) -> whether the token has minted that id
MintedCheck = Callable[[str, bytes], Awaitable[bool]]


#: mint rows per ``mintBatch`` transaction
BATCH_MAX = 100


@dataclass
class BridgeOutPass:
    carriers: int = 0
    steps: int = 0
    settled: dict[str, Settlement] = field(default_factory=dict)
    #: an integrity alarm is open: nothing signed or sent, only settlement ran
    paused: bool = False


async def gather_batches(ledger: Ledger, batch_max: int = BATCH_MAX) -> int:
    """Carriers made for the mint rows waiting to be signed (per token, two or more)."""
    made = 0
    waiting = await chain_txs.batchable_rows(ledger.engine, MINT_PURPOSE, limit=batch_max * 50)
    by_token: dict[tuple[int, str], list[ChainTx]] = {}
    for tx in waiting:
        by_token.setdefault((tx.chain_id, tx.to_address), []).append(tx)
    for (chain_id, token), rows in by_token.items():
        for start in range(0, len(rows), batch_max):
            members = rows[start : start + batch_max]
            if len(members) < 2:
                continue
            data = mint_batch_calldata([decode_mint(m.data) for m in members])
            ref = keccak256(b"".join(m.ref.encode() for m in members)).hex()
            carrier = ChainIntent(BATCH_PURPOSE, ref, chain_id, token, data)
            if await chain_txs.batch(ledger.engine, members, carrier) is not None:
                made += 1
    return made


async def bridge_out_pass(
    ledger: Ledger, outbox: Outbox, minted: MintedCheck, *, batch_max: int = BATCH_MAX
) -> BridgeOutPass:
    result = BridgeOutPass()
    if await integrity.paused(ledger.engine):
        log.error("bridge mints paused: an integrity alarm is open (valueos audit)")
        result.paused = True
    else:
        if batch_max > 1:
            result.carriers = await gather_batches(ledger, batch_max)
        for purpose in (MINT_PURPOSE, BATCH_PURPOSE):
            result.steps += len(await outbox.run_pass(purpose))
        await chain_txs.end_carried(ledger.engine)
    ended = []
    for tx in await unsettled_mints(ledger):
        proven = None
        if tx.status in (TxStatus.FAILED, TxStatus.REJECTED):
            proven = await minted(tx.to_address, bytes.fromhex(tx.ref))
        ended.append((tx, proven))
    for ref, done in (await settle_many(ledger, ended, actor=BRIDGE_ACTOR)).items():
        if isinstance(done, Settlement):
            result.settled[ref] = done
            log.info("bridge-out %s settled: %s", ref, done)
        else:
            log.error("bridge-out %s not settled: %s", ref, done)
    return result
