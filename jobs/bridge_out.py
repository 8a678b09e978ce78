"""The ERC-20 bridge-out job body: send the stored mints, then settle what the outbox finished.

One pass:

1. the outbox advances every mint row (purpose ``erc20_mint``): sign with the minter's key,
   send, re-send, bump, follow reorgs, finalize (:class:`chain.evm.outbox.Outbox`);
2. each bridge-out whose mint the outbox is done with is settled
   (:func:`core.bridges.erc20.settle`): FINALIZED -> BRIDGED_OUT; FAILED or REJECTED (the
   contract refuses the mint) -> refunded only when
   the token says the bridge id was never minted (``minted(bridgeId)`` is false), else it
   counts as minted.

A pass can stop anywhere: the outbox resumes from its rows, and settling is idempotent.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from chain.evm.outbox import Outbox
from core.bridges.erc20 import MINT_PURPOSE, Settlement, settle, unsettled_mints
from core.chain_txs import TxStatus
from core.ledger import Ledger
from core.types import Actor, Role

log = logging.getLogger(__name__)

BRIDGE_ACTOR = Actor("worker:bridge-out", Role.SYSTEM)

#: (token address, bridge id) -> whether the token has minted that id
MintedCheck = Callable[[str, bytes], Awaitable[bool]]


@dataclass
class BridgeOutPass:
    steps: int = 0
    settled: dict[str, Settlement] = field(default_factory=dict)


async def bridge_out_pass(ledger: Ledger, outbox: Outbox, minted: MintedCheck) -> BridgeOutPass:
    result = BridgeOutPass(steps=len(await outbox.run_pass(MINT_PURPOSE)))
    for tx in await unsettled_mints(ledger):
        proven = None
        if tx.status in (TxStatus.FAILED, TxStatus.REJECTED):
            proven = await minted(tx.to_address, bytes.fromhex(tx.ref))
        kind = await settle(ledger, tx, minted=proven, actor=BRIDGE_ACTOR)
        if kind is not None:
            result.settled[tx.ref] = kind
            log.info("bridge-out %s settled: %s", tx.ref, kind)
    return result
