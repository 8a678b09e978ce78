"""The supply invariant of a bridge token: what the ledger says must exist on-chain.

At a block ``B`` the bridge-in job has fully read (so every ``Redeemed`` event up to ``B`` is
recorded), in token units:

* ``low``  = the mints known mined by ``B`` (outbox rows CONFIRMED or FINALIZED at or below
  ``B``, a batched one by its carrier) - the redemptions recorded up to ``B`` (all but those
  whose block was dropped);
* ``high`` = ``low`` + the mints signed but not yet seen mined (SIGNED, BROADCAST): the outbox
  may simply not have looked yet.

``low <= totalSupply(B) <= high`` must hold. Above ``high`` means tokens exist that the ledger
never debited for (an unbacked mint: a leaked minter key, a bug); below ``low`` means tokens
were burned that the ledger has not seen. Either way outbound bridging of the asset stops
(:func:`core.bridges.tokens.set_paused`), the job alarms, and the token's ``pause()`` is
sent through the outbox (:func:`request_token_pause`) by the service's PAUSER.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.bridges.erc20 import MINT_PURPOSE
from core.chain_txs import enqueue
from core.epochs import raw_connection

if TYPE_CHECKING:
    from core.ledger import Ledger

__all__ = ["PAUSE_PURPOSE", "SupplyBounds", "request_token_pause", "supply_bounds"]


@dataclass(frozen=True, slots=True)
class SupplyBounds:
    block: int
    low: int
    high: int

    def holds(self, on_chain: int) -> bool:
        return self.low <= on_chain <= self.high


#: a BATCHED row's mint is where its carrier (one mintBatch transaction) is
_MINTS = """
SELECT
  COALESCE(SUM((o.metadata -> 'bridge' ->> 'token_amount')::numeric)
           FILTER (WHERE s.status IN ('CONFIRMED', 'FINALIZED') AND s.block_number <= $4), 0),
  COALESCE(SUM((o.metadata -> 'bridge' ->> 'token_amount')::numeric)
           FILTER (WHERE s.status IN ('SIGNED', 'BROADCAST')), 0)
FROM chain_txs t
LEFT JOIN chain_txs c ON t.status = 'BATCHED' AND c.id = t.carrier_id
CROSS JOIN LATERAL (SELECT COALESCE(c.status, t.status) AS status,
                           COALESCE(c.block_number, t.block_number) AS block_number) s
JOIN operations o ON o.type = 'BRIDGE_OUT' AND o.status = 'COMPLETED'
     AND o.metadata -> 'bridge' ->> 'id' = t.ref
WHERE t.purpose = $1 AND t.chain_id = $2 AND lower(t.to_address) = lower($3)
"""
_REDEEMED = """
SELECT COALESCE(SUM(amount), 0) FROM bridge_redemptions
WHERE chain_id = $1 AND lower(token) = lower($2) AND block_number <= $3
  AND outcome IS DISTINCT FROM 'DROPPED'
"""


async def supply_bounds(
    ledger: Ledger, chain_id: int, token: str, block: int, *, purpose: str = MINT_PURPOSE
) -> SupplyBounds:
    """The bounds of ``token``'s total supply at ``block`` (see the module's rule); ``purpose``:
    the outbox rows of its mints (a Stellar SAC's: ``sac_mint``, ``block`` a ledger)."""
    async with raw_connection(ledger.engine) as conn, conn.transaction(isolation="repeatable_read"):
        mined, pending = await conn.fetchrow(_MINTS, purpose, chain_id, token, block)
        redeemed = await conn.fetchval(_REDEEMED, chain_id, token, block)
    low = int(mined) - int(redeemed)
    return SupplyBounds(block, low, low + int(pending))


#: the outbox rows pausing a token on-chain after its invariant broke
PAUSE_PURPOSE = "token_pause"


async def request_token_pause(ledger: Ledger, chain_id: int, token: str, calldata: bytes) -> int:
    """Store the token's ``pause()`` call in the outbox, once per token (a second request
    returns the first row)."""
    async with raw_connection(ledger.engine) as conn:
        return await enqueue(
            conn, purpose=PAUSE_PURPOSE, ref=f"{chain_id}:{token.lower()}", chain_id=chain_id,
            to_address=token, data=calldata, detail="supply invariant broken",
        )  # fmt: skip
