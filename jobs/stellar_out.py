"""The Stellar bridge-out job body: send the stored SAC mints through channel accounts, then
settle what the outbox finished.

One pass: the Stellar outbox advances every ``sac_mint`` row (:class:`chain.stellar.outbox.
StellarOutbox`: channel, envelope stored before the first send, re-sends of the same bytes,
statuses); then each bridge-out whose mint ended is settled with the ERC-20 bridge's
settlement (:func:`core.bridges.erc20.settle_many`): FINALIZED -> BRIDGED_OUT; REJECTED
(nothing was signed), FAILED (applied and failed: nothing minted) or EXPIRED (provably never
applied) -> refunded to the user.

A pass can stop anywhere: the outbox resumes from its rows, and settling is idempotent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from chain.stellar.outbox import StellarOutbox
from core.bridges.erc20 import Settlement, settle_many, unsettled_mints
from core.bridges.stellar import MINT_PURPOSE
from core.chain_txs import TxStatus
from core.ledger import Ledger
from core.types import Actor, Role

log = logging.getLogger(__name__)

BRIDGE_ACTOR = Actor("worker:stellar-bridge-out", Role.SYSTEM)


@dataclass
class StellarOutPass:
    steps: int = 0
    settled: dict[str, Settlement] = field(default_factory=dict)


async def stellar_out_pass(ledger: Ledger, outbox: StellarOutbox) -> StellarOutPass:
    result = StellarOutPass(steps=len(await outbox.run_pass(MINT_PURPOSE)))
    ended = [
        (tx, None if tx.status is TxStatus.FINALIZED else False)
        for tx in await unsettled_mints(ledger, purpose=MINT_PURPOSE)
    ]
    for ref, done in (await settle_many(ledger, ended, actor=BRIDGE_ACTOR)).items():
        if isinstance(done, Settlement):
            result.settled[ref] = done
            log.info("stellar bridge-out %s settled: %s", ref, done)
        else:
            log.error("stellar bridge-out %s not settled: %s", ref, done)
    return result
