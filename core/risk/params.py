"""Risk parameters per collateral asset, versioned like policies: a DRAFT is written, then
activated (the previous ACTIVE version retires in the same transaction); both audited, both
ADMIN-only. A draft is validated whole (the ladder's order, ranges, signs) and its assets
checked before anything is written.

Activation computes the haircut from the price history recorded for the asset
(:func:`core.risk.math.ewma_volatility` of the last ``HISTORY_ROUNDS`` accepted rounds, then
``H = z * sigma * sqrt(T)`` within the version's floor and ceiling) and stores it on the version.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from core import audit
from core.errors import (
    Forbidden,
    InvalidRiskParameters,
    NoRiskParameters,
    RiskParametersNotDraft,
    UnknownAsset,
    UnknownRiskParameters,
)
from core.risk.math import Ladder, RiskParameterError, ewma_volatility, haircut_bps
from core.types import Actor, AssetKind, Role

WRITERS = frozenset({Role.ADMIN})
#: price rounds the EWMA volatility is computed from
HISTORY_ROUNDS = 500


@dataclass(frozen=True, slots=True)
class RiskParameterDraft:
    asset: str
    debt_asset: str
    initial_bps: int
    margin_call_bps: int
    partial_bps: int
    full_bps: int
    target_bps: int
    penalty_bps: int
    close_factor_bps: int = 5_000
    close_factor_hf_bps: int = 9_500
    close_factor_min: int = 200_000
    min_leftover: int = 100_000
    ewma_lambda: Decimal = Decimal("0.94")
    z: Decimal = Decimal("2.33")
    horizon_periods: int = 10
    haircut_floor_bps: int = 1_000
    haircut_ceiling_bps: int = 5_000
    buffer: int = 0
    apr_bps: int = 1_500
    heartbeat_s: int = 3_600
    max_divergence_bps: int = 200

    @property
    def ladder(self) -> Ladder:
        return Ladder(
            self.initial_bps, self.margin_call_bps, self.partial_bps, self.full_bps,
            self.target_bps, self.penalty_bps, self.close_factor_bps, self.close_factor_hf_bps,
            self.close_factor_min, self.min_leftover,
        )  # fmt: skip

    def validate(self) -> None:
        try:
            self.ladder.validate()
            if not Decimal(0) < self.ewma_lambda < Decimal(1):
                raise RiskParameterError("ewma_lambda must be in (0, 1)")
            if self.z <= 0 or self.horizon_periods <= 0:
                raise RiskParameterError("z and horizon_periods must be positive")
            if not 0 <= self.haircut_floor_bps <= self.haircut_ceiling_bps < 10_000:
                raise RiskParameterError("haircut bounds: 0 <= floor <= ceiling < 100%")
            if self.buffer < 0 or self.apr_bps < 0 or self.heartbeat_s <= 0:
                raise RiskParameterError("buffer and apr cannot be negative, heartbeat > 0")
            if self.max_divergence_bps <= 0:
                raise RiskParameterError("max_divergence_bps must be positive")
        except RiskParameterError as exc:
            raise InvalidRiskParameters(str(exc), asset=self.asset) from exc


@dataclass(frozen=True, slots=True)
class RiskParameters(RiskParameterDraft):
    id: int = 0
    version: int = 0
    status: str = "DRAFT"
    haircut_bps: int = 0
    created_by: str = ""
    created_at: datetime | None = None
    activated_at: datetime | None = None


_DRAFT_FIELDS = [f.name for f in fields(RiskParameterDraft)]


def parameters_from_row(row: Any) -> RiskParameters:
    return RiskParameters(**{f.name: getattr(row, f.name) for f in fields(RiskParameters)})


def _staff(actor: Actor) -> None:
    if actor.role not in WRITERS:
        raise Forbidden("risk parameters are managed by ADMIN")


async def create_draft(engine: AsyncEngine, draft: RiskParameterDraft, actor: Actor) -> int:
    """Store ``draft`` as the asset's next version (DRAFT)."""
    _staff(actor)
    draft.validate()
    async with engine.begin() as conn:
        kinds: dict[str, str] = dict(
            (
                await conn.execute(
                    text("SELECT code, kind FROM assets WHERE code = ANY(:c)"),
                    {"c": [draft.asset, draft.debt_asset]},
                )
            ).all()
        )
        if kinds.get(draft.asset) != AssetKind.COLLATERAL.value:
            raise UnknownAsset(f"{draft.asset} is not a collateral asset", code=draft.asset)
        if kinds.get(draft.debt_asset) != AssetKind.FIAT_CREDIT.value:
            raise UnknownAsset(f"{draft.debt_asset} is not a fiat credit asset")
        await conn.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
            {"k": f"risk_parameters:{draft.asset}"},
        )
        lent = (
            await conn.execute(
                text("SELECT debt_asset FROM risk_parameters WHERE asset = :a LIMIT 1"),
                {"a": draft.asset},
            )
        ).scalar()
        if lent is not None and lent != draft.debt_asset:
            # the asset's lines are in that debt asset: every version lends it
            raise InvalidRiskParameters(
                f"{draft.asset} lends {lent}, not {draft.debt_asset}", asset=draft.asset,
                field="debt_asset",
            )  # fmt: skip
        values = asdict(draft)
        columns = ", ".join(_DRAFT_FIELDS)
        binds = ", ".join(f":{n}" for n in _DRAFT_FIELDS)
        new_id: int = (
            await conn.execute(
                text(
                    f"INSERT INTO risk_parameters ({columns}, version, status, haircut_bps, "
                    f"created_by) VALUES ({binds}, (SELECT coalesce(max(version), 0) + 1 "
                    "FROM risk_parameters WHERE asset = :asset), 'DRAFT', :floor, :by) "
                    "RETURNING id"
                ),
                values | {"floor": draft.haircut_floor_bps, "by": actor.id},
            )
        ).scalar_one()
        await conn.execute(
            text("INSERT INTO risk_assets (asset) VALUES (:a) ON CONFLICT DO NOTHING"),
            {"a": draft.asset},
        )
        await audit.record(
            conn, actor, "risk_parameters.created", "risk_parameters", new_id,
            after={k: str(v) for k, v in values.items()},
        )  # fmt: skip
    return new_id


async def price_history(conn: AsyncConnection, asset: str) -> list[int]:
    """The asset's last accepted answers, oldest first (one decimals per asset)."""
    rows = await conn.execute(
        text(
            "SELECT answer FROM (SELECT answer, updated_at, round_id FROM price_rounds "
            "WHERE asset = :a AND verdict = 'ACCEPTED' ORDER BY updated_at DESC, round_id DESC "
            "LIMIT :n) x ORDER BY updated_at, round_id"
        ),
        {"a": asset, "n": HISTORY_ROUNDS},
    )
    return [int(r.answer) for r in rows]


async def activate(engine: AsyncEngine, parameters_id: int, actor: Actor, reason: str) -> int:
    """Make a DRAFT the asset's ACTIVE version; returns the haircut (bps) it computed."""
    _staff(actor)
    async with engine.begin() as conn:
        row = (
            await conn.execute(
                text("SELECT * FROM risk_parameters WHERE id = :id FOR UPDATE"),
                {"id": parameters_id},
            )
        ).first()
        if row is None:
            raise UnknownRiskParameters(
                f"risk parameters {parameters_id} do not exist", parameters_id=parameters_id
            )
        if row.status != "DRAFT":
            raise RiskParametersNotDraft(
                f"risk parameters {parameters_id} are {row.status}, not a DRAFT",
                parameters_id=parameters_id, status=row.status,
            )  # fmt: skip
        params = parameters_from_row(row)
        sigma = ewma_volatility(await price_history(conn, params.asset), params.ewma_lambda)
        haircut = haircut_bps(
            sigma, z=params.z, horizon_periods=params.horizon_periods,
            floor_bps=params.haircut_floor_bps, ceiling_bps=params.haircut_ceiling_bps,
        )  # fmt: skip
        retired = (
            await conn.execute(
                text(
                    "UPDATE risk_parameters SET status = 'RETIRED' "
                    "WHERE asset = :a AND status = 'ACTIVE' RETURNING id"
                ),
                {"a": params.asset},
            )
        ).scalar()
        await conn.execute(
            text(
                "UPDATE risk_parameters SET status = 'ACTIVE', haircut_bps = :h, "
                "activated_at = clock_timestamp() WHERE id = :id"
            ),
            {"h": haircut, "id": parameters_id},
        )
        # the asset's limits are recomputed under this version by the next limit refresh
        # (``RiskLoop.refresh_moved_prices``, every tick), committed or not with it
        await conn.execute(
            text("UPDATE risk_assets SET limits_at = NULL WHERE asset = :a"), {"a": params.asset}
        )
        await audit.record(
            conn, actor, "risk_parameters.activated", "risk_parameters", parameters_id,
            before={"retired": retired},
            after={"haircut_bps": haircut, "sigma": str(sigma)}, reason=reason,
        )  # fmt: skip
    return haircut


async def active(conn: AsyncConnection, asset: str) -> RiskParameters:
    row = (
        await conn.execute(
            text("SELECT * FROM risk_parameters WHERE asset = :a AND status = 'ACTIVE'"),
            {"a": asset},
        )
    ).first()
    if row is None:
        raise NoRiskParameters(f"{asset} has no active risk parameters", asset=asset)
    return parameters_from_row(row)


async def get(engine: AsyncEngine, parameters_id: int) -> RiskParameters:
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT * FROM risk_parameters WHERE id = :id"), {"id": parameters_id}
            )
        ).first()
    if row is None:
        raise UnknownRiskParameters(
            f"risk parameters {parameters_id} do not exist", parameters_id=parameters_id
        )
    return parameters_from_row(row)


async def list_versions(engine: AsyncEngine, asset: str | None = None) -> list[RiskParameters]:
    """Every version (of ``asset``'s, or of all assets), by asset and version."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT * FROM risk_parameters WHERE CAST(:a AS text) IS NULL "
                "OR asset = CAST(:a AS text) ORDER BY asset, version"
            ),
            {"a": asset},
        )
        return [parameters_from_row(r) for r in rows]
