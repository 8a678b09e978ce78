"""Bodies of the credit line, collateral, risk and repayment endpoints. Amounts are decimal
strings in the asset's scale; ratios are basis points (1 bp = 0.01%)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from msgspec import Meta, Struct

from api.schemas.common import Amount, AssetCode, AwareTime, Create, Id, Label, Reason

Method = Annotated[str, Meta(pattern=r"^[A-Za-z_]{1,32}$", examples=["CARD"])]
EventId = Annotated[str, Meta(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:-]+$")]


class CreditIssueCreate(Create):
    """Open a credit line for ``user_id`` in ``debt_asset`` against ``collateral_asset``."""

    user_id: uuid.UUID
    collateral_asset: AssetCode
    debt_asset: AssetCode


class CollateralMove(Create):
    line_id: Id
    amount: Amount
    #: the collateral asset moved (the line's own by default); depositing another asset with
    #: ACTIVE risk parameters lending the line's debt asset adds it to the line
    asset: AssetCode | None = None


class AuthorizeCreate(Create):
    """A card authorization: a hold on the line's credit account, captured or voided through
    ``/api/v1/holds/{id}``."""

    amount: Amount
    expires_in: Annotated[int, Meta(ge=1, le=30 * 86_400)] = 7 * 86_400
    merchant: Label | None = None


class StopLossSet(Create):
    """The price (integer, in the asset's feed decimals) at or under which all collateral is
    sold; null clears it."""

    answer: Annotated[int, Meta(ge=1, le=2**63 - 1)] | None
    #: the held asset it applies to (the line's own by default)
    asset: AssetCode | None = None


class LiquidationCreate(Create):
    line_id: Id
    reason: Reason
    #: close the whole debt now instead of the ladder's decision
    full: bool = False


class PricePush(Create):
    asset: AssetCode
    round_id: Annotated[int, Meta(ge=0, le=2**63 - 1)]
    #: the price as an integer with ``decimals`` decimals (USD per whole unit); <= 0 freezes
    answer: Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)]
    decimals: Annotated[int, Meta(ge=0, le=36)]
    updated_at: AwareTime
    #: the ops signer's name (one of ``VALUEOS_PRICE_SIGNERS``)
    signer: Annotated[str, Meta(max_length=64)] | None = None
    #: standard base64 of the signer's Ed25519 signature over the round's canonical message
    #: (README, "Prices"; ``valueos price-sign`` makes one)
    signature: Annotated[str, Meta(max_length=128)] | None = None


class RepaymentCreate(Create):
    line_id: Id
    amount: Amount
    method: Method


class RepaymentEvent(Create):
    """What the payment provider reports (signed like every provider webhook)."""

    event_id: EventId
    repayment_id: uuid.UUID
    status: Annotated[str, Meta(pattern=r"^(succeeded|failed)$")]
    amount: Amount | None = None


class HoldingRead(Struct):
    """One collateral asset of a line (its own first, then those added to it)."""

    asset: str
    account_id: int
    amount: str
    #: in the debt asset, rounded down; at the last price even while it is frozen
    value: str
    price: str | None
    price_age_s: float | None
    price_frozen: bool
    stop_loss_answer: int | None


class CreditLineRead(Struct):
    id: int
    user_id: uuid.UUID
    status: str
    debt_asset: str
    collateral_asset: str
    credit_account_id: int
    collateral_account_id: int
    cushion_account_id: int
    #: the limit at the current prices, which a card authorization meets (the stored one the
    #: floor holds is brought to it before a spend); 0 while a price is past its heartbeat
    credit_limit: str
    #: posted debt plus pending authorizations
    used: str
    available_credit: str
    utilization_bps: int
    #: the line's own collateral asset held
    collateral: str
    #: the value of all the line's collateral (every holding), in the debt asset
    collateral_value: str
    cushion: str
    #: the line's own asset's price is frozen
    price_frozen: bool
    frozen_reason: str | None
    created_at: datetime
    #: every collateral asset the line holds, its own first
    holdings: list[HoldingRead]


class ThresholdRead(Struct):
    name: str
    ltv_bps: int
    #: how much more debt the line can carry (+) or must shed (-) to sit at this threshold
    debt_room: str
    crossed: bool


class AssessmentRead(Struct):
    line: CreditLineRead
    #: loan to value in basis points (rounded down for display; decisions are exact)
    ltv_bps: int | None
    #: health factor x 10,000 (rounded down; 10,000 = HF 1.0), null without debt
    health_factor_bps: int | None
    thresholds: list[ThresholdRead]
    price: str | None
    price_age_s: float | None
    next_action: str


class LiquidationRead(Struct):
    line_id: int
    action: str


class PricePushRead(Struct):
    asset: str
    round_id: int
    verdict: str


class RepaymentRead(Struct):
    id: uuid.UUID
    line_id: int
    amount: str
    method: str
    status: str
    operation_id: int | None
    repaid: str | None
    overpaid: str | None
    created_at: datetime
    updated_at: datetime


Bps = Annotated[int, Meta(ge=0, le=10_000, description="basis points (1 bp = 0.01%)")]
#: a non-negative decimal string (EWMA lambda, z); its range is checked with the draft
Ratio = Annotated[str, Meta(pattern=r"^[0-9]{1,6}(\.[0-9]{1,18})?$", examples=["0.94"])]


class RiskParametersCreate(Create):
    """A DRAFT version of a collateral asset's risk parameters. Ratios are basis points of
    LTV; ``close_factor_min``, ``min_leftover`` and ``buffer`` are decimal strings of the debt
    asset (omitted: $2,000, $1,000 and 0 in minor units of a scale-2 asset). The ladder must
    rise (initial < margin call < partial < full <= 100%), the target sit under partial and
    under 100% - penalty (422 INVALID_RISK_PARAMETERS otherwise, nothing written)."""

    asset: AssetCode
    debt_asset: AssetCode
    initial_bps: Bps
    margin_call_bps: Bps
    partial_bps: Bps
    full_bps: Bps
    target_bps: Bps
    penalty_bps: Bps
    close_factor_bps: Bps = 5_000
    #: the close factor is 100% at or under this health factor (x 10,000)
    close_factor_hf_bps: Annotated[int, Meta(ge=1, le=1_000_000)] = 9_500
    close_factor_min: Amount | None = None
    min_leftover: Amount | None = None
    ewma_lambda: Ratio = "0.94"
    z: Ratio = "2.33"
    horizon_periods: Annotated[int, Meta(ge=1, le=1_000_000)] = 10
    haircut_floor_bps: Bps = 1_000
    haircut_ceiling_bps: Bps = 5_000
    buffer: Amount | None = None
    apr_bps: Annotated[int, Meta(ge=0, le=1_000_000)] = 1_500
    heartbeat_s: Annotated[int, Meta(ge=1, le=30 * 86_400)] = 3_600
    max_divergence_bps: Annotated[int, Meta(ge=1, le=10_000)] = 200


class RiskParametersRead(Struct):
    id: int
    asset: str
    debt_asset: str
    version: int
    #: DRAFT, ACTIVE or RETIRED
    status: str
    initial_bps: int
    margin_call_bps: int
    partial_bps: int
    full_bps: int
    target_bps: int
    penalty_bps: int
    close_factor_bps: int
    close_factor_hf_bps: int
    close_factor_min: str
    min_leftover: str
    ewma_lambda: str
    z: str
    horizon_periods: int
    haircut_floor_bps: int
    haircut_ceiling_bps: int
    #: computed at activation from the price history (the floor while a DRAFT)
    haircut_bps: int
    buffer: str
    apr_bps: int
    heartbeat_s: int
    max_divergence_bps: int
    created_by: str
    created_at: datetime | None
    activated_at: datetime | None
