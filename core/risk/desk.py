"""The credit desk: the use cases behind ``/api/v1/credit``, ``/collateral``, ``/risk`` and
``/repayment``, one method per route, with who may do what:

* a USER acts on their own lines only (another user's line answers UNKNOWN_CREDIT_LINE, as a
  nonexistent one does); staff (ADMIN, OPS) on any line; a liquidation is ADMIN-only with a
  reason; risk parameters are written by ADMIN only;
* amounts arrive as decimal strings in the asset's scale and are parsed exactly (422
  INVALID_AMOUNT otherwise); nothing is written before every check passed.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from operator import attrgetter
from typing import Any

from core.directory import Directory
from core.errors import Forbidden, ReasonRequired, UnknownCreditLine, ValidationError
from core.money import parse_amount
from core.risk import math as risk
from core.risk import params as risk_params
from core.risk.lines import CreditLines, Line, LineState
from core.risk.loop import RiskLoop
from core.risk.params import RiskParameters
from core.risk.price_signing import PriceSigners, SignedRound
from core.risk.prices import PriceRound, Verdict, record_round
from core.risk.repayments import Repayment, Repayments
from core.types import Actor, HoldResult, OperationResult, Role

STAFF = frozenset({Role.ADMIN, Role.OPS})
#: risk parameters given in debt-asset money (decimal strings at the API)
MONEY_FIELDS = ("close_factor_min", "min_leftover", "buffer")


@dataclass(frozen=True, slots=True)
class Threshold:
    name: str
    ltv_bps: int
    #: debt units the line can add (+) or must shed (-) to sit exactly at this threshold
    debt_room: int
    crossed: bool


@dataclass(frozen=True, slots=True)
class Assessment:
    state: LineState
    ltv: Fraction | None
    health_factor: Fraction | None
    thresholds: list[Threshold]
    price_age_s: float | None
    next_action: risk.ActionKind


class CreditDesk:
    def __init__(self, directory: Directory, price_signers: PriceSigners | None = None) -> None:
        self.directory = directory
        #: the ops signers whose pushed rounds are recorded (none: every push is refused)
        self.price_signers = price_signers or PriceSigners()
        self.ledger = directory.ledger
        self.lines = CreditLines(self.ledger)
        self.repayments = Repayments(self.ledger)
        self.loop = RiskLoop(self.ledger)

    async def _line(self, caller: uuid.UUID | None, line_id: int) -> LineState:
        state = await self.lines.get(line_id)
        if caller is not None and state.line.owner_id != caller:
            raise UnknownCreditLine(f"credit line {line_id} does not exist", line_id=line_id)
        return state

    @staticmethod
    def _owner(caller: uuid.UUID | None, actor: Actor, user_id: uuid.UUID) -> uuid.UUID:
        if actor.role is Role.USER and caller != user_id:
            raise UnknownCreditLine(f"user {user_id} has no credit lines")
        return user_id

    # -- credit lines ---------------------------------------------------------------------
    async def issue(
        self, caller: uuid.UUID | None, actor: Actor, *, user_id: uuid.UUID,
        collateral_asset: str, debt_asset: str,
    ) -> LineState:  # fmt: skip
        owner = self._owner(caller, actor, user_id)
        await self.directory.asset(collateral_asset)
        await self.directory.asset(debt_asset)
        line = await self.lines.open(owner, collateral_asset, debt_asset, actor)
        return await self.lines.get(line.id)

    async def line(self, caller: uuid.UUID | None, line_id: int) -> LineState:
        return await self._line(caller, line_id)

    async def user_lines(
        self, caller: uuid.UUID | None, actor: Actor, user_id: uuid.UUID
    ) -> list[LineState]:
        return await self.lines.of_user(self._owner(caller, actor, user_id))

    async def authorize(
        self, caller: uuid.UUID | None, actor: Actor, line_id: int, *, amount: str,
        expires_at: datetime, merchant: str | None, idempotency_key: str | None,
    ) -> HoldResult:  # fmt: skip
        """A card authorization on the line (a hold on its credit account)."""
        state = await self._line(caller, line_id)
        units = await self.directory.parse(amount, state.line.debt_asset)
        return await self.lines.authorize(
            line_id, units, actor, expires_at=expires_at, idempotency_key=idempotency_key,
            merchant=merchant,
        )  # fmt: skip

    async def stop_loss(
        self, caller: uuid.UUID | None, actor: Actor, line_id: int, *, answer: int | None,
        asset: str | None = None,
    ) -> LineState:  # fmt: skip
        """Set (or clear, ``None``) the stop-loss of the line's holding of ``asset`` (its own
        collateral asset by default): the feed answer (same decimals as the asset's price) at
        or under which the loop sells all of that asset."""
        await self._line(caller, line_id)
        if answer is not None and answer <= 0:
            raise ValidationError("a stop-loss price must be positive", field="answer")
        await self.lines.set_stop_loss(line_id, answer, actor, asset)
        return await self.lines.get(line_id)

    # -- collateral -----------------------------------------------------------------------
    async def deposit(
        self, caller: uuid.UUID | None, actor: Actor, *, line_id: int, amount: str,
        idempotency_key: str | None, asset: str | None = None,
    ) -> OperationResult:  # fmt: skip
        """Collateral of ``asset`` (the line's own by default; another one is added to the
        line) into the line; the amount is parsed in that asset's scale."""
        state = await self._line(caller, line_id)
        code = asset or state.line.collateral_asset
        units = await self.directory.parse(amount, code)
        return await self.lines.deposit(line_id, units, actor, idempotency_key, asset=code)

    async def withdraw(
        self, caller: uuid.UUID | None, actor: Actor, *, line_id: int, amount: str,
        idempotency_key: str | None, asset: str | None = None,
    ) -> OperationResult:  # fmt: skip
        state = await self._line(caller, line_id)
        code = asset or state.line.collateral_asset
        units = await self.directory.parse(amount, code)
        return await self.lines.withdraw(line_id, units, actor, idempotency_key, asset=code)

    async def collateral(self, caller: uuid.UUID | None, account_id: int) -> LineState:
        """The line a collateral (or credit) account belongs to."""
        line_id = await self.lines.by_account(account_id)
        return await self._line(caller, line_id)

    # -- risk -----------------------------------------------------------------------------
    async def assessment(self, caller: uuid.UUID | None, account_id: int) -> Assessment:
        """LTV, health factor and the ladder's thresholds of the line, each weighted over its
        collateral assets (:func:`core.risk.math.capacity`): a threshold's ``ltv_bps`` is the
        position's own (the value-weighted mean of its assets', rounded down)."""
        state = await self.collateral(caller, account_id)
        value = state.value
        params = state.params
        thresholds: list[Threshold] = []
        hf = None
        if params is not None:
            held = tuple(
                risk.Holding(h.asset, h.quantity, px, h.params.ladder)
                for h in state.holdings()
                if h.params is not None and (px := h.price_per_minor(state.debt_scale))
            )
            for name, pick in (
                ("initial", "initial_bps"), ("margin_call", "margin_call_bps"),
                ("partial_liquidation", "partial_bps"), ("full_liquidation", "full_bps"),
            ):  # fmt: skip
                cap = risk.capacity(held, attrgetter(pick))
                bps = cap // value if value else int(getattr(params, pick))
                room = cap // risk.BPS - state.debt
                thresholds.append(
                    Threshold(name, bps, room, risk.crossed_capacity(state.debt, cap))
                )
            partial = risk.capacity(held, lambda lad: lad.partial_bps)
            hf = None if state.debt <= 0 else Fraction(partial, state.debt * risk.BPS)
        age = None if state.price_at is None else (state.now - state.price_at).total_seconds()
        action = risk.ActionKind.NONE
        if params is not None:
            action = risk.decide(state.position(), params.ladder).kind
        return Assessment(state, risk.ltv(state.debt, value), hf, thresholds, age, action)

    async def liquidate(
        self, actor: Actor, *, line_id: int, reason: str, full: bool
    ) -> risk.ActionKind:
        """Staff run the loop's decision on one line now (``full``: close the debt)."""
        if actor.role is not Role.ADMIN:
            raise Forbidden("only ADMIN may liquidate")
        if not reason.strip():
            raise ReasonRequired("a liquidation needs a reason", field="reason")
        await self.lines.get(line_id)
        return await self.loop.act(line_id, force_full=full, actor=actor, reason=reason)

    async def push_price(
        self, actor: Actor, *, asset: str, round_id: int, answer: int, decimals: int,
        updated_at: datetime, signer: str | None, signature: str | None,
    ) -> Verdict:  # fmt: skip
        """The ops push source: staff (ADMIN, OPS) send a round signed by a configured ops
        signer (:meth:`PriceSigners.verify`: 503, 401 or 403 before anything is written);
        the round is recorded with the signer's name and judged like a feed's."""
        if actor.role not in STAFF:
            raise Forbidden("prices are pushed by ADMIN or OPS")
        signed = SignedRound(asset, round_id, answer, decimals, updated_at)
        name = self.price_signers.verify(signer, signature, signed)
        await self.directory.asset(asset)
        return await record_round(
            self.ledger.engine,
            PriceRound(asset, "push", round_id, answer, decimals, updated_at, signer=name),
            actor,
        )

    # -- risk parameters ------------------------------------------------------------------
    async def draft_parameters(self, actor: Actor, values: Mapping[str, Any]) -> RiskParameters:
        """A DRAFT version from the API's values: the assets must exist (404 UNKNOWN_ASSET),
        ``close_factor_min``, ``min_leftover`` and ``buffer`` are decimal strings of the debt
        asset (absent or None: the core's defaults), ``ewma_lambda`` and ``z`` decimal
        strings; every check passes before anything is written."""
        if actor.role not in risk_params.WRITERS:
            raise Forbidden("risk parameters are managed by ADMIN")
        await self.directory.asset(values["asset"])
        debt = await self.directory.asset(values["debt_asset"])
        typed = {k: v for k, v in values.items() if v is not None}
        for name in MONEY_FIELDS:
            if name in typed:
                typed[name] = parse_amount(typed[name], debt.scale, field=name)
        for name in ("ewma_lambda", "z"):
            if name in typed:
                typed[name] = Decimal(typed[name])
        draft = risk_params.RiskParameterDraft(**typed)
        draft_id = await risk_params.create_draft(self.ledger.engine, draft, actor)
        return await risk_params.get(self.ledger.engine, draft_id)

    async def activate_parameters(
        self, actor: Actor, parameters_id: int, reason: str
    ) -> RiskParameters:
        """Make a DRAFT its asset's ACTIVE version (the previous one retires); the haircut is
        computed from the price history now."""
        await risk_params.activate(self.ledger.engine, parameters_id, actor, reason)
        await self.loop.refresh_moved_prices()  # the asset's limits under the new version
        return await self.parameters(parameters_id)

    async def parameters(self, parameters_id: int) -> RiskParameters:
        return await risk_params.get(self.ledger.engine, parameters_id)

    async def parameter_versions(self, asset: str | None) -> list[RiskParameters]:
        return await risk_params.list_versions(self.ledger.engine, asset)

    # -- repayments -----------------------------------------------------------------------
    async def initiate_repayment(
        self, caller: uuid.UUID | None, actor: Actor, *, line_id: int, amount: str, method: str
    ) -> Repayment:
        state = await self._line(caller, line_id)
        units = await self.directory.parse(amount, state.line.debt_asset)
        return await self.repayments.initiate(line_id, units, method, actor)

    async def repayment(self, caller: uuid.UUID | None, repayment_id: uuid.UUID) -> Repayment:
        found = await self.repayments.get(repayment_id)
        await self._line(caller, found.line_id)
        return found

    async def repayment_webhook(
        self, actor: Actor, *, event_id: str, repayment_id: uuid.UUID, status: str,
        amount: str | None,
    ) -> Repayment:  # fmt: skip
        """The provider's signed outcome (the signature is checked at the edge)."""
        if status not in {"succeeded", "failed"}:
            raise ValidationError("status must be 'succeeded' or 'failed'", field="status")
        found = await self.repayments.get(repayment_id)
        line: Line = (await self.lines.get(found.line_id)).line
        units = None if amount is None else await self.directory.parse(amount, line.debt_asset)
        return await self.repayments.settle(
            repayment_id, event_id, succeeded=status == "succeeded", actor=actor, amount=units
        )
