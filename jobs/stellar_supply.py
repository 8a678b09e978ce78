"""The Stellar supply invariant job: for each Stellar asset, what the network minted - burned
by its SAC's events (read by the watcher up to the ledger it has fully read) must lie within
the ledger's bounds (:func:`core.bridges.supply.supply_bounds` over the ``sac_mint`` rows: the
mints known applied - the recorded burns, up to + the mints not yet seen applied). A SAC has
no total-supply call, so the events are the network's side. Outside the bounds (an unbacked
mint by a leaked admin key, a bug) outbound bridging of the asset is paused with the figures as
the reason (audited), ``valueos_stellar_supply_broken_total{asset}`` counts it and the job logs
an ERROR; staff resume it once understood."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from prometheus_client import Counter

from chain.stellar.client import StellarClient
from core.bridges.redemptions import next_block
from core.bridges.stellar import MINT_PURPOSE, get_stellar_token, stellar_tokens
from core.bridges.stellar_in import event_supply
from core.bridges.supply import SupplyBounds, supply_bounds
from core.bridges.tokens import set_paused
from core.ledger import Ledger
from core.types import Actor, Role

log = logging.getLogger(__name__)

SUPPLY_ACTOR = Actor("worker:stellar-supply", Role.SYSTEM)
SUPPLY_BROKEN = Counter(
    "valueos_stellar_supply_broken", "Stellar supply invariant violations, per asset", ["asset"]
)


@dataclass(frozen=True, slots=True)
class StellarSupplyCheck:
    asset: str
    on_chain: int
    bounds: SupplyBounds

    @property
    def holds(self) -> bool:
        return self.bounds.holds(self.on_chain)


async def stellar_supply_pass(
    ledger: Ledger, client: StellarClient, *, chain_id: int
) -> list[StellarSupplyCheck]:
    checks = []
    _, latest = await client.retention()
    for token in await stellar_tokens(ledger, chain_id):
        read = await next_block(ledger, chain_id, token.contract, start=latest + 1) - 1
        at = min(read, latest)
        check = StellarSupplyCheck(
            token.asset, await event_supply(ledger, token, at),
            await supply_bounds(ledger, chain_id, token.contract, at, purpose=MINT_PURPOSE),
        )  # fmt: skip
        checks.append(check)
        if check.holds:
            continue
        SUPPLY_BROKEN.labels(token.asset).inc()
        b = check.bounds
        reason = (
            f"supply invariant broken at ledger {b.block}: minted - burned by events "
            f"{check.on_chain} is outside [{b.low}, {b.high}] (applied mints - burns, + mints "
            "not yet seen applied)"
        )
        log.error("stellar asset %s (%s): %s", token.asset, token.contract, reason)
        if not (await get_stellar_token(ledger, token.asset)).paused:
            await set_paused(ledger, token.asset, paused=True, reason=reason, actor=SUPPLY_ACTOR)
    return checks
