"""The bridge supply invariant job: each token's ``totalSupply()`` against the ledger's account.

For each bridge token on the node's chain, at ``B`` = the lower of the final block and the
last block the bridge-in job has fully read, ``totalSupply()`` at ``B`` must lie within
:func:`core.bridges.supply.supply_bounds`. When it does not, outbound bridging of the asset is
paused with the figures as the reason (audited), the job logs an ERROR, and
``valueos_bridge_supply_broken_total{asset}`` counts it; ``valueos_bridge_supply_holds{asset}``
shows the last result (1 holds, 0 broken); with the tokens' PAUSER at hand (the worker's anchor
signer, which ``valueos deploy-token`` makes the pauser) the token's ``pause()`` is sent too,
through the outbox. Staff resume the asset (and unpause the token) once it is understood.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from prometheus_client import Counter, Gauge

from chain.evm.bridge_token import pause_calldata
from chain.evm.client import EvmClient
from chain.evm.outbox import Finality, Outbox
from core.bridges.redemptions import chain_tokens, next_block
from core.bridges.supply import (
    PAUSE_PURPOSE,
    SupplyBounds,
    request_token_pause,
    supply_bounds,
)
from core.bridges.tokens import get_token, set_paused
from core.ledger import Ledger
from core.types import Actor, Role
from jobs.bridge_in import TokenReader, final_block

log = logging.getLogger(__name__)

SUPPLY_ACTOR = Actor("worker:bridge-supply", Role.SYSTEM)
SUPPLY_BROKEN = Counter(
    "valueos_bridge_supply_broken", "Supply invariant violations found, per asset", ["asset"]
)
SUPPLY_HOLDS = Gauge(
    "valueos_bridge_supply_holds", "1 when the asset's last supply check held, else 0", ["asset"]
)


@dataclass(frozen=True, slots=True)
class SupplyCheck:
    asset: str
    token: str
    on_chain: int
    bounds: SupplyBounds

    @property
    def holds(self) -> bool:
        return self.bounds.holds(self.on_chain)


async def supply_pass(
    ledger: Ledger,
    chain: EvmClient,
    reader: TokenReader,
    *,
    confirmations: int,
    finality: Finality,
    start_block: int = 0,
    pauser: Outbox | None = None,
) -> list[SupplyCheck]:
    """Check every token of the chain once; pause the assets whose invariant is broken, and
    with a ``pauser`` (the outbox of the tokens' PAUSER) the tokens themselves."""
    chain_id = await chain.chain_id()
    final = await final_block(chain, confirmations, finality)
    checks: list[SupplyCheck] = []
    for token in await chain_tokens(ledger, chain_id):
        read = await next_block(ledger, chain_id, token.address, start=start_block) - 1
        block = min(final, read)
        if block < 0:
            continue  # nothing final and read yet
        on_chain = await reader(token.address).total_supply(block)
        check = SupplyCheck(
            token.asset, token.address, on_chain,
            await supply_bounds(ledger, chain_id, token.address, block),
        )  # fmt: skip
        checks.append(check)
        SUPPLY_HOLDS.labels(token.asset).set(1 if check.holds else 0)
        if check.holds:
            continue
        SUPPLY_BROKEN.labels(token.asset).inc()
        b = check.bounds
        reason = (
            f"supply invariant broken at block {b.block}: totalSupply {on_chain} is outside "
            f"[{b.low}, {b.high}] (mined mints - redemptions, + mints not yet seen mined)"
        )
        log.error("bridge token %s (%s): %s", token.asset, token.address, reason)
        if not (await get_token(ledger, token.asset)).paused:
            await set_paused(ledger, token.asset, paused=True, reason=reason, actor=SUPPLY_ACTOR)
        if pauser is not None:
            await request_token_pause(ledger, chain_id, token.address, pause_calldata())
    if pauser is not None:  # sends, and follows what earlier passes stored
        await pauser.run_pass(PAUSE_PURPOSE)
    return checks
