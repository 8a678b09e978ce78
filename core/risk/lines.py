"""Credit lines: a user's credit account (debt asset, floor = -limit), collateral account,
yield cushion and the use cases on them — open, deposit and withdraw collateral, card spends
(holds on the credit account), the cushion's yield, daily interest, and the set-based limit
refresh.

Serialization: every use case that decides from a line's balances (withdrawal, the risk
loop's actions, repayments) first locks the line's row (``SELECT ... FOR UPDATE``) and keeps it
until its posting is committed, so two of them never decide from the same state. Card spends
do not take that lock: the database's floor (``balances_floor`` CHECK) bounds them, and a
withdrawal holds the credit account's balance row while it checks and posts.

Limit (refreshed set-based on every price change, deposit, withdrawal and action):
``limit = min(sum value * (1 - H) - buffer, value * initial LTV)``, rounded down, >= 0, and
the credit account's floor = ``least(-limit, posted - pending)``: a line over its limit (prices
fell) cannot spend more but is never made to break the CHECK. A frozen price gives limit 0.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date, datetime
from fractions import Fraction
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from core import audit
from core.errors import (
    CreditLineExists,
    LedgerError,
    LtvBreach,
    NoRiskParameters,
    PriceFrozen,
    UnknownCreditLine,
)
from core.ledger import Ledger
from core.risk import math as risk
from core.risk.params import RiskParameters, parameters_from_row
from core.risk.prices import DEFAULT_HEARTBEAT_S
from core.storage_errors import translate
from core.types import (
    AccountKind,
    Actor,
    EntrySpec,
    HoldResult,
    OperationResult,
    OperationType,
    PostOperation,
    Result,
    Side,
    SystemAccount,
    transfer_legs,
)

#: the value of a line's collateral in debt minor units, rounded down (core.risk.math.value_of)
VALUE_SQL = (
    "div(c.posted::numeric * ra.price_answer * power(10::numeric, da.scale), "
    "power(10::numeric, ca.scale + ra.price_decimals))"
)

_REFRESH = f"""
WITH v AS (
    SELECT l.id, l.credit_account_id,
           CASE WHEN ra.frozen OR p.id IS NULL OR ra.price_answer IS NULL THEN 0 ELSE
             greatest(0, least(
               div({VALUE_SQL} * (10000 - p.haircut_bps), 10000) - p.buffer,
               div({VALUE_SQL} * p.initial_bps, 10000)))
           END::bigint AS lim
    FROM credit_lines l
    JOIN balances c ON c.account_id = l.collateral_account_id
    JOIN risk_assets ra ON ra.asset = l.collateral_asset
    JOIN assets ca ON ca.code = l.collateral_asset
    JOIN assets da ON da.code = l.debt_asset
    LEFT JOIN risk_parameters p ON p.asset = l.collateral_asset AND p.status = 'ACTIVE'
    WHERE l.status = 'OPEN' AND {{where}}
), locked AS (
    SELECT b.account_id FROM balances b JOIN v ON v.credit_account_id = b.account_id
    ORDER BY b.account_id FOR UPDATE OF b
), lines AS (
    UPDATE credit_lines l SET credit_limit = v.lim, updated_at = clock_timestamp()
    FROM v WHERE l.id = v.id AND l.credit_limit <> v.lim
)
UPDATE balances b SET floor = least(-v.lim, b.posted - b.pending)
FROM v WHERE b.account_id = v.credit_account_id
  AND b.account_id IN (SELECT account_id FROM locked)
"""


#: before a card authorization: whether the line's limit predates its asset's price, freeze or
#: parameters (``moved``), and whether the price outlived its heartbeat unfrozen (``expired``)
_SPEND_CHECK = """
SELECT ra.limits_at IS DISTINCT FROM ra.updated_at AS moved,
       NOT ra.frozen AND ra.price_at < clock_timestamp()
           - make_interval(secs => coalesce(p.heartbeat_s, :hb)) AS expired
FROM credit_lines l
JOIN risk_assets ra ON ra.asset = l.collateral_asset
LEFT JOIN risk_parameters p ON p.asset = l.collateral_asset AND p.status = 'ACTIVE'
WHERE l.id = :id
"""


def _posted(outcome: Result | LedgerError) -> OperationResult:
    """The posting's result, or its refusal raised (after the caller's transaction kept its
    record)."""
    if isinstance(outcome, LedgerError):
        raise outcome
    if not isinstance(outcome, OperationResult):  # pragma: no cover - a posting answers so
        raise TypeError(f"a posting answered {type(outcome).__name__}")
    return outcome


@dataclass(frozen=True, slots=True)
class Line:
    id: int
    owner_id: uuid.UUID
    debt_asset: str
    collateral_asset: str
    credit_account_id: int
    collateral_account_id: int
    cushion_account_id: int
    available_account_id: int
    credit_limit: int
    stop_loss_answer: int | None
    notified_at: datetime | None
    status: str
    created_at: datetime


def _line(row: Any) -> Line:
    return Line(
        row.id, row.owner_id, row.debt_asset, row.collateral_asset, row.credit_account_id,
        row.collateral_account_id, row.cushion_account_id, row.available_account_id,
        row.credit_limit, None if row.stop_loss_answer is None else int(row.stop_loss_answer),
        row.notified_at, row.status, row.created_at,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class LineState:
    """A line with its balances, price and parameters, as read (under lock or not)."""

    line: Line
    debt: int  # pending - posted of the credit account, >= 0: what the user owes or reserved
    owed: int  # -posted, >= 0: posted debt only (what a repayment can pay)
    collateral: int
    cushion: int
    price: risk.Price | None
    price_at: datetime | None
    frozen: bool
    frozen_reason: str | None
    params: RiskParameters | None
    collateral_scale: int
    debt_scale: int
    now: datetime

    @property
    def price_per_minor(self) -> Fraction | None:
        if self.price is None:
            return None
        return self.price.per_minor(self.collateral_scale, self.debt_scale)

    @property
    def value(self) -> int:
        px = self.price_per_minor
        return 0 if px is None else risk.value_of(self.collateral, px)

    def position(self) -> risk.Position:
        px = self.price_per_minor
        if px is None or self.params is None:
            return risk.Position(self.debt, self.collateral, Fraction(0), frozen=True)
        stop = None
        if self.line.stop_loss_answer is not None and self.price is not None:
            stop = risk.Price(self.line.stop_loss_answer, self.price.decimals).per_minor(
                self.collateral_scale, self.debt_scale
            )
        return risk.Position(
            self.debt, self.collateral, px, self.cushion, stop,
            self.line.notified_at is not None, self.frozen,
        )  # fmt: skip


_STATE = """
SELECT l.*, -cb.posted AS owed, cb.pending - cb.posted AS exposure, c.posted AS collateral,
       cu.posted AS cushion, ra.price_answer, ra.price_decimals, ra.price_at, ra.frozen,
       ra.frozen_reason, ca.scale AS collateral_scale, da.scale AS debt_scale,
       clock_timestamp() AS now
FROM credit_lines l
JOIN balances cb ON cb.account_id = l.credit_account_id
JOIN balances c ON c.account_id = l.collateral_account_id
JOIN balances cu ON cu.account_id = l.cushion_account_id
JOIN assets ca ON ca.code = l.collateral_asset
JOIN assets da ON da.code = l.debt_asset
LEFT JOIN risk_assets ra ON ra.asset = l.collateral_asset
WHERE l.id = :id
"""


async def read_state(conn: AsyncConnection, line_id: int) -> LineState:
    row = (await conn.execute(text(_STATE), {"id": line_id})).first()
    if row is None:
        raise UnknownCreditLine(f"credit line {line_id} does not exist", line_id=line_id)
    params_row = (
        await conn.execute(
            text("SELECT * FROM risk_parameters WHERE asset = :a AND status = 'ACTIVE'"),
            {"a": row.collateral_asset},
        )
    ).first()
    price = None
    if row.price_answer is not None:
        price = risk.Price(int(row.price_answer), int(row.price_decimals))
    return LineState(
        _line(row), max(int(row.exposure), 0), max(int(row.owed), 0), int(row.collateral),
        int(row.cushion), price, row.price_at, bool(row.frozen) if row.frozen is not None
        else True, row.frozen_reason, None if params_row is None
        else parameters_from_row(params_row), row.collateral_scale, row.debt_scale, row.now,
    )  # fmt: skip


@asynccontextmanager
async def locked_line(engine: AsyncEngine, line_id: int) -> AsyncIterator[AsyncConnection]:
    """A transaction holding the line's row lock (see the module's serialization rule)."""
    async with engine.begin() as conn:
        found = (
            await conn.execute(
                text("SELECT id FROM credit_lines WHERE id = :id FOR UPDATE"), {"id": line_id}
            )
        ).first()
        if found is None:
            raise UnknownCreditLine(f"credit line {line_id} does not exist", line_id=line_id)
        yield conn


async def refresh_limits(
    conn: AsyncConnection, *, line_ids: Sequence[int] | None = None, asset: str | None = None
) -> None:
    """Recompute limits and floors of the named lines, or of every open line of ``asset``
    (or of every open line), in one statement."""
    params: dict[str, Any]
    if line_ids is not None:
        where, params = "l.id = ANY(:ids)", {"ids": list(line_ids)}
    elif asset is not None:
        where, params = "l.collateral_asset = :asset", {"asset": asset}
    else:
        where, params = "true", {}
    await conn.execute(text(_REFRESH.replace("{where}", where)), params)


class CreditLines:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.engine = ledger.engine

    async def system(self, asset: str, code: SystemAccount, actor: Actor) -> int:
        return await self.ledger.accounts.system_account(asset, code, actor=actor)

    async def open(
        self, owner_id: uuid.UUID, collateral_asset: str, debt_asset: str, actor: Actor
    ) -> Line:
        """Open a line: a credit account (floor 0 until collateral arrives), a collateral
        account, a cushion, under the asset's ACTIVE risk parameters."""
        async with self.engine.connect() as conn:
            params = (
                await conn.execute(
                    text(
                        "SELECT debt_asset FROM risk_parameters WHERE asset = :a "
                        "AND status = 'ACTIVE'"
                    ),
                    {"a": collateral_asset},
                )
            ).first()
        if params is None or params.debt_asset != debt_asset:
            raise NoRiskParameters(
                f"no active risk parameters lend {debt_asset} against {collateral_asset}",
                asset=collateral_asset,
            )
        debt_wallet = await self.ledger.accounts.ensure_wallet(owner_id, debt_asset, actor=actor)
        await self.ledger.accounts.ensure_wallet(owner_id, collateral_asset, actor=actor)
        try:
            async with self.engine.begin() as conn:
                opener = self.ledger.accounts.open_account_in
                credit = await opener(
                    conn, asset=debt_asset, kind=AccountKind.CREDIT, owner_id=owner_id,
                    actor=actor, floor=0,
                )  # fmt: skip
                collateral = await opener(
                    conn, asset=collateral_asset, kind=AccountKind.COLLATERAL,
                    owner_id=owner_id, actor=actor, floor=0,
                )  # fmt: skip
                cushion = await opener(
                    conn, asset=debt_asset, kind=AccountKind.VAULT, owner_id=owner_id,
                    actor=actor, floor=0, metadata={"purpose": "cushion"},
                )  # fmt: skip
                row = (
                    await conn.execute(
                        text(
                            "INSERT INTO credit_lines (owner_id, debt_asset, collateral_asset, "
                            "credit_account_id, collateral_account_id, cushion_account_id, "
                            "available_account_id) VALUES (:o, :d, :c, :cr, :co, :cu, :av) "
                            "RETURNING *"
                        ),
                        {"o": owner_id, "d": debt_asset, "c": collateral_asset, "cr": credit,
                         "co": collateral, "cu": cushion,
                         "av": debt_wallet[AccountKind.AVAILABLE]},
                    )
                ).first()  # fmt: skip
                assert row is not None  # noqa: S101 - INSERT ... RETURNING
                await audit.record(
                    conn, actor, "credit_line.opened", "credit_line", row.id,
                    after={"owner": owner_id, "collateral": collateral_asset,
                           "debt": debt_asset},
                )  # fmt: skip
                return _line(row)
        except DBAPIError as exc:
            err = translate(exc)
            if err.code == "ALREADY_EXISTS" or "accounts_compartment_key" in str(exc):
                raise CreditLineExists(
                    f"{owner_id} already has a {collateral_asset}/{debt_asset} line"
                ) from exc
            raise err from exc

    async def get(self, line_id: int) -> LineState:
        async with self.engine.connect() as conn:
            return await read_state(conn, line_id)

    async def of_user(self, owner_id: uuid.UUID) -> list[LineState]:
        async with self.engine.connect() as conn:
            ids = (
                await conn.execute(
                    text("SELECT id FROM credit_lines WHERE owner_id = :o ORDER BY id"),
                    {"o": owner_id},
                )
            ).scalars()
            return [await read_state(conn, i) for i in list(ids)]

    async def by_account(self, account_id: int) -> int:
        """The line a credit or collateral account belongs to."""
        async with self.engine.connect() as conn:
            found = (
                await conn.execute(
                    text(
                        "SELECT id FROM credit_lines WHERE credit_account_id = :a "
                        "OR collateral_account_id = :a"
                    ),
                    {"a": account_id},
                )
            ).scalar()
        if found is None:
            raise UnknownCreditLine(f"account {account_id} belongs to no credit line")
        return int(found)

    # -- collateral ---------------------------------------------------------------------
    async def deposit(
        self, line_id: int, amount: int, actor: Actor, idempotency_key: str | None = None
    ) -> OperationResult:
        """Collateral from the owner's AVAILABLE account into the line; the deposit and the
        higher limit it gives commit together (a refusal commits only its record)."""
        async with locked_line(self.engine, line_id) as conn:
            state = await read_state(conn, line_id)
            wallet = await self.ledger.accounts.ensure_wallet(
                state.line.owner_id, state.line.collateral_asset, actor=actor
            )
            outcome = await self._post_with_limit(
                conn, line_id,
                PostOperation(
                    OperationType.COLLATERAL_DEPOSIT,
                    transfer_legs(
                        wallet[AccountKind.AVAILABLE], state.line.collateral_account_id,
                        state.line.collateral_asset, amount,
                    ),
                    actor, idempotency_key, {"credit_line": line_id},
                ),
            )  # fmt: skip
        return _posted(outcome)

    async def _post_with_limit(
        self, conn: AsyncConnection, line_id: int, command: PostOperation
    ) -> Result | LedgerError:
        """Post ``command`` in ``conn``'s transaction (the line's lock) and, if it is
        posted, the line's new limit with it; a refusal is answered, not raised, so the
        caller commits its record (:meth:`core.ledger.Ledger.submit_within`)."""
        outcome = await self.ledger.submit_within(conn, command)
        if isinstance(outcome, OperationResult):
            await refresh_limits(conn, line_ids=[line_id])
        return outcome

    async def withdraw(
        self, line_id: int, amount: int, actor: Actor, idempotency_key: str | None = None
    ) -> OperationResult:
        """Collateral back to the owner's AVAILABLE account, only if the position stays at or
        under its initial LTV afterwards (and the price is trusted). The withdrawal and the
        lower limit it leaves commit together; a refused withdrawal commits only its refusal
        (remembered under ``idempotency_key``)."""
        async with locked_line(self.engine, line_id) as conn:
            # hold the credit account's balance row: no spend slips between check and post
            await conn.execute(
                text(
                    "SELECT 1 FROM balances b JOIN credit_lines l ON l.credit_account_id = "
                    "b.account_id WHERE l.id = :id FOR UPDATE OF b"
                ),
                {"id": line_id},
            )
            state = await read_state(conn, line_id)
            if state.debt > 0:
                if state.frozen or state.price_per_minor is None:
                    raise PriceFrozen(f"{state.line.collateral_asset} price is not trusted now")
                if state.params is None:
                    raise NoRiskParameters(f"{state.line.collateral_asset} has no parameters")
                left = risk.value_of(state.collateral - amount, state.price_per_minor)
                if risk.crossed(state.debt, left, state.params.initial_bps):
                    raise LtvBreach(
                        "the withdrawal would leave the line over its initial LTV",
                        line_id=line_id,
                    )
            wallet = await self.ledger.accounts.ensure_wallet(
                state.line.owner_id, state.line.collateral_asset, actor=actor
            )
            outcome = await self._post_with_limit(
                conn, line_id,
                PostOperation(
                    OperationType.COLLATERAL_WITHDRAW,
                    transfer_legs(
                        state.line.collateral_account_id, wallet[AccountKind.AVAILABLE],
                        state.line.collateral_asset, amount,
                    ),
                    actor, idempotency_key, {"credit_line": line_id},
                ),
            )  # fmt: skip
        return _posted(outcome)

    # -- card spends ----------------------------------------------------------------------
    async def authorize(
        self,
        line_id: int,
        amount: int,
        actor: Actor,
        *,
        expires_at: datetime,
        idempotency_key: str | None = None,
        merchant: str | None = None,
    ) -> HoldResult:
        """A card authorization: a hold from the credit account to card settlement (the
        floor, -limit, bounds it); captured or voided through the ordinary hold commands.

        The limit it meets is the current price's: when the asset's price (or freeze, or
        parameters) changed since its lines' limits were last refreshed, this line's limit and
        floor are refreshed first; a price older than its heartbeat refuses new credit
        (PRICE_FROZEN) before the tick gets to freeze the asset."""
        state = await self.get(line_id)
        settlement = await self.system(state.line.debt_asset, SystemAccount.CARD_SETTLEMENT, actor)
        async with self.engine.begin() as conn:
            check = (
                await conn.execute(text(_SPEND_CHECK), {"id": line_id, "hb": DEFAULT_HEARTBEAT_S})
            ).one()
            if check.expired:
                raise PriceFrozen(
                    f"{state.line.collateral_asset} price is older than its heartbeat",
                    asset=state.line.collateral_asset,
                )
            if check.moved:
                await refresh_limits(conn, line_ids=[line_id])
        return await self.ledger.hold(
            source=state.line.credit_account_id, destination=settlement,
            asset=state.line.debt_asset, amount=amount, expires_at=expires_at, actor=actor,
            idempotency_key=idempotency_key,
            metadata={"credit_line": line_id} | ({"merchant": merchant} if merchant else {}),
        )  # fmt: skip

    # -- cushion and interest -----------------------------------------------------------------
    async def credit_yield(
        self, line_id: int, amount: int, actor: Actor, idempotency_key: str
    ) -> OperationResult:
        """Staking yield received for the user: into the line's cushion."""
        state = await self.get(line_id)
        omnibus = await self.system(state.line.debt_asset, SystemAccount.OMNIBUS, actor)
        return await self.ledger.post(
            PostOperation(
                OperationType.YIELD_CREDIT,
                transfer_legs(
                    omnibus, state.line.cushion_account_id, state.line.debt_asset, amount
                ),
                actor, idempotency_key, {"credit_line": line_id},
            )
        )  # fmt: skip

    async def accrue_interest(self, day: date, actor: Actor) -> int:
        """Charge ``day``'s interest on every open line with posted debt, once per line and
        day (``interest_accruals`` and the operation's idempotency key). Returns how many
        lines were charged."""
        async with self.engine.connect() as conn:
            ids = list(
                (
                    await conn.execute(
                        text(
                            "SELECT l.id FROM credit_lines l JOIN balances b ON "
                            "b.account_id = l.credit_account_id WHERE l.status = 'OPEN' "
                            "AND b.posted < 0 AND NOT EXISTS (SELECT 1 FROM interest_accruals "
                            "i WHERE i.line_id = l.id AND i.day = :d) ORDER BY l.id"
                        ),
                        {"d": day},
                    )
                ).scalars()
            )
        charged = 0
        for line_id in ids:
            charged += await self._accrue_one(line_id, day, actor)
        return charged

    async def _accrue_one(self, line_id: int, day: date, actor: Actor) -> int:
        async with locked_line(self.engine, line_id) as conn:
            done = (
                await conn.execute(
                    text("SELECT 1 FROM interest_accruals WHERE line_id = :l AND day = :d"),
                    {"l": line_id, "d": day},
                )
            ).first()
            if done is not None:
                return 0
            row = (
                await conn.execute(
                    text(
                        "SELECT l.interest_carry, l.credit_account_id, l.debt_asset, "
                        "b.posted, p.apr_bps FROM credit_lines l JOIN balances b ON "
                        "b.account_id = l.credit_account_id JOIN risk_parameters p ON "
                        "p.asset = l.collateral_asset AND p.status = 'ACTIVE' WHERE l.id = :l"
                    ),
                    {"l": line_id},
                )
            ).first()
            if row is None:
                return 0
            interest, carry = risk.accrue_interest(
                max(-int(row.posted), 0), row.apr_bps, int(row.interest_carry)
            )
            operation_id = None
            if interest > 0:
                income = await self.system(row.debt_asset, SystemAccount.INTEREST_INCOME, actor)
                # interest is charged even over the limit: make room for exactly this charge
                # and post it in this transaction, with its accrual row (a crash leaves all
                # or nothing); both balance rows are locked first, in id order, as the write
                # path locks them
                await conn.execute(
                    text(
                        "SELECT 1 FROM balances WHERE account_id IN (:a, :b) "
                        "ORDER BY account_id FOR UPDATE"
                    ),
                    {"a": row.credit_account_id, "b": income},
                )
                await conn.execute(
                    text(
                        "UPDATE balances SET floor = least(floor, posted - pending - :i) "
                        "WHERE account_id = :a"
                    ),
                    {"i": interest, "a": row.credit_account_id},
                )
                result = await self.ledger.post_within(
                    conn,
                    PostOperation(
                        OperationType.INTEREST,
                        transfer_legs(row.credit_account_id, income, row.debt_asset, interest),
                        actor, f"interest:{line_id}:{day.isoformat()}",
                        {"credit_line": line_id, "day": day.isoformat()},
                    ),
                )  # fmt: skip
                operation_id = result.operation_id
            await conn.execute(
                text(
                    "INSERT INTO interest_accruals (line_id, day, amount, operation_id) "
                    "VALUES (:l, :d, :a, :o)"
                ),
                {"l": line_id, "d": day, "a": interest, "o": operation_id},
            )
            await conn.execute(
                text("UPDATE credit_lines SET interest_carry = :c WHERE id = :l"),
                {"c": carry, "l": line_id},
            )
            return 1 if interest > 0 else 0

    async def set_stop_loss(self, line_id: int, answer: int | None, actor: Actor) -> None:
        async with locked_line(self.engine, line_id) as conn:
            await conn.execute(
                text("UPDATE credit_lines SET stop_loss_answer = :s WHERE id = :id"),
                {"s": answer, "id": line_id},
            )
            await audit.record(
                conn, actor, "credit_line.stop_loss", "credit_line", line_id,
                after={"stop_loss_answer": answer},
            )  # fmt: skip


def liquidation_entries(
    state: LineState, action: risk.Action, liquidation: dict[str, int], bad_debt: int
) -> tuple[EntrySpec, ...]:
    """The balanced legs of a sale: collateral to the liquidation account; its proceeds to
    the credit account (repaid) and the user's AVAILABLE (surplus); bad debt for the rest."""
    line = state.line
    legs: list[EntrySpec] = []
    if action.sold:
        legs += transfer_legs(
            line.collateral_account_id, liquidation[line.collateral_asset],
            line.collateral_asset, action.sold,
        )  # fmt: skip
    if action.proceeds:
        legs.append(EntrySpec(liquidation[line.debt_asset], line.debt_asset, action.proceeds,
                              Side.DEBIT))  # fmt: skip
    if action.repaid:
        legs.append(EntrySpec(line.credit_account_id, line.debt_asset, action.repaid, Side.CREDIT))
    if action.surplus:
        legs.append(
            EntrySpec(line.available_account_id, line.debt_asset, action.surplus, Side.CREDIT)
        )
    if action.shortfall:
        legs += transfer_legs(bad_debt, line.credit_account_id, line.debt_asset, action.shortfall)
    return tuple(legs)
