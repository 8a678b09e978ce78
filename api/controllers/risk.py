"""Credit lines against crypto collateral (the card backend): lines and card authorizations,
collateral in and out, the risk assessment and staff liquidation, the ops price push, the
versioned risk parameters (ADMIN writes, staff reads), and fiat repayments with the payment
provider's signed webhook.

A USER reaches only their own lines (others answer 404 UNKNOWN_CREDIT_LINE); staff readers see
any. Writes take an ``Idempotency-Key``. The repayment webhook is signed like the deposit
webhook (HMAC-SHA256 over ``"<timestamp>.<raw body>"``, 5-minute window) and its event id is
recorded once (a replay changes nothing)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, PathParameter, QueryParameter

from api import render
from api.auth import ADMIN, EVERYONE, OPS, PUBLIC, STAFF_READERS, USER, allow
from api.context import Ctx, client_ip
from api.controllers.deposits import webhook_signature
from api.idempotency import Attempt, idempotent
from api.schemas.common import ReasonCreate
from api.schemas.credits import OperationRead
from api.schemas.holds import HoldRead
from api.schemas.risk import (
    AssessmentRead,
    AuthorizeCreate,
    CollateralMove,
    CreditIssueCreate,
    CreditLineRead,
    HoldingRead,
    LiquidationCreate,
    LiquidationRead,
    PricePush,
    PricePushRead,
    RepaymentCreate,
    RepaymentEvent,
    RepaymentRead,
    RiskParametersCreate,
    RiskParametersRead,
    StopLossSet,
    ThresholdRead,
)
from api.services import Services
from core.risk.desk import Assessment
from core.risk.lines import Held, LineState
from core.risk.math import Price
from core.risk.params import RiskParameters
from core.risk.repayments import Repayment
from core.types import Actor, Role

LineId = Annotated[int, PathParameter(ge=1, le=2**63 - 1)]
AccountId = Annotated[int, PathParameter(ge=1, le=2**63 - 1)]
ParametersId = Annotated[int, PathParameter(ge=1, le=2**63 - 1)]
AssetFilter = Annotated[str | None, QueryParameter(pattern=r"^[A-Z][A-Z0-9_]{0,31}$")]
WRITERS = [allow({USER, ADMIN, OPS}, scope="payments")]
READERS = [allow(EVERYONE, scope="read")]


def _caller(ctx: Ctx) -> uuid.UUID | None:
    return ctx.principal.user_id if ctx.is_user else None


def _price(price: Price | None) -> str | None:
    return None if price is None else f"{price.answer}e-{price.decimals}"


async def _holding_read(svc: Services, s: LineState, h: Held) -> HoldingRead:
    age = None if h.price_at is None else (s.now - h.price_at).total_seconds()
    return HoldingRead(
        h.asset, h.account_id, await svc.fmt(h.quantity, h.asset),
        await svc.fmt(h.value(s.debt_scale), s.line.debt_asset), _price(h.price), age, h.frozen,
        h.stop_loss_answer,
    )  # fmt: skip


async def line_read(svc: Services, s: LineState) -> CreditLineRead:
    debt, coll = s.line.debt_asset, s.line.collateral_asset
    limit = s.current_limit
    holdings = [await _holding_read(svc, s, h) for h in s.holdings()]
    return CreditLineRead(
        s.line.id, s.line.owner_id, s.line.status, debt, coll, s.line.credit_account_id,
        s.line.collateral_account_id, s.line.cushion_account_id, await svc.fmt(limit, debt),
        await svc.fmt(s.debt, debt), await svc.fmt(max(limit - s.debt, 0), debt),
        (s.debt * 10_000) // limit if limit else 0, await svc.fmt(s.collateral, coll),
        await svc.fmt(s.value, debt), await svc.fmt(s.cushion, debt), s.frozen,
        s.frozen_reason, s.line.created_at, holdings,
    )  # fmt: skip


async def assessment_read(svc: Services, a: Assessment) -> AssessmentRead:
    debt = a.state.line.debt_asset
    price = a.state.price
    return AssessmentRead(
        await line_read(svc, a.state),
        None if a.ltv is None else int(a.ltv * 10_000),
        None if a.health_factor is None else int(a.health_factor * 10_000),
        [ThresholdRead(t.name, t.ltv_bps, await svc.fmt(t.debt_room, debt), t.crossed)
         for t in a.thresholds],
        _price(price), a.price_age_s, a.next_action.value,
    )  # fmt: skip


async def parameters_read(svc: Services, p: RiskParameters) -> RiskParametersRead:
    async def fmt(units: int) -> str:
        return await svc.fmt(units, p.debt_asset)

    return RiskParametersRead(
        p.id, p.asset, p.debt_asset, p.version, p.status, p.initial_bps, p.margin_call_bps,
        p.partial_bps, p.full_bps, p.target_bps, p.penalty_bps, p.close_factor_bps,
        p.close_factor_hf_bps, await fmt(p.close_factor_min), await fmt(p.min_leftover),
        str(p.ewma_lambda), str(p.z), p.horizon_periods, p.haircut_floor_bps,
        p.haircut_ceiling_bps, p.haircut_bps, await fmt(p.buffer), p.apr_bps, p.heartbeat_s,
        p.max_divergence_bps, p.created_by, p.created_at, p.activated_at,
    )  # fmt: skip


async def repayment_read(svc: Services, r: Repayment) -> RepaymentRead:
    debt = (await svc.credit_desk.lines.get(r.line_id)).line.debt_asset

    async def fmt(v: int | None) -> str | None:
        return None if v is None else await svc.fmt(v, debt)

    return RepaymentRead(
        r.id, r.line_id, await svc.fmt(r.amount, debt), r.method.value, r.status.value,
        r.operation_id, await fmt(r.repaid), await fmt(r.overpaid), r.created_at, r.updated_at,
    )  # fmt: skip


class CreditController(Controller):
    path = "/api/v1/credit"
    tags = ["credit"]

    @post("/issue", guards=WRITERS)
    async def issue(
        self, ctx: NamedDependency[Ctx], data: JSONBody[CreditIssueCreate]
    ) -> Response[CreditLineRead]:
        """Open a credit line (a USER for themselves) under the collateral asset's ACTIVE risk
        parameters; its limit follows the collateral deposited."""

        async def run(_: Attempt) -> CreditLineRead:
            state = await ctx.svc.credit_desk.issue(
                _caller(ctx), ctx.actor, user_id=data.user_id,
                collateral_asset=data.collateral_asset, debt_asset=data.debt_asset,
            )  # fmt: skip
            return await line_read(ctx.svc, state)

        return await ctx.once(data, run)

    @get("/{line_id:int}", guards=READERS)
    async def get_line(self, ctx: NamedDependency[Ctx], line_id: LineId) -> CreditLineRead:
        return await line_read(ctx.svc, await ctx.svc.credit_desk.line(_caller(ctx), line_id))

    @get("/user/{user_id:uuid}", guards=READERS)
    async def user_lines(
        self, ctx: NamedDependency[Ctx], user_id: FromPath[uuid.UUID]
    ) -> list[CreditLineRead]:
        lines = await ctx.svc.credit_desk.user_lines(_caller(ctx), ctx.actor, user_id)
        return [await line_read(ctx.svc, s) for s in lines]

    @post("/{line_id:int}/authorize", guards=WRITERS)
    async def authorize(
        self, ctx: NamedDependency[Ctx], line_id: LineId, data: JSONBody[AuthorizeCreate]
    ) -> Response[HoldRead]:
        """A card spend's authorization: a hold on the credit account (its floor is -limit);
        capture or void it at ``/api/v1/holds/{id}``."""

        async def pin() -> dict[str, Any]:
            deadline = await ctx.svc.payments.deadline(timedelta(seconds=data.expires_in))
            return {"expires_at": deadline.isoformat()}

        async def run(a: Attempt) -> HoldRead:
            hold = await ctx.svc.credit_desk.authorize(
                _caller(ctx), ctx.actor, line_id, amount=data.amount,
                expires_at=datetime.fromisoformat(a.pinned["expires_at"]),
                merchant=data.merchant, idempotency_key=a.core_key,
            )  # fmt: skip
            return await render.hold(ctx.svc, hold)

        return await ctx.once(data, run, pin=pin)

    @post("/{line_id:int}/stop-loss", guards=WRITERS, status_code=200)
    async def stop_loss(
        self, ctx: NamedDependency[Ctx], line_id: LineId, data: JSONBody[StopLossSet]
    ) -> Response[CreditLineRead]:
        """Set or clear the line's stop-loss price (audited)."""

        async def run(_: Attempt) -> CreditLineRead:
            state = await ctx.svc.credit_desk.stop_loss(
                _caller(ctx), ctx.actor, line_id, answer=data.answer, asset=data.asset
            )
            return await line_read(ctx.svc, state)

        return await ctx.once(data, run, status_code=200)


class CollateralController(Controller):
    path = "/api/v1/collateral"
    tags = ["credit"]

    @post("/deposit", guards=WRITERS)
    async def deposit(
        self, ctx: NamedDependency[Ctx], data: JSONBody[CollateralMove]
    ) -> Response[OperationRead]:
        """Collateral from the owner's AVAILABLE account into the line (``asset``: the line's own
        collateral asset by default; another asset is added to the line when it has ACTIVE risk
        parameters lending the line's debt asset, else 409 NO_RISK_PARAMETERS)."""

        async def run(a: Attempt) -> OperationRead:
            result = await ctx.svc.credit_desk.deposit(
                _caller(ctx), ctx.actor, line_id=data.line_id, amount=data.amount,
                asset=data.asset, idempotency_key=a.core_key,
            )  # fmt: skip
            return await render.operation(ctx.svc, result, ctx.sees)

        return await ctx.once(data, run)

    @post("/withdraw", guards=WRITERS)
    async def withdraw(
        self, ctx: NamedDependency[Ctx], data: JSONBody[CollateralMove]
    ) -> Response[OperationRead]:
        """Collateral (of ``asset``, the line's own by default) back to AVAILABLE, only if the
        line stays at or under its initial LTV, weighted over its assets (409 LTV_BREACH
        otherwise; 409 PRICE_FROZEN while a price it depends on is untrusted; 422
        VALIDATION_ERROR for an asset the line does not hold)."""

        async def run(a: Attempt) -> OperationRead:
            result = await ctx.svc.credit_desk.withdraw(
                _caller(ctx), ctx.actor, line_id=data.line_id, amount=data.amount,
                asset=data.asset, idempotency_key=a.core_key,
            )  # fmt: skip
            return await render.operation(ctx.svc, result, ctx.sees)

        return await ctx.once(data, run)

    @get("/{account_id:int}", guards=READERS)
    async def get_collateral(
        self, ctx: NamedDependency[Ctx], account_id: AccountId
    ) -> CreditLineRead:
        """The line a collateral account belongs to, with its collateral and value."""
        state = await ctx.svc.credit_desk.collateral(_caller(ctx), account_id)
        return await line_read(ctx.svc, state)


class RiskController(Controller):
    path = "/api/v1/risk"
    tags = ["risk"]

    @get("/assessment/{account_id:int}", guards=READERS)
    async def assessment(self, ctx: NamedDependency[Ctx], account_id: AccountId) -> AssessmentRead:
        """LTV, health factor, each threshold with the distance to it, the price's age and
        what the risk loop would do now."""
        found = await ctx.svc.credit_desk.assessment(_caller(ctx), account_id)
        return await assessment_read(ctx.svc, found)

    @post(
        "/liquidation",
        guards=[allow({ADMIN}, scope="admin")],
        opt={"rate_group": "admin"},
        status_code=200,
    )
    async def liquidation(
        self, ctx: NamedDependency[Ctx], data: JSONBody[LiquidationCreate]
    ) -> Response[LiquidationRead]:
        """Run the ladder's decision on one line now, or close its debt (``full``); never on a
        frozen price. A reason is required and audited on the operation."""

        async def run(_: Attempt) -> LiquidationRead:
            kind = await ctx.svc.credit_desk.liquidate(
                ctx.actor, line_id=data.line_id, reason=data.reason, full=data.full
            )
            return LiquidationRead(data.line_id, kind.value)

        return await ctx.once(data, run, status_code=200)

    @post(
        "/prices",
        guards=[allow({ADMIN, OPS}, scope="admin")],
        opt={"rate_group": "admin"},
        status_code=200,
    )
    async def push_price(
        self, ctx: NamedDependency[Ctx], data: JSONBody[PricePush]
    ) -> Response[PricePushRead]:
        """The ops price source: a round signed by a configured ops signer (Ed25519 over the
        canonical message in the README), judged like a feed's (ACCEPTED, DUPLICATE for a
        round id already recorded, or a verdict that freezes the asset). 401
        PRICE_SIGNATURE_INVALID, 403 UNKNOWN_PRICE_SIGNER, 503 PRICE_SIGNERS_NOT_CONFIGURED;
        nothing is recorded then."""

        async def run(_: Attempt) -> PricePushRead:
            verdict = await ctx.svc.credit_desk.push_price(
                ctx.actor, asset=data.asset, round_id=data.round_id, answer=data.answer,
                decimals=data.decimals, updated_at=data.updated_at, signer=data.signer,
                signature=data.signature,
            )  # fmt: skip
            return PricePushRead(data.asset, data.round_id, verdict.value)

        return await ctx.once(data, run, status_code=200)

    @post("/parameters", guards=[allow({ADMIN}, scope="admin")], opt={"rate_group": "admin"})
    async def draft_parameters(
        self, ctx: NamedDependency[Ctx], data: JSONBody[RiskParametersCreate]
    ) -> Response[RiskParametersRead]:
        """Store a DRAFT version of a collateral asset's risk parameters (audited). 422
        INVALID_RISK_PARAMETERS when the ladder does not rise or a value is out of range, 404
        UNKNOWN_ASSET for an asset that does not exist or is not of the right kind; nothing is
        written then."""

        async def run(_: Attempt) -> RiskParametersRead:
            values = msgspec.structs.asdict(data)
            found = await ctx.svc.credit_desk.draft_parameters(ctx.actor, values)
            return await parameters_read(ctx.svc, found)

        return await ctx.once(data, run)

    @get("/parameters", guards=[allow(STAFF_READERS, scope="read")])
    async def list_parameters(
        self, ctx: NamedDependency[Ctx], asset: AssetFilter = None
    ) -> list[RiskParametersRead]:
        """Every version (of one collateral asset with ``asset``), by asset and version."""
        found = await ctx.svc.credit_desk.parameter_versions(asset)
        return [await parameters_read(ctx.svc, p) for p in found]

    @get("/parameters/{parameters_id:int}", guards=[allow(STAFF_READERS, scope="read")])
    async def get_parameters(
        self, ctx: NamedDependency[Ctx], parameters_id: ParametersId
    ) -> RiskParametersRead:
        return await parameters_read(ctx.svc, await ctx.svc.credit_desk.parameters(parameters_id))

    @post(
        "/parameters/{parameters_id:int}/activate",
        guards=[allow({ADMIN}, scope="admin")],
        status_code=200,
        opt={"rate_group": "admin"},
    )
    async def activate_parameters(
        self, ctx: NamedDependency[Ctx], parameters_id: ParametersId, data: JSONBody[ReasonCreate]
    ) -> Response[RiskParametersRead]:
        """Make a DRAFT its asset's ACTIVE version (the previous one retires; audited with the
        reason). The haircut is computed now from the asset's price history, and the asset's
        credit limits follow. 404 UNKNOWN_RISK_PARAMETERS, 409 RISK_PARAMETERS_NOT_DRAFT."""

        async def run(_: Attempt) -> RiskParametersRead:
            found = await ctx.svc.credit_desk.activate_parameters(
                ctx.actor, parameters_id, data.reason
            )
            return await parameters_read(ctx.svc, found)

        return await ctx.once(data, run, status_code=200)


class RepaymentController(Controller):
    path = "/api/v1/repayment"
    tags = ["repayments"]

    @post("/initiate", guards=WRITERS)
    async def initiate(
        self, ctx: NamedDependency[Ctx], data: JSONBody[RepaymentCreate]
    ) -> Response[RepaymentRead]:
        """Start a fiat repayment (method CARD, BANK_TRANSFER or SEPA); the provider reports
        the outcome on ``/api/v1/repayment/webhook``."""

        async def run(_: Attempt) -> RepaymentRead:
            found = await ctx.svc.credit_desk.initiate_repayment(
                _caller(ctx), ctx.actor, line_id=data.line_id, amount=data.amount,
                method=data.method,
            )  # fmt: skip
            return await repayment_read(ctx.svc, found)

        return await ctx.once(data, run)

    @get("/{repayment_id:uuid}", guards=READERS)
    async def get_repayment(
        self, ctx: NamedDependency[Ctx], repayment_id: FromPath[uuid.UUID]
    ) -> RepaymentRead:
        found = await ctx.svc.credit_desk.repayment(_caller(ctx), repayment_id)
        return await repayment_read(ctx.svc, found)

    @post(
        "/webhook",
        guards=[webhook_signature],
        opt={**PUBLIC, "public": False, "webhook": True, "rate_group": "webhooks"},
        security=[{"WebhookSignature": []}],
        status_code=200,
    )
    async def webhook(
        self, request: Request[Any, Any, Any], data: JSONBody[RepaymentEvent]
    ) -> Response[RepaymentRead]:
        """The provider's outcome of a repayment: applied once per event id; a success repays
        the line (overpayment to AVAILABLE), serialized with the risk loop."""
        svc: Services = request.app.state.services
        actor = Actor(
            "provider:repayments", Role.SYSTEM, client_ip(request, svc.settings.trusted_proxy)
        )

        async def run(_: Attempt) -> RepaymentRead:
            found = await svc.credit_desk.repayment_webhook(
                actor, event_id=data.event_id, repayment_id=data.repayment_id,
                status=data.status, amount=data.amount,
            )  # fmt: skip
            return await repayment_read(svc, found)

        return await idempotent(
            request, svc.idempotency, "webhook:repayments", data, run, status_code=200
        )


ROUTES = [CreditController, CollateralController, RiskController, RepaymentController]
