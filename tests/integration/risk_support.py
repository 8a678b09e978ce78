"""A credit desk per test: a private fiat asset, a private collateral asset with ACTIVE risk
parameters and a price, and helpers to open funded lines and push prices."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from core.ledger import Ledger
from core.risk import params as risk_params
from core.risk.lines import CreditLines, Line
from core.risk.loop import RiskLoop
from core.risk.prices import PriceRound, Verdict, record_round
from core.types import AccountKind, Actor, AssetKind, OperationType, Role, SystemAccount

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

    async def price(self, dollars: int | float, *, source: str = "push",
                    at: datetime | None = None, round_id: int | None = None) -> Verdict:  # fmt: skip
        self.round_id += 1
        answer = round(dollars * 10**DECIMALS)
        return await record_round(
            self.ledger.engine,
            PriceRound(self.coll, source, round_id if round_id is not None else self.round_id,
                       answer, DECIMALS, at or datetime.now(UTC)),
            ADMIN,
        )  # fmt: skip

    async def line(self, collateral: int, *, spend: int = 0) -> Line:
        """A new user with ``collateral`` deposited into a new line and ``spend`` drawn (a card
        authorization captured)."""
        owner = await self.ledger.accounts.create_user(email=None, actor=ADMIN)
        wallet = await self.ledger.accounts.ensure_wallet(owner, self.coll, actor=ADMIN)
        issuance = await self.ledger.accounts.system_account(
            self.coll, SystemAccount.ISSUANCE, actor=ADMIN
        )
        if collateral:
            await self.ledger.transfer(
                source=issuance, destination=wallet[AccountKind.AVAILABLE], asset=self.coll,
                amount=collateral, type_=OperationType.MINT,
            )  # fmt: skip
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
                {"a": [self.debt, self.coll]},
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
