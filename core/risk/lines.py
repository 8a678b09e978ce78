"""Credit lines: a user's credit account (debt asset, floor = -limit), collateral account,
yield cushion and the use cases on them — open, deposit and withdraw collateral, card spends
(holds on the credit account), the cushion's yield, daily interest, and the set-based limit
refresh.

Serialization: every use case that decides from a line's balances (withdrawal, the risk
loop's actions, repayments) first locks the line's row (``SELECT ... FOR UPDATE``) and keeps it
until its posting is committed, so two of them never decide from the same state. Card spends
do not take that lock: the database's floor (``balances_floor`` CHECK) bounds them, and a
withdrawal holds the credit account's balance row while it checks and posts.

Collateral: a line holds its own collateral asset (``collateral_asset``, whose active risk
parameters lend its debt asset and give its buffer, APR and the position's sale rules) and any
further assets deposited into it (``credit_line_collateral``, migration 0025), each in a
COLLATERAL account of its own and judged with its own asset's parameters.

Limit (refreshed set-based on every price change, deposit, withdrawal and action):
``limit = min(sum value_i * (1 - H_i) - buffer, sum value_i * initial LTV_i)``, each term
rounded down, >= 0, and the credit account's floor = ``least(-limit, posted - pending)``: a line
over its limit (prices fell) cannot spend more but is never made to break the CHECK. An asset
whose price is frozen (or missing, or without active parameters) counts for nothing; without
its own asset's parameters the limit is 0.
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
    ValidationError,
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


def value_sql(c: str = "c", ra: str = "ra", ca: str = "ca", da: str = "da") -> str:
    """SQL for the value of a collateral balance (``c``: its balances row, ``ra``: its
    risk_assets row, ``ca``/``da``: the collateral and debt assets) in debt minor units,
    rounded down (core.risk.math.value_of)."""
    return (
        f"div({c}.posted::numeric * {ra}.price_answer * power(10::numeric, {da}.scale), "
        f"power(10::numeric, {ca}.scale + {ra}.price_decimals))"
    )


#: the value of a line's own collateral (aliases c, ra, ca, da)
VALUE_SQL = value_sql()

#: a further holding's value, 0 while its price is frozen or missing
_FURTHER_VALUE = (
    f"CASE WHEN xra.frozen OR xra.price_answer IS NULL THEN 0 "
    f"ELSE {value_sql('xc', 'xra', 'xca', 'da')} END"
)

_REFRESH = f"""
WITH v AS (
    SELECT l.id, l.credit_account_id,
           CASE WHEN p.id IS NULL THEN 0 ELSE
             greatest(0, least(
               div(own.value * (10000 - p.haircut_bps), 10000) + coalesce(x.haircut, 0)
                 - p.buffer,
               div(own.value * p.initial_bps + coalesce(x.initial, 0), 10000)))
           END::bigint AS lim
    FROM credit_lines l
    JOIN balances c ON c.account_id = l.collateral_account_id
    JOIN risk_assets ra ON ra.asset = l.collateral_asset
    JOIN assets ca ON ca.code = l.collateral_asset
    JOIN assets da ON da.code = l.debt_asset
    LEFT JOIN risk_parameters p ON p.asset = l.collateral_asset AND p.status = 'ACTIVE'
    CROSS JOIN LATERAL (
        SELECT CASE WHEN ra.frozen OR ra.price_answer IS NULL THEN 0 ELSE {VALUE_SQL} END
               AS value) own
    LEFT JOIN LATERAL (
        SELECT sum(div({_FURTHER_VALUE} * (10000 - xp.haircut_bps), 10000)) AS haircut,
               sum({_FURTHER_VALUE} * xp.initial_bps) AS initial
        FROM credit_line_collateral x
        JOIN balances xc ON xc.account_id = x.account_id
        JOIN risk_assets xra ON xra.asset = x.asset
        JOIN assets xca ON xca.code = x.asset
        JOIN risk_parameters xp ON xp.asset = x.asset AND xp.status = 'ACTIVE'
        WHERE l.multi_collateral AND x.line_id = l.id) x ON true
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


#: before a card authorization, over the line's own asset and the further ones it holds:
#: whether the line's limit predates a price, freeze or parameters (``moved``), and the first
#: asset whose price outlived its heartbeat unfrozen (``expired``)
_SPEND_CHECK = """
SELECT coalesce(bool_or(ra.limits_at IS DISTINCT FROM ra.updated_at), false) AS moved,
       min(h.asset) FILTER (WHERE NOT ra.frozen AND ra.price_at < clock_timestamp()
           - make_interval(secs => coalesce(p.heartbeat_s, :hb))) AS expired
FROM (SELECT collateral_asset AS asset FROM credit_lines WHERE id = :id
      UNION ALL
      SELECT x.asset FROM credit_line_collateral x
      JOIN balances b ON b.account_id = x.account_id
      WHERE x.line_id = :id AND b.posted > 0) h
JOIN risk_assets ra ON ra.asset = h.asset
LEFT JOIN risk_parameters p ON p.asset = h.asset AND p.status = 'ACTIVE'
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
    #: the line holds further collateral assets (:class:`Held`)
    multi_collateral: bool = False


def _line(row: Any) -> Line:
    return Line(
        row.id, row.owner_id, row.debt_asset, row.collateral_asset, row.credit_account_id,
        row.collateral_account_id, row.cushion_account_id, row.available_account_id,
        row.credit_limit, None if row.stop_loss_answer is None else int(row.stop_loss_answer),
        row.notified_at, row.status, row.created_at, bool(row.multi_collateral),
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Held:
    """A collateral asset a line holds, with its balance, price and parameters: the line's own
    (:meth:`LineState.holdings` builds it) or a further one."""

    asset: str
    account_id: int
    quantity: int
    price: risk.Price | None
    price_at: datetime | None
    frozen: bool
    frozen_reason: str | None
    params: RiskParameters | None
    scale: int
    stop_loss_answer: int | None

    @property
    def trusted(self) -> bool:
        """Its price can be acted on: present, not frozen, under active parameters."""
        return not self.frozen and self.price is not None and self.params is not None

    def price_per_minor(self, debt_scale: int) -> Fraction | None:
        return None if self.price is None else self.price.per_minor(self.scale, debt_scale)

    def value(self, debt_scale: int) -> int:
        px = self.price_per_minor(debt_scale)
        return 0 if px is None else risk.value_of(self.quantity, px)


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
    #: the further collateral assets the line holds (empty for most lines)
    others: tuple[Held, ...] = ()

    @property
    def price_per_minor(self) -> Fraction | None:
        if self.price is None:
            return None
        return self.price.per_minor(self.collateral_scale, self.debt_scale)

    def holdings(self) -> tuple[Held, ...]:
        """Every collateral asset of the line, its own first."""
        own = Held(
            self.line.collateral_asset, self.line.collateral_account_id, self.collateral,
            self.price, self.price_at, self.frozen, self.frozen_reason, self.params,
            self.collateral_scale, self.line.stop_loss_answer,
        )  # fmt: skip
        return (own, *self.others)

    def held(self, asset: str) -> Held | None:
        return next((h for h in self.holdings() if h.asset == asset), None)

    @property
    def trusted(self) -> bool:
        """Every price the position's value depends on can be acted on: its own asset's, and
        each further asset's it holds any of."""
        own, *others = self.holdings()
        return own.trusted and all(h.trusted for h in others if h.quantity > 0)

    @property
    def value(self) -> int:
        """The collateral's value in debt minor units, each asset's rounded down, at its last
        price even while frozen (what is shown; the loop acts only on trusted prices)."""
        return sum(h.value(self.debt_scale) for h in self.holdings())

    @property
    def current_limit(self) -> int:
        """The limit at the current prices: what a card authorization meets now (it refreshes
        the stored ``credit_limit`` first when a price moved since, :meth:`CreditLines.authorize`),
        by the same formula as the refresh (:data:`_REFRESH`); 0 while a held asset's price is
        past its heartbeat unfrozen (authorizations are refused then)."""
        if self.params is None:
            return 0
        haircut = initial = 0
        for i, h in enumerate(self.holdings()):
            if h.params is None or h.price is None or h.frozen:
                continue
            if (
                (i == 0 or h.quantity > 0)
                and h.price_at is not None
                and ((self.now - h.price_at).total_seconds() > h.params.heartbeat_s)
            ):
                return 0
            value = h.value(self.debt_scale)
            haircut += value * (risk.BPS - h.params.haircut_bps) // risk.BPS
            initial += value * h.params.initial_bps
        return max(min(haircut - self.params.buffer, initial // risk.BPS), 0)

    def position(self, *, without: tuple[str, int] | None = None) -> risk.Position:
        """The position the risk model judges (``without``: as if ``(asset, quantity)`` had
        been withdrawn first)."""
        px = self.price_per_minor
        if px is None or self.params is None:
            return risk.Position(self.debt, self.collateral, Fraction(0), frozen=True)
        out_asset, out_quantity = without or ("", 0)
        held: list[risk.Holding] = []
        for h in self.others:
            quantity = h.quantity - (out_quantity if h.asset == out_asset else 0)
            hpx = h.price_per_minor(self.debt_scale)
            if quantity <= 0 or hpx is None or h.params is None:
                continue
            stop = None if h.stop_loss_answer is None or h.price is None else risk.Price(
                h.stop_loss_answer, h.price.decimals
            ).per_minor(h.scale, self.debt_scale)  # fmt: skip
            held.append(risk.Holding(h.asset, quantity, hpx, h.params.ladder, stop))
        stop = None
        if self.line.stop_loss_answer is not None and self.price is not None:
            stop = risk.Price(self.line.stop_loss_answer, self.price.decimals).per_minor(
                self.collateral_scale, self.debt_scale
            )
        own = self.collateral - (out_quantity if out_asset == self.line.collateral_asset else 0)
        return risk.Position(
            self.debt, max(own, 0), px, self.cushion, stop, self.line.notified_at is not None,
            not self.trusted, self.line.collateral_asset, tuple(held),
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

_FURTHER = """
SELECT x.asset, x.account_id, x.stop_loss_answer, c.posted, ra.price_answer, ra.price_decimals,
       ra.price_at, ra.frozen, ra.frozen_reason, a.scale
FROM credit_line_collateral x
JOIN balances c ON c.account_id = x.account_id
JOIN assets a ON a.code = x.asset
LEFT JOIN risk_assets ra ON ra.asset = x.asset
WHERE x.line_id = :id
ORDER BY x.created_at, x.asset
"""


def _price(row: Any) -> risk.Price | None:
    if row.price_answer is None:
        return None
    return risk.Price(int(row.price_answer), int(row.price_decimals))


def _held(row: Any, params: RiskParameters | None) -> Held:
    stop = None if row.stop_loss_answer is None else int(row.stop_loss_answer)
    frozen = True if row.frozen is None else bool(row.frozen)
    return Held(
        row.asset, row.account_id, int(row.posted), _price(row), row.price_at, frozen,
        row.frozen_reason, params, row.scale, stop,
    )  # fmt: skip


async def read_state(conn: AsyncConnection, line_id: int) -> LineState:
    row = (await conn.execute(text(_STATE), {"id": line_id})).first()
    if row is None:
        raise UnknownCreditLine(f"credit line {line_id} does not exist", line_id=line_id)
    further = []
    if row.multi_collateral:
        further = list((await conn.execute(text(_FURTHER), {"id": line_id})).all())
    assets = [row.collateral_asset, *(f.asset for f in further)]
    params = {
        p.asset: parameters_from_row(p)
        for p in await conn.execute(
            text("SELECT * FROM risk_parameters WHERE asset = ANY(:a) AND status = 'ACTIVE'"),
            {"a": assets},
        )
    }
    others = tuple(_held(f, params.get(f.asset)) for f in further)
    return LineState(
        _line(row), max(int(row.exposure), 0), max(int(row.owed), 0), int(row.collateral),
        int(row.cushion), _price(row), row.price_at, bool(row.frozen) if row.frozen is not None
        else True, row.frozen_reason, params.get(row.collateral_asset), row.collateral_scale,
        row.debt_scale, row.now, others,
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
                        "OR collateral_account_id = :a "
                        "UNION ALL SELECT line_id FROM credit_line_collateral "
                        "WHERE account_id = :a"
                    ),
                    {"a": account_id},
                )
            ).scalar()
        if found is None:
            raise UnknownCreditLine(f"account {account_id} belongs to no credit line")
        return int(found)

    # -- collateral ---------------------------------------------------------------------
    async def deposit(
        self, line_id: int, amount: int, actor: Actor, idempotency_key: str | None = None,
        asset: str | None = None,
    ) -> OperationResult:  # fmt: skip
        """Collateral from the owner's AVAILABLE account into the line (``asset``: the line's
        own collateral asset by default; another asset is added to the line first, under its
        own active parameters lending the line's debt asset). The deposit and the higher limit
        it gives commit together (a refusal commits only its record, and an added asset stays
        added, empty, as an opened wallet does)."""
        async with locked_line(self.engine, line_id) as conn:
            state = await read_state(conn, line_id)
            held = await self._holding(conn, state, asset or state.line.collateral_asset, actor)
            wallet = await self.ledger.accounts.ensure_wallet(
                state.line.owner_id, held.asset, actor=actor
            )
            outcome = await self._post_with_limit(
                conn, line_id,
                PostOperation(
                    OperationType.COLLATERAL_DEPOSIT,
                    transfer_legs(
                        wallet[AccountKind.AVAILABLE], held.account_id, held.asset, amount
                    ),
                    actor, idempotency_key, {"credit_line": line_id} | _asset_note(state, held),
                ),
            )  # fmt: skip
        return _posted(outcome)

    async def _holding(
        self, conn: AsyncConnection, state: LineState, asset: str, actor: Actor
    ) -> Held:
        """The line's holding of ``asset``, added (in ``conn``'s transaction, which holds the
        line's lock) when the line has none yet."""
        held = state.held(asset)
        if held is not None:
            return held
        lends = (
            await conn.execute(
                text(
                    "SELECT debt_asset FROM risk_parameters WHERE asset = :a AND status = 'ACTIVE'"
                ),
                {"a": asset},
            )
        ).scalar()
        if lends != state.line.debt_asset:
            raise NoRiskParameters(
                f"no active risk parameters lend {state.line.debt_asset} against {asset}",
                asset=asset,
            )
        # hold the credit account's balance row first: a card spend racing the change of the
        # line's kind commits before it (seen by its rows) or after it (and recomputes them)
        await conn.execute(
            text("SELECT 1 FROM balances WHERE account_id = :a FOR UPDATE"),
            {"a": state.line.credit_account_id},
        )
        account = await self.ledger.accounts.open_account_in(
            conn, asset=asset, kind=AccountKind.COLLATERAL, owner_id=state.line.owner_id,
            actor=actor, floor=0, metadata={"credit_line": state.line.id},
        )  # fmt: skip
        await conn.execute(
            text(
                "INSERT INTO credit_line_collateral (line_id, asset, account_id) "
                "VALUES (:l, :a, :acc)"
            ),
            {"l": state.line.id, "a": asset, "acc": account},
        )
        await conn.execute(
            text("UPDATE credit_lines SET multi_collateral = true WHERE id = :l"),
            {"l": state.line.id},
        )
        await audit.record(
            conn, actor, "credit_line.collateral_added", "credit_line", state.line.id,
            after={"asset": asset, "account_id": account},
        )  # fmt: skip
        return (await read_state(conn, state.line.id)).held(asset) or _never(asset)

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
        self, line_id: int, amount: int, actor: Actor, idempotency_key: str | None = None,
        asset: str | None = None,
    ) -> OperationResult:  # fmt: skip
        """Collateral (of ``asset``, the line's own by default) back to the owner's AVAILABLE
        account, only if the position stays at or under its initial LTV afterwards (weighted
        over its assets, every price trusted). The withdrawal and the lower limit it leaves
        commit together; a refused withdrawal commits only its refusal (remembered under
        ``idempotency_key``)."""
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
            code = asset or state.line.collateral_asset
            held = state.held(code)
            if held is None:
                raise ValidationError(
                    f"credit line {line_id} holds no {code}", field="asset", asset=code
                )
            if state.debt > 0:
                if not state.trusted:
                    raise PriceFrozen(f"a price credit line {line_id} depends on is not trusted")
                left = state.position(without=(code, amount))
                initial = risk.capacity(left.holdings(_ladder(state)), lambda lad: lad.initial_bps)
                if risk.crossed_capacity(state.debt, initial):
                    raise LtvBreach(
                        "the withdrawal would leave the line over its initial LTV",
                        line_id=line_id,
                    )
            wallet = await self.ledger.accounts.ensure_wallet(
                state.line.owner_id, code, actor=actor
            )
            outcome = await self._post_with_limit(
                conn, line_id,
                PostOperation(
                    OperationType.COLLATERAL_WITHDRAW,
                    transfer_legs(held.account_id, wallet[AccountKind.AVAILABLE], code, amount),
                    actor, idempotency_key, {"credit_line": line_id} | _asset_note(state, held),
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
            if check.expired is not None:
                raise PriceFrozen(
                    f"{check.expired} price is older than its heartbeat", asset=check.expired
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

    async def set_stop_loss(
        self, line_id: int, answer: int | None, actor: Actor, asset: str | None = None
    ) -> None:
        """Set (``None``: clear) the stop-loss of the line's holding of ``asset`` (its own
        collateral asset by default)."""
        async with locked_line(self.engine, line_id) as conn:
            state = await read_state(conn, line_id)
            code = asset or state.line.collateral_asset
            if code == state.line.collateral_asset:
                statement = "UPDATE credit_lines SET stop_loss_answer = :s WHERE id = :id"
            elif state.held(code) is not None:
                statement = (
                    "UPDATE credit_line_collateral SET stop_loss_answer = :s "
                    "WHERE line_id = :id AND asset = :a"
                )
            else:
                raise ValidationError(
                    f"credit line {line_id} holds no {code}", field="asset", asset=code
                )
            await conn.execute(text(statement), {"s": answer, "id": line_id, "a": code})
            await audit.record(
                conn, actor, "credit_line.stop_loss", "credit_line", line_id,
                after={"asset": code, "stop_loss_answer": answer},
            )  # fmt: skip


def _ladder(state: LineState) -> risk.Ladder:
    if state.params is None:
        raise NoRiskParameters(f"{state.line.collateral_asset} has no parameters")
    return state.params.ladder


def _asset_note(state: LineState, held: Held) -> dict[str, str]:
    """Operation metadata naming a further asset (the line's own goes unnamed, as before)."""
    return {} if held.asset == state.line.collateral_asset else {"asset": held.asset}


def _never(asset: str) -> Held:  # pragma: no cover - the row was just inserted
    raise LookupError(f"the {asset} holding just added is not there")


def liquidation_entries(
    state: LineState, action: risk.Action, liquidation: dict[str, int], bad_debt: int
) -> tuple[EntrySpec, ...]:
    """The balanced legs of a sale: each asset's collateral sold to its liquidation account;
    the proceeds to the credit account (repaid) and the user's AVAILABLE (surplus); bad debt
    for the rest."""
    line = state.line
    legs: list[EntrySpec] = []
    lots = [(line.collateral_asset, action.sold)] + [(x.asset, x.quantity) for x in action.lots]
    for asset, quantity in lots:
        held = state.held(asset)
        if quantity and held is not None:
            legs += transfer_legs(held.account_id, liquidation[asset], asset, quantity)
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
