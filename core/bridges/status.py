"""The state of every bridge token at a glance: pause (with its reason, e.g. a broken supply
invariant), bridge-outs by state, and redemptions by outcome."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from core.storage_errors import translate

if TYPE_CHECKING:
    from core.ledger import Ledger

__all__ = ["TokenStatus", "bridge_status"]


@dataclass(frozen=True, slots=True)
class TokenStatus:
    asset: str
    chain_id: int
    address: str
    decimals: int
    paused: bool
    pause_reason: str | None
    #: bridge-outs per state: IN_FLIGHT, MINTED, REFUNDED
    outs: dict[str, int]
    #: redemptions per outcome: PENDING, CREDITED, SUSPENDED (unresolved), RESOLVED, DROPPED
    ins: dict[str, int]


_OUTS = """
SELECT o.metadata -> 'bridge' ->> 'token' AS token,
       CASE s.type WHEN 'BRIDGE_OUT_FINAL' THEN 'MINTED' WHEN 'BRIDGE_OUT_REFUND' THEN 'REFUNDED'
                   ELSE 'IN_FLIGHT' END AS state, count(*) AS n
FROM operations o
LEFT JOIN operations s ON s.idempotency_key = ANY(ARRAY[
     'bridge-final:' || (o.metadata -> 'bridge' ->> 'id'),
     'bridge-refund:' || (o.metadata -> 'bridge' ->> 'id')])
WHERE o.type = 'BRIDGE_OUT' AND o.status = 'COMPLETED'
GROUP BY 1, 2
"""
_INS = """
SELECT token, CASE WHEN outcome IS NULL THEN 'PENDING'
                   WHEN outcome = 'SUSPENDED' AND resolved_operation IS NOT NULL THEN 'RESOLVED'
                   ELSE outcome END AS state, count(*) AS n
FROM bridge_redemptions GROUP BY 1, 2
"""


async def bridge_status(ledger: Ledger) -> list[TokenStatus]:
    try:
        async with ledger.engine.connect() as conn:
            tokens = (await conn.execute(text("SELECT * FROM bridge_tokens ORDER BY asset"))).all()
            outs = (await conn.execute(text(_OUTS))).all()
            ins = (await conn.execute(text(_INS))).all()
    except DBAPIError as exc:
        raise translate(exc) from exc
    return [
        TokenStatus(
            t.asset,
            t.chain_id,
            t.address,
            t.decimals,
            t.paused,
            t.pause_reason,
            {r.state: r.n for r in outs if r.token.lower() == t.address.lower()},
            {r.state: r.n for r in ins if r.token.lower() == t.address.lower()},
        )
        for t in tokens
    ]
