"""A credit desk per test: a private fiat asset, a private collateral asset with ACTIVE risk
parameters and a price, and helpers to open funded lines and push prices."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from core.ledger import Ledger
from core.risk import params as risk_params
from core.risk.lines import CreditLines, Line
from core.risk.loop import RiskLoop
from core.risk.prices import PriceRound, Verdict, record_round
from core.types import AccountKind, Actor, AssetKind, OperationType, Role, SystemAccount
from tests.support import raw_connect, wait_until_blocked

ADMIN = Actor("test-admin", Role.ADMIN)
#: collateral minor units per whole unit (wETH kept at 9 decimals: gwei)
COLL = 10**9
DECIMALS = 8


def usd(dollars: int) -> int:
    return dollars * 100


@dataclass
class Desk:
    ledger: Ledger
    lines: CreditLines
    loop: RiskLoop
    debt: str
    coll: str
    round_id: int = 100

    #: further collateral assets (:func:`add_asset`)
    others: tuple[str, ...] = ()

    async def price(self, dollars: int | float, *, source: str = "push",
                    at: datetime | None = None, round_id: int | None = None,
                    asset: str | None = None) -> Verdict:  # fmt: skip
        self.round_id += 1
        answer = round(dollars * 10**DECIMALS)
        return await record_round(
            self.ledger.engine,
            PriceRound(asset or self.coll, source,
                       round_id if round_id is not None else self.round_id, answer, DECIMALS,
                       at or datetime.now(UTC)),
            ADMIN,
        )  # fmt: skip

    async def fund(self, owner: uuid.UUID, asset: str, amount: int) -> None:
        """Mint ``amount`` of ``asset`` into the owner's AVAILABLE account."""
        wallet = await self.ledger.accounts.ensure_wallet(owner, asset, actor=ADMIN)
        issuance = await self.ledger.accounts.system_account(
            asset, SystemAccount.ISSUANCE, actor=ADMIN
        )
        await self.ledger.transfer(
            source=issuance, destination=wallet[AccountKind.AVAILABLE], asset=asset,
            amount=amount, type_=OperationType.MINT,
        )  # fmt: skip

    async def line(self, collateral: int, *, spend: int = 0) -> Line:
        """A new user with ``collateral`` deposited into a new line and ``spend`` drawn (a card
        authorization captured)."""
        owner = await self.ledger.accounts.create_user(email=None, actor=ADMIN)
        if collateral:
            await self.fund(owner, self.coll, collateral)
        line = await self.lines.open(owner, self.coll, self.debt, ADMIN)
        if collateral:
            await self.lines.deposit(line.id, collateral, ADMIN)
        if spend:
            await self.spend(line.id, spend)
        return line

    async def spend(self, line_id: int, amount: int) -> None:
        hold = await self.lines.authorize(
            line_id, amount, ADMIN, expires_at=datetime.now(UTC) + timedelta(hours=1)
        )
        await self.ledger.capture(hold.hold_id)

    async def totals(self) -> dict[str, int]:
        """Sum of every balance per desk asset: 0 for each, always."""
        async with self.ledger.engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT a.asset, sum(b.posted) FROM balances b JOIN accounts a ON "
                    "a.id = b.account_id WHERE a.asset = ANY(:a) GROUP BY a.asset"
                ),
                {"a": [self.debt, self.coll, *self.others]},
            )
            return {r[0]: int(r[1]) for r in rows}

    async def balance(self, account_id: int) -> int:
        async with self.ledger.engine.connect() as conn:
            return int(
                (
                    await conn.execute(
                        text("SELECT posted FROM balances WHERE account_id = :a"), {"a": account_id}
                    )
                ).scalar_one()
            )


#: a second collateral asset's parameters: a wider ladder and a lower penalty than wETH's
BTC_PARAMETERS: dict[str, object] = {
    "initial_bps": 6_000, "margin_call_bps": 7_000, "partial_bps": 8_000, "full_bps": 9_200,
    "target_bps": 6_500, "penalty_bps": 300, "min_leftover": usd(100),
    "haircut_floor_bps": 2_000, "haircut_ceiling_bps": 5_000, "buffer": 0, "apr_bps": 1_000,
}  # fmt: skip
#: its minor units per whole unit (wBTC: 8 decimals)
BTC = 10**8


async def add_asset(desk: Desk, dollars: int = 60_000, **overrides: object) -> str:
    """A further collateral asset lending the desk's debt asset, ACTIVE at ``dollars``."""
    code = f"WBTC{uuid.uuid4().hex[:8].upper()}"
    await desk.ledger.accounts.create_asset(
        code=code, name="wrapped bitcoin", scale=8, kind=AssetKind.COLLATERAL, actor=ADMIN
    )
    values = BTC_PARAMETERS | {"asset": code, "debt_asset": desk.debt} | overrides
    draft = risk_params.RiskParameterDraft(**values)  # type: ignore[arg-type]
    draft_id = await risk_params.create_draft(desk.ledger.engine, draft, ADMIN)
    assert await desk.price(dollars, asset=code) is Verdict.ACCEPTED
    await risk_params.activate(desk.ledger.engine, draft_id, ADMIN, "test desk")
    await desk.loop.refresh_moved_prices()
    desk.others += (code,)
    return code


#: one balance row's change: (account id, column "posted" or "pending", delta)
Move = tuple[int, str, int]


async def race(database_url: str, first: Move, second: Move) -> None:
    """Two transactions racing on one line's rows: ``first`` moves its balance and holds the
    line's risk rows; ``second``'s statement waits for them; ``first`` commits, then
    ``second``. (The rows then differ from the entries: :func:`undo` puts them back.)"""
    one, two = await raw_connect(database_url), await raw_connect(database_url)
    try:
        await one.execute("BEGIN")
        await one.execute(_MOVE.format(first[1]), first[2], first[0])
        await two.execute("BEGIN")
        moving = asyncio.create_task(two.execute(_MOVE.format(second[1]), second[2], second[0]))
        await wait_until_blocked(database_url, [moving], "UPDATE balances SET%", 1)
        await one.execute("COMMIT")
        await moving
        await two.execute("COMMIT")
    finally:
        await one.close()
        await two.close()


async def undo(ledger: Ledger, *moves: Move) -> None:
    """Take ``moves`` back, in one transaction."""
    async with ledger.engine.begin() as conn:
        for account, column, delta in moves:
            await conn.execute(
                text(f"UPDATE balances SET {column} = {column} - :d WHERE account_id = :a"),
                {"d": delta, "a": account},
            )


_MOVE = "UPDATE balances SET {0} = {0} + $1 WHERE account_id = $2"


async def place(
    conn: AsyncConnection, line: Line, *, debt: int, pending: int, collateral: dict[int, int]
) -> None:
    """Set a line's balances outright (the database's triggers keep its risk rows; the books no
    longer match the entries): ``debt`` posted and ``pending`` on its credit account, no floor,
    and ``collateral`` (account id -> posted)."""
    await conn.execute(
        text("UPDATE balances SET posted = :p, pending = :h, floor = NULL WHERE account_id = :a"),
        {"p": -debt, "h": pending, "a": line.credit_account_id},
    )
    for account, posted in collateral.items():
        await conn.execute(
            text("UPDATE balances SET posted = :p WHERE account_id = :a"),
            {"p": posted, "a": account},
        )


async def make_desk(ledger: Ledger, **overrides: object) -> Desk:
    tag = uuid.uuid4().hex[:8].upper()
    debt, coll = f"USD{tag}", f"WETH{tag}"
    await ledger.accounts.create_asset(
        code=debt, name="dollar credit", scale=2, kind=AssetKind.FIAT_CREDIT, actor=ADMIN
    )
    await ledger.accounts.create_asset(
        code=coll, name="wrapped ether", scale=9, kind=AssetKind.COLLATERAL, actor=ADMIN
    )
    values: dict[str, object] = {
        "asset": coll, "debt_asset": debt, "initial_bps": 5_000, "margin_call_bps": 6_500,
        "partial_bps": 7_500, "full_bps": 9_000, "target_bps": 6_000, "penalty_bps": 500,
        "min_leftover": usd(100), "haircut_floor_bps": 1_000, "haircut_ceiling_bps": 5_000,
        "buffer": 0, "apr_bps": 1_500,
    } | overrides  # fmt: skip
    draft = risk_params.RiskParameterDraft(**values)  # type: ignore[arg-type]
    draft_id = await risk_params.create_draft(ledger.engine, draft, ADMIN)
    desk = Desk(ledger, CreditLines(ledger), RiskLoop(ledger), debt, coll)
    assert await desk.price(2_000) is Verdict.ACCEPTED
    await risk_params.activate(ledger.engine, draft_id, ADMIN, "test desk")
    await desk.loop.refresh_moved_prices()
    return desk
