"""Credit lines holding several collateral assets, on the real database: the limit sums each
asset's haircut value, a withdrawal is judged against the weighted initial LTV, the tick's scan of
those lines returns exactly the lines the model says need a decision, a sale takes the cheaper
asset first, a frozen asset stops every action on the line, and value is conserved."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from core.errors import (
    InsufficientFunds,
    LtvBreach,
    NoRiskParameters,
    PriceFrozen,
    ValidationError,
)
from core.ledger import Ledger
from core.risk import math as risk
from core.risk import triggers
from core.risk.lines import Line, LineState
from core.risk.loop import MULTI_CANDIDATES
from core.types import SystemAccount
from tests.integration.risk_support import (
    ADMIN,
    BTC,
    COLL,
    Desk,
    add_asset,
    make_desk,
    usd,
)

pytestmark = pytest.mark.integration


@pytest.fixture
async def desk(ledger: Ledger) -> Desk:
    return await make_desk(ledger)


@pytest.fixture
async def btc(desk: Desk) -> str:
    return await add_asset(desk)


async def basket(desk: Desk, btc: str, *, eth: int = COLL, wbtc: int = BTC // 10,
                 spend: int = 0) -> Line:  # fmt: skip
    """A line with ``eth`` of its own asset ($2,000 a unit) and ``wbtc`` ($60,000 a unit)."""
    line = await desk.line(eth)
    await desk.fund(line.owner_id, btc, wbtc)
    await desk.lines.deposit(line.id, wbtc, ADMIN, asset=btc)
    if spend:
        await desk.spend(line.id, spend)
    return line


def expected_limit(state: LineState) -> int:
    """limit = min(sum value_i * (1 - H_i) - buffer, sum value_i * initial_i), each term down."""
    haircut = initial = 0
    for h in state.holdings():
        if h.params is None or not h.trusted:
            continue
        value = h.value(state.debt_scale)
        haircut += value * (risk.BPS - h.params.haircut_bps) // risk.BPS
        initial += value * h.params.initial_bps
    assert state.params is not None
    return max(min(haircut - state.params.buffer, initial // risk.BPS), 0)


async def conserved(desk: Desk) -> None:
    assert set((await desk.totals()).values()) == {0}
    assert await desk.ledger.reconcile() == []


def crossed(state: LineState, pick: str) -> bool:
    assert state.params is not None
    position = state.position()
    cap = risk.capacity(position.holdings(state.params.ladder), lambda lad: getattr(lad, pick))
    return risk.crossed_capacity(state.debt, cap)


async def test_a_second_asset_adds_its_own_haircut_value_to_the_limit(desk: Desk, btc: str) -> None:
    line = await desk.line(COLL)
    alone = await desk.lines.get(line.id)
    assert alone.line.credit_limit == expected_limit(alone) == usd(1_000)
    await desk.fund(line.owner_id, btc, BTC // 10)
    await desk.lines.deposit(line.id, BTC // 10, ADMIN, asset=btc)
    state = await desk.lines.get(line.id)
    assert state.line.multi_collateral and [h.asset for h in state.others] == [btc]
    assert state.value == usd(2_000 + 6_000)
    # $2,000 x 50% + $6,000 x 60% = $4,600, under the haircut sum ($1,800 + $4,800 at 10%/20%)
    assert state.line.credit_limit == state.current_limit == expected_limit(state) == usd(4_600)
    await desk.spend(line.id, usd(4_600))
    with pytest.raises(InsufficientFunds):
        await desk.spend(line.id, 1)
    # its trigger row is closed: the tick reads the line by the scan of such lines
    async with desk.ledger.engine.connect() as conn:
        assert await triggers.drift(conn, desk.coll) == []
        assert not (
            await conn.execute(
                text("SELECT open FROM credit_line_triggers WHERE line_id = :l"), {"l": line.id}
            )
        ).scalar_one()
    await conserved(desk)


async def test_an_asset_without_parameters_for_the_debt_is_refused_and_nothing_written(
    desk: Desk, btc: str
) -> None:
    other = await make_desk(desk.ledger)  # its collateral lends another debt asset
    line = await desk.line(COLL)
    await desk.fund(line.owner_id, other.coll, COLL)
    with pytest.raises(NoRiskParameters):
        await desk.lines.deposit(line.id, COLL, ADMIN, asset=other.coll)
    state = await desk.lines.get(line.id)
    assert not state.line.multi_collateral and state.others == ()
    with pytest.raises(ValidationError):
        await desk.lines.withdraw(line.id, 1, ADMIN, asset=btc)  # holds none


async def test_a_withdrawal_is_judged_on_the_weighted_initial_ltv(desk: Desk, btc: str) -> None:
    line = await basket(desk, btc, spend=usd(3_000))
    state = await desk.lines.get(line.id)
    assert state.params is not None
    ladder = state.params.ladder

    def breaches(quantity: int) -> bool:
        left = state.position(without=(btc, quantity))
        cap = risk.capacity(left.holdings(ladder), lambda lad: lad.initial_bps)
        return risk.crossed_capacity(state.debt, cap)

    lo, hi = 0, BTC // 10  # the most wBTC that keeps the line at or under initial
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if not breaches(mid) else (lo, mid)
    assert not breaches(lo) and breaches(lo + 1)
    with pytest.raises(LtvBreach):
        await desk.lines.withdraw(line.id, lo + 1, ADMIN, asset=btc)
    assert (await desk.lines.get(line.id)).others[0].quantity == BTC // 10  # nothing moved
    await desk.lines.withdraw(line.id, lo, ADMIN, asset=btc)
    after = await desk.lines.get(line.id)
    assert after.others[0].quantity == BTC // 10 - lo
    assert after.line.credit_limit == expected_limit(after) >= after.debt
    await conserved(desk)


async def test_the_scan_returns_exactly_the_lines_the_model_would_decide_on(
    desk: Desk, btc: str
) -> None:
    lines = [
        await basket(desk, btc, eth=eth, wbtc=wbtc, spend=usd(spend))
        for eth, wbtc, spend in [
            (COLL, BTC // 10, 4_600), (COLL, BTC // 10, 3_000), (2 * COLL, BTC // 50, 2_500),
            (COLL // 2, BTC // 5, 7_000), (COLL, BTC // 100, 1_300), (3 * COLL, 1, 3_000),
        ]
    ]  # fmt: skip
    await desk.lines.set_stop_loss(lines[1].id, 45_000 * 10**8, ADMIN, asset=btc)
    for eth_usd, btc_usd in [(2_000, 60_000), (1_700, 60_000), (2_000, 44_000), (1_400, 47_000),
                             (900, 30_000), (2_500, 70_000)]:  # fmt: skip
        await desk.price(eth_usd)
        await desk.price(btc_usd, asset=btc)
        async with desk.ledger.engine.connect() as conn:
            found = set((await conn.execute(text(MULTI_CANDIDATES), {"asset": None})).scalars())
        model = set()
        for line in lines:
            state = await desk.lines.get(line.id)
            position = state.position()
            stop = any(
                h.stop_loss is not None and h.quantity > 0 and h.price <= h.stop_loss
                for h in position.others
            )
            if state.trusted and (crossed(state, "margin_call_bps") or stop):
                model.add(line.id)
        assert found & {line.id for line in lines} == model, (eth_usd, btc_usd)


async def test_a_tick_sells_the_cheaper_asset_first_back_to_the_target(
    desk: Desk, btc: str
) -> None:
    line = await basket(desk, btc, spend=usd(4_600))
    # $2,000 + $3,500 of collateral for $4,600: over partial ($4,300), under full ($5,020);
    # the target ($1,200 + $2,275) needs more than all the wBTC (3% penalty), then wETH (5%)
    await desk.price(35_000, asset=btc)
    state = await desk.lines.get(line.id)
    assert crossed(state, "partial_bps") and not crossed(state, "full_bps")
    report = await desk.loop.tick(desk.coll)
    assert report.actions == {"PARTIAL": 1}
    after = await desk.lines.get(line.id)
    assert after.others[0].quantity == 0 and 0 < COLL - after.collateral < COLL // 10
    for asset, sold in ((btc, BTC // 10), (desk.coll, COLL - after.collateral)):
        liquidation = await desk.ledger.accounts.system_account(
            asset, SystemAccount.LIQUIDATION, actor=ADMIN
        )
        assert await desk.balance(liquidation) == sold
    assert not crossed(after, "target_bps")
    assert after.line.credit_limit == expected_limit(after)
    async with desk.ledger.engine.connect() as conn:
        details = (
            await conn.execute(
                text("SELECT details FROM risk_events WHERE line_id = :l"), {"l": line.id}
            )
        ).scalar_one()
    assert [(x["asset"], x["sold"]) for x in details["lots"]] == [(btc, BTC // 10)]
    assert details["sold"] == COLL - after.collateral
    assert (await desk.loop.tick(desk.coll)).actions == {}  # back under margin call
    await conserved(desk)


async def test_a_frozen_further_asset_stops_actions_withdrawals_and_credit(
    desk: Desk, btc: str
) -> None:
    line = await basket(desk, btc, spend=usd(4_600))
    await desk.price(0, asset=btc)  # an answer <= 0 freezes wBTC
    await desk.price(1_000)  # wETH halves: over margin call on any wBTC price
    assert (await desk.loop.tick(desk.coll)).actions == {}
    with pytest.raises(PriceFrozen):
        await desk.lines.withdraw(line.id, 1, ADMIN)
    await desk.loop.refresh_moved_prices()
    state = await desk.lines.get(line.id)
    assert not state.trusted and state.line.credit_limit == expected_limit(state) == usd(500)
    with pytest.raises(PriceFrozen):
        await desk.lines.withdraw(line.id, 1, ADMIN, asset=btc)
    await conserved(desk)


async def test_an_authorization_meets_a_further_asset_past_its_heartbeat(
    desk: Desk, btc: str
) -> None:
    line = await basket(desk, btc)
    async with desk.ledger.engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE risk_assets SET price_at = price_at - interval '2 hours' WHERE asset = :a"
            ),
            {"a": btc},
        )
    with pytest.raises(PriceFrozen) as refused:
        await desk.lines.authorize(
            line.id, 1, ADMIN, expires_at=datetime.now(UTC) + timedelta(hours=1)
        )
    assert refused.value.details["asset"] == btc


async def test_a_price_move_of_a_further_asset_refreshes_the_line(desk: Desk, btc: str) -> None:
    line = await basket(desk, btc)
    await desk.price(30_000, asset=btc)
    state = await desk.lines.get(line.id)
    assert state.line.credit_limit == usd(4_600)  # the stored one: not yet
    assert state.current_limit == expected_limit(state) == usd(1_000 + 1_800)
    await desk.loop.refresh_moved_prices(chunk=1)
    state = await desk.lines.get(line.id)
    assert state.line.credit_limit == state.current_limit == usd(1_000 + 1_800)
    async with desk.ledger.engine.begin() as conn:  # past its heartbeat: no credit at all
        await conn.execute(
            text(
                "UPDATE risk_assets SET price_at = price_at - interval '2 hours' WHERE asset = :a"
            ),
            {"a": btc},
        )
    assert (await desk.lines.get(line.id)).current_limit == 0


async def test_a_full_liquidation_sells_both_assets_and_writes_off_the_rest(
    desk: Desk, btc: str
) -> None:
    line = await basket(desk, btc, spend=usd(4_600))
    await desk.price(500)
    await desk.price(10_000, asset=btc)  # $500 + $1,000 for $4,600
    assert (await desk.loop.tick(desk.coll)).actions == {"FULL": 1}
    state = await desk.lines.get(line.id)
    assert state.collateral == 0 and state.others[0].quantity == 0 and state.debt == 0
    bad_debt = await desk.ledger.accounts.system_account(
        desk.debt, SystemAccount.BAD_DEBT, actor=ADMIN
    )
    paid = (500 * 95 + 1_000 * 97) * 100 // 100  # each sale at price x (1 - its penalty)
    assert -await desk.balance(bad_debt) == usd(4_600) - paid
    await conserved(desk)


async def test_a_staff_full_liquidation_of_a_basket_closes_the_debt(desk: Desk, btc: str) -> None:
    """POST /risk/liquidation's core call with ``full``: the cheaper asset first, then the
    line's own, only as much as the debt needs; the rest stays with the user."""
    line = await basket(desk, btc, spend=usd(4_000))
    kind = await desk.loop.act(line.id, force_full=True, actor=ADMIN, reason="fraud review")
    assert kind is risk.ActionKind.FULL
    state = await desk.lines.get(line.id)
    # $4,000 of debt: 0.1 wBTC pays $5,820 at 3% off, so wBTC alone covers it; wETH untouched
    assert state.debt == 0 and state.collateral == COLL
    sold = BTC // 10 - state.others[0].quantity
    assert 0 < sold < BTC // 10
    px = state.others[0].price_per_minor(state.debt_scale)
    assert px is not None and risk.proceeds_of(sold, px, 300) >= usd(4_000)
    assert risk.proceeds_of(sold - 1, px, 300) < usd(4_000)  # and not a unit more
    async with desk.ledger.engine.connect() as conn:
        reason = (
            await conn.execute(
                text("SELECT details->>'reason' FROM risk_events WHERE line_id = :l"),
                {"l": line.id},
            )
        ).scalar_one()
    assert reason == "fraud review"
    await conserved(desk)
