"""Bridge tokens: where each bridged asset's ERC-20 lives, its decimals, and the outbound pause.

An asset's amounts map onto the token exactly: ``token units = minor units * 10 ** (decimals -
scale)``; :func:`to_token_units` refuses an amount that would not (decimals below the scale).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from core import audit
from core.errors import (
    Conflict,
    ReasonRequired,
    UnknownBridgeToken,
    ValidationError,
)
from core.storage_errors import translate
from core.types import Actor

if TYPE_CHECKING:
    from core.ledger import Ledger

__all__ = [
    "BridgeToken",
    "get_token",
    "register_token",
    "set_paused",
    "to_token_units",
]


@dataclass(frozen=True, slots=True)
class BridgeToken:
    asset: str
    chain_id: int
    address: str
    decimals: int
    paused: bool
    pause_reason: str | None


def _token(r: Any) -> BridgeToken:
    return BridgeToken(r.asset, r.chain_id, r.address, r.decimals, r.paused, r.pause_reason)


def to_token_units(amount: int, scale: int, decimals: int) -> int:
    """``amount`` minor units of an asset of ``scale`` in the token's units, exactly."""
    if decimals < scale:
        factor: int = 10 ** (scale - decimals)
        if amount % factor:
            raise ValidationError(
                f"the token has {decimals} decimals: this amount does not map onto it exactly",
                field="amount",
            )
        return amount // factor
    scaled: int = amount * 10 ** (decimals - scale)
    return scaled


async def get_token(ledger: Ledger, asset: str) -> BridgeToken:
    async with ledger.engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT * FROM bridge_tokens WHERE asset = :a AND chain = 'evm'"),
                {"a": asset},
            )
        ).first()
    if row is None:
        raise UnknownBridgeToken(f"asset {asset} has no bridge token", asset=asset)
    return _token(row)


async def register_token(
    ledger: Ledger, *, asset: str, chain_id: int, address: str, decimals: int, actor: Actor
) -> BridgeToken:
    """Record ``asset``'s token: once per asset (CONFLICT), and a contract serves one asset
    (ALREADY_EXISTS)."""
    await ledger.accounts.get_asset(asset)  # UNKNOWN_ASSET
    async with ledger.engine.begin() as conn:
        try:
            row = (
                await conn.execute(
                    text(
                        "INSERT INTO bridge_tokens (asset, chain_id, address, decimals) "
                        "VALUES (:a, :c, :ad, :d) ON CONFLICT (asset) DO NOTHING RETURNING *"
                    ),
                    {"a": asset, "c": chain_id, "ad": address, "d": decimals},
                )
            ).first()
        except DBAPIError as exc:
            raise translate(exc) from exc
        if row is None:
            raise Conflict(f"asset {asset} already has a bridge token", asset=asset)
        await audit.record(
            conn, actor, "bridge_token.registered", "bridge_token", asset,
            after={"chain_id": chain_id, "address": address, "decimals": decimals},
        )  # fmt: skip
    return _token(row)


async def set_paused(
    ledger: Ledger, asset: str, *, paused: bool, reason: str, actor: Actor
) -> BridgeToken:
    """Pause or resume outbound bridging of ``asset`` (audited, with the reason)."""
    if not reason.strip():
        raise ReasonRequired("pausing or resuming a bridge needs a reason", field="reason")
    async with ledger.engine.begin() as conn:
        row = (
            await conn.execute(
                text(
                    "UPDATE bridge_tokens SET paused = :p, pause_reason = :r, "
                    "updated_at = now() WHERE asset = :a RETURNING *"
                ),
                {"a": asset, "p": paused, "r": reason if paused else None},
            )
        ).first()
        if row is None:
            raise UnknownBridgeToken(f"asset {asset} has no bridge token", asset=asset)
        await audit.record(
            conn, actor, "bridge.paused" if paused else "bridge.resumed", "bridge_token", asset,
            after={"paused": paused}, reason=reason,
        )  # fmt: skip
    return _token(row)
