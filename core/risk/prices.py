"""Collateral prices: every round a source reports is recorded with a verdict; only an
ACCEPTED round moves the asset's price. Anything untrustworthy freezes the asset (no new
credit, no liquidation on it) and raises an alarm (an audit record and a warning log):

* ``NON_POSITIVE``: an answer <= 0 (Chainlink's own guidance);
* ``OUT_OF_ORDER``: a round id, or an update time, not after the source's last accepted one;
* ``STALE``: an update older than the asset's heartbeat (checked on arrival and on every
  risk tick by :func:`freeze_stale`);
* ``DIVERGENT``: more than ``max_divergence_bps`` away from another source's fresh price.

A round recorded again (same source and id) is a ``DUPLICATE`` and changes nothing. The next
ACCEPTED round lifts a freeze.

Sources: ``chainlink`` (an ``AggregatorV3Interface`` read over RPC by the worker, see
``chain.evm.price_feed``) and ``push`` (the ops push endpoint; each pushed round carries the
Ed25519 signature of a configured signer, checked before it gets here by
:mod:`core.risk.price_signing`, and the signer's name is stored with the round).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from core import audit
from core.errors import UnknownAsset, ValidationError
from core.types import Actor

log = logging.getLogger(__name__)

DEFAULT_HEARTBEAT_S = 3_600
DEFAULT_DIVERGENCE_BPS = 200


class Verdict(StrEnum):
    ACCEPTED = "ACCEPTED"
    DUPLICATE = "DUPLICATE"
    NON_POSITIVE = "NON_POSITIVE"
    OUT_OF_ORDER = "OUT_OF_ORDER"
    STALE = "STALE"
    DIVERGENT = "DIVERGENT"


@dataclass(frozen=True, slots=True)
class PriceRound:
    asset: str
    source: str
    round_id: int
    answer: int
    decimals: int
    updated_at: datetime
    #: the ops signer whose signature the round carried (``push`` rounds); None for a feed
    signer: str | None = None


@dataclass(frozen=True, slots=True)
class AssetPrice:
    asset: str
    answer: int | None
    decimals: int | None
    price_at: datetime | None
    source: str | None
    frozen: bool
    frozen_reason: str | None


async def _limits(conn: AsyncConnection, asset: str) -> tuple[int, int]:
    """(heartbeat seconds, divergence bound bps) of the asset's newest parameter version."""
    row = (
        await conn.execute(
            text(
                "SELECT heartbeat_s, max_divergence_bps FROM risk_parameters WHERE asset = :a "
                "ORDER BY (status = 'ACTIVE') DESC, version DESC LIMIT 1"
            ),
            {"a": asset},
        )
    ).first()
    return (row.heartbeat_s, row.max_divergence_bps) if row else (
        DEFAULT_HEARTBEAT_S, DEFAULT_DIVERGENCE_BPS,
    )  # fmt: skip


async def _freeze(
    conn: AsyncConnection, asset: str, reason: str, actor: Actor, signer: str | None
) -> None:
    changed = (
        await conn.execute(
            text(
                "UPDATE risk_assets SET frozen = true, frozen_reason = :r, "
                "updated_at = clock_timestamp() WHERE asset = :a "
                "AND frozen_reason IS DISTINCT FROM :r RETURNING asset"
            ),
            {"a": asset, "r": reason},
        )
    ).first()
    if changed is not None:
        log.warning("ALARM: collateral asset %s frozen: %s", asset, reason)
        await audit.record(
            conn, actor, "risk_asset.frozen", "asset", asset,
            after={"reason": reason} | ({"signer": signer} if signer else {}),
        )  # fmt: skip


async def record_round(engine: AsyncEngine, r: PriceRound, actor: Actor) -> Verdict:
    """Record one round from a source and apply its verdict (see the module's rules)."""
    if r.decimals < 0 or r.decimals > 36 or r.round_id < 0:
        raise ValidationError("decimals must be 0..36 and round ids non-negative")
    async with engine.begin() as conn:
        state = (
            await conn.execute(
                text("SELECT *, clock_timestamp() AS now FROM risk_assets WHERE asset = :a "
                     "FOR UPDATE"),
                {"a": r.asset},
            )
        ).first()  # fmt: skip
        if state is None:
            raise UnknownAsset(f"{r.asset} is not a collateral asset with risk parameters")
        heartbeat_s, divergence_bps = await _limits(conn, r.asset)
        last = (
            await conn.execute(
                text(
                    "SELECT round_id, updated_at FROM price_rounds WHERE asset = :a "
                    "AND source = :s AND verdict = 'ACCEPTED' ORDER BY round_id DESC LIMIT 1"
                ),
                {"a": r.asset, "s": r.source},
            )
        ).first()
        verdict = Verdict.ACCEPTED
        if r.answer <= 0:
            verdict = Verdict.NON_POSITIVE
        elif state.now - r.updated_at > timedelta(seconds=heartbeat_s):
            verdict = Verdict.STALE
        elif last is not None and (r.round_id <= last.round_id or r.updated_at <= last.updated_at):
            verdict = Verdict.OUT_OF_ORDER
        else:
            other = (
                await conn.execute(
                    text(
                        "SELECT answer, decimals FROM price_rounds WHERE asset = :a "
                        "AND source <> :s AND verdict = 'ACCEPTED' AND updated_at >= :since "
                        "ORDER BY updated_at DESC LIMIT 1"
                    ),
                    {"a": r.asset, "s": r.source,
                     "since": state.now - timedelta(seconds=heartbeat_s)},
                )
            ).first()  # fmt: skip
            if other is not None:
                theirs = int(other.answer) * 10**r.decimals
                ours = r.answer * 10 ** int(other.decimals)
                if abs(ours - theirs) * 10_000 > divergence_bps * theirs:
                    verdict = Verdict.DIVERGENT
        inserted = (
            await conn.execute(
                text(
                    "INSERT INTO price_rounds (asset, source, round_id, answer, decimals, "
                    "updated_at, verdict, signer) VALUES (:a, :s, :id, :ans, :d, :at, :v, :sg) "
                    "ON CONFLICT DO NOTHING RETURNING round_id"
                ),
                {"a": r.asset, "s": r.source, "id": r.round_id, "ans": r.answer,
                 "d": r.decimals, "at": r.updated_at, "v": verdict.value, "sg": r.signer},
            )
        ).first()  # fmt: skip
        if inserted is None:
            return Verdict.DUPLICATE
        if verdict is not Verdict.ACCEPTED:
            await _freeze(conn, r.asset, verdict.value, actor, r.signer)
            return verdict
        await conn.execute(
            text(
                "UPDATE risk_assets SET price_answer = :ans, price_decimals = :d, "
                "price_at = :at, price_source = :s, frozen = false, frozen_reason = NULL, "
                "updated_at = clock_timestamp() WHERE asset = :a"
            ),
            {"a": r.asset, "ans": r.answer, "d": r.decimals, "at": r.updated_at, "s": r.source},
        )
        if state.frozen:
            await audit.record(
                conn, actor, "risk_asset.unfrozen", "asset", r.asset,
                before={"reason": state.frozen_reason},
                after={"round": r.round_id} | ({"signer": r.signer} if r.signer else {}),
            )  # fmt: skip
    return verdict


async def freeze_stale(engine: AsyncEngine, actor: Actor) -> list[str]:
    """Freeze every asset whose accepted price is older than its heartbeat; returns them."""
    async with engine.begin() as conn:
        rows = await conn.execute(
            text(
                "SELECT ra.asset FROM risk_assets ra "
                "LEFT JOIN risk_parameters p ON p.asset = ra.asset AND p.status = 'ACTIVE' "
                "WHERE NOT ra.frozen AND ra.price_at < clock_timestamp() - "
                "make_interval(secs => coalesce(p.heartbeat_s, :hb)) FOR UPDATE OF ra"
            ),
            {"hb": DEFAULT_HEARTBEAT_S},
        )
        stale = [r.asset for r in rows]
        for asset in stale:
            await _freeze(conn, asset, Verdict.STALE.value, actor, None)
    return stale


async def asset_price(engine: AsyncEngine, asset: str) -> AssetPrice:
    async with engine.connect() as conn:
        row = (
            await conn.execute(text("SELECT * FROM risk_assets WHERE asset = :a"), {"a": asset})
        ).first()
    if row is None:
        raise UnknownAsset(f"{asset} is not a collateral asset", code=asset)
    return AssetPrice(
        row.asset,
        None if row.price_answer is None else int(row.price_answer),
        row.price_decimals,
        row.price_at,
        row.price_source,
        row.frozen,
        row.frozen_reason,
    )
