"""Risk triggers (migration 0020) on the real database: every posting that moves a line keeps
its trigger row in step in the same transaction, two transactions racing on one line leave it
computed from the latest balances, a new parameter version or other price decimals rebase it,
and the indexed selection returns exactly the lines the full-scan predicate returns, over
random positions and prices including prices exactly at each line's trigger."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from core.ledger import Ledger
from core.risk import params as risk_params
from core.risk.lines import Line
from core.risk.loop import CANDIDATES, SCAN_CANDIDATES
from core.risk.repayments import Repayments
from core.risk.triggers import drift
from core.types import AccountKind, OperationType, SystemAccount
from tests.conftest import settings_for
from tests.integration.risk_support import (
    ADMIN,
    COLL,
    Desk,
    make_desk,
    place,
    race,
    undo,
    usd,
)
from tests.support import create_database, drop_database

pytestmark = pytest.mark.integration


@pytest.fixture
async def desk(ledger: Ledger) -> Desk:
    return await make_desk(ledger)


async def scan(desk: Desk) -> list[int]:
    async with desk.ledger.engine.connect() as conn:
        return [
            int(i)
            for i in (await conn.execute(text(SCAN_CANDIDATES), {"asset": desk.coll})).scalars()
        ]


async def indexed(desk: Desk) -> list[int]:
    """The index range read alone (no fallback), at the asset's current price."""
    async with desk.ledger.engine.connect() as conn:
        price = (
            await conn.execute(
                text("SELECT price_answer FROM risk_assets WHERE asset = :a"), {"a": desk.coll}
            )
        ).scalar_one()
        rows = await conn.execute(text(CANDIDATES), {"asset": desk.coll, "price": price})
        return sorted(int(i) for i in rows.scalars())


async def in_step(desk: Desk) -> None:
    """Every trigger row matches its line now, and the loop selects what the scan selects."""
    _, evaluated = await desk.loop.evaluate(desk.coll)
    async with desk.ledger.engine.connect() as conn:
        assert await drift(conn, desk.coll) == []
    assert evaluated == await scan(desk) == await indexed(desk)


async def stored(desk: Desk, line: Line) -> Any:
    async with desk.ledger.engine.connect() as conn:
        return (
            await conn.execute(
                text("SELECT * FROM credit_line_triggers WHERE line_id = :l"), {"l": line.id}
            )
        ).one()


async def test_every_posting_on_a_line_moves_its_trigger(desk: Desk) -> None:
    line = await desk.line(2 * COLL)  # deposit
    await in_step(desk)
    assert (await stored(desk, line)).collateral == 2 * COLL
    hold = await desk.lines.authorize(
        line.id, usd(900), ADMIN, expires_at=datetime.now(UTC) + timedelta(hours=1)
    )
    assert (await stored(desk, line)).exposure == usd(900)  # pending counts as exposure
    await in_step(desk)
    await desk.ledger.capture(hold.hold_id, usd(800))  # partial capture, the rest released
    assert (await stored(desk, line)).exposure == usd(800)
    await in_step(desk)
    await desk.lines.accrue_interest(date(2026, 1, 1), ADMIN)
    await in_step(desk)
    repayments = Repayments(desk.ledger)
    repayment = await repayments.initiate(line.id, usd(100), "CARD", ADMIN)
    await repayments.settle(
        repayment.id, f"trigger-evt-{uuid.uuid4()}", succeeded=True, actor=ADMIN
    )
    await in_step(desk)
    await desk.lines.withdraw(line.id, COLL // 2, ADMIN)
    await in_step(desk)
    await desk.lines.set_stop_loss(line.id, 1_000 * 10**8, ADMIN)
    assert (await stored(desk, line)).trigger >= 1_000 * 10**8
    await in_step(desk)
    await desk.lines.set_stop_loss(line.id, None, ADMIN)
    await desk.lines.credit_yield(line.id, usd(30), ADMIN, f"trigger-yield-{uuid.uuid4()}")
    held = await desk.lines.authorize(
        line.id, usd(50), ADMIN, expires_at=datetime.now(UTC) + timedelta(hours=1)
    )
    await desk.ledger.void(held.hold_id)
    await in_step(desk)
    acted = []
    for dollars in (700, 700, 600, 400):  # over margin call, then past partial and full
        await desk.price(dollars)
        acted += list((await desk.loop.tick(desk.coll)).actions)
        await in_step(desk)
    assert acted[:2] == ["CUSHION", "NOTIFY"] and acted[-1] == "FULL"
    assert (await desk.lines.get(line.id)).debt == 0
    assert (await stored(desk, line)).trigger == Decimal("-Infinity")


async def test_a_new_parameter_version_and_other_decimals_rebase_the_triggers(
    desk: Desk,
) -> None:
    line = await desk.line(COLL, spend=usd(1_000))  # LTV 50%
    await desk.price(1_400)  # LTV 71.4%: over the 65% margin call
    assert (await desk.loop.evaluate(desk.coll))[1] == [line.id]
    draft = risk_params.RiskParameterDraft(
        asset=desk.coll, debt_asset=desk.debt, initial_bps=5_000, margin_call_bps=7_200,
        partial_bps=7_500, full_bps=9_000, target_bps=6_000, penalty_bps=500,
        min_leftover=usd(100), buffer=0,
    )  # fmt: skip
    await risk_params.activate(
        desk.ledger.engine, await risk_params.create_draft(desk.ledger.engine, draft, ADMIN),
        ADMIN, "margin call at 72%",
    )  # fmt: skip
    assert await scan(desk) == []  # 71.4% is under the new margin call
    assert (await desk.loop.evaluate(desk.coll))[1] == []
    await in_step(desk)
    # the same price reported with two more decimals
    async with desk.ledger.engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE risk_assets SET price_answer = price_answer * 100, "
                "price_decimals = price_decimals + 2 WHERE asset = :a"
            ),
            {"a": desk.coll},
        )
    await in_step(desk)
    async with desk.ledger.engine.begin() as conn:
        await conn.execute(
            text("UPDATE risk_assets SET price_answer = 1388 * 10^10 WHERE asset = :a"),
            {"a": desk.coll},
        )  # LTV 72.05%
    await in_step(desk)
    assert await scan(desk) == [line.id]


async def test_racing_postings_on_one_line_leave_its_trigger_current(
    desk: Desk, database_url: str
) -> None:
    """The second transaction waits for the first's trigger row, then reads the balances
    anew: its row holds both changes (computed from the balances it read with the lock, it
    would miss the first one)."""
    line = await desk.line(COLL)
    spend = (line.credit_account_id, "pending", 70_000)
    withdrawal = (line.collateral_account_id, "posted", -400_000_000)
    await race(database_url, spend, withdrawal)
    row = await stored(desk, line)
    assert (row.exposure, row.collateral) == (70_000, COLL - 400_000_000)
    await in_step(desk)
    await undo(desk.ledger, spend, withdrawal)  # back to what the entries say
    await in_step(desk)
    assert await desk.ledger.reconcile() == []


async def test_concurrent_postings_across_lines_keep_every_trigger_current(
    desk: Desk, database_url: str
) -> None:
    """Card spends (hold, capture or void) and collateral moves on a few lines from two
    ledgers at once (two batchers: batches of several lines' accounts commit concurrently,
    their trigger rows locked in line order); afterwards no row drifts and the books
    reconcile."""
    second = Ledger.connect(settings_for(database_url, pool_size=4))
    try:
        lines = [await desk.line(4 * COLL) for _ in range(4)]
        settlement = await desk.ledger.accounts.system_account(
            desk.debt, SystemAccount.CARD_SETTLEMENT, actor=ADMIN
        )
        wallets = {
            line.id: (await desk.ledger.accounts.ensure_wallet(
                line.owner_id, desk.coll, actor=ADMIN))[AccountKind.AVAILABLE]
            for line in lines
        }  # fmt: skip
        issuance = await desk.ledger.accounts.system_account(
            desk.coll, SystemAccount.ISSUANCE, actor=ADMIN
        )
        for line in lines:
            await desk.ledger.transfer(
                source=issuance, destination=wallets[line.id], asset=desk.coll,
                amount=4 * COLL, type_=OperationType.MINT,
            )  # fmt: skip
        rng = random.Random(15)

        async def step(ledger: Ledger, line: Line, kind: int) -> None:
            if kind == 0:
                hold = await ledger.hold(
                    source=line.credit_account_id, destination=settlement, asset=desk.debt,
                    amount=rng.randint(1, 500), ttl=timedelta(hours=1),
                )  # fmt: skip
                if rng.random() < 0.7:
                    await ledger.capture(hold.hold_id)
                else:
                    await ledger.void(hold.hold_id)
            else:
                source, destination = line.collateral_account_id, wallets[line.id]
                if kind == 1:
                    source, destination = destination, source
                await ledger.transfer(
                    source=source, destination=destination, asset=desk.coll,
                    amount=rng.randint(1, COLL // 100),
                )  # fmt: skip

        async def worker(ledger: Ledger, n: int) -> None:
            for _ in range(n):
                await step(ledger, rng.choice(lines), rng.randrange(3))

        await asyncio.gather(
            *(worker(ledger, 25) for ledger in (desk.ledger, second) for _ in range(8))
        )
        await in_step(desk)
        assert await desk.ledger.reconcile() == []
    finally:
        await second.close()


# --------------------------------------------------------------------------------------
# The indexed selection against the full scan, over random positions and prices
# --------------------------------------------------------------------------------------

LINES = 6
position = st.tuples(
    st.one_of(st.just(0), st.integers(1, 4 * COLL)),  # collateral
    st.integers(-usd(200), usd(4_000)),  # posted debt (negative: in credit)
    st.one_of(st.just(0), st.integers(1, usd(600))),  # pending
    st.one_of(st.none(), st.integers(1, 4_000 * 10**8)),  # stop-loss answer
)
#: a random price, or one unit around a line's trigger (or stop-loss)
price_choice = st.one_of(
    st.tuples(st.just("random"), st.integers(1, 6_000 * 10**8), st.just(0)),
    st.tuples(st.just("trigger"), st.integers(0, LINES - 1), st.integers(-1, 1)),
    st.tuples(st.just("stop"), st.integers(0, LINES - 1), st.integers(-1, 1)),
)


async def _apply(desk: Desk, lines: list[Line], positions: list[Any], choice: Any) -> int:
    async with desk.ledger.engine.begin() as conn:
        for line, (collateral, debt, pending, stop) in zip(lines, positions, strict=True):
            own = {line.collateral_account_id: collateral}
            await place(conn, line, debt=debt, pending=pending, collateral=own)
            await conn.execute(
                text("UPDATE credit_lines SET stop_loss_answer = :s WHERE id = :l"),
                {"s": stop, "l": line.id},
            )
        kind, value, delta = choice
        price = value
        if kind != "random":
            line = lines[value]
            column = "trigger" if kind == "trigger" else "stop_loss_answer"
            at = (
                await conn.execute(
                    text(f"SELECT {column} FROM credit_line_triggers WHERE line_id = :l"),
                    {"l": line.id},
                )
            ).scalar()
            finite = at is not None and at.is_finite() and 0 < at + delta < 10**70
            price = int(at) + delta if finite else 2_000 * 10**8
        await conn.execute(
            text("UPDATE risk_assets SET price_answer = :p WHERE asset = :a"),
            {"p": price, "a": desk.coll},
        )
    return price


def test_the_indexed_selection_is_the_full_scan() -> None:
    loop = asyncio.new_event_loop()
    url = loop.run_until_complete(create_database())
    ledger = Ledger.connect(settings_for(url))
    try:
        desk = loop.run_until_complete(make_desk(ledger))
        lines = [loop.run_until_complete(desk.line(0)) for _ in range(LINES)]
        hits = {"some": 0, "none": 0}

        @settings(
            max_examples=120, deadline=None, suppress_health_check=list(HealthCheck),
            database=None,
        )  # fmt: skip
        @given(st.lists(position, min_size=LINES, max_size=LINES), price_choice)
        def check(positions: list[Any], choice: Any) -> None:
            loop.run_until_complete(_apply(desk, lines, positions, choice))
            full = loop.run_until_complete(scan(desk))
            assert loop.run_until_complete(indexed(desk)) == full
            assert loop.run_until_complete(desk.loop.evaluate(desk.coll))[1] == full
            hits["some" if full else "none"] += 1

        check()
        assert hits["some"] and hits["none"]  # both outcomes were exercised
    finally:
        loop.run_until_complete(ledger.close())
        loop.run_until_complete(drop_database(url))
        loop.close()
