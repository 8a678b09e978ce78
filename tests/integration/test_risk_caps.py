"""Liquidation caps on the real database: the collateral value one tick sells, globally and
per collateral asset. Exactly at the cap a sale runs whole; past it, it is cut to the room
left (a partial lot, rounded down) when that lot is worth at least the dust minimum and
leaves no dust position, else it waits for a later tick (with its margin call sent now)."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text

from core.ledger import Ledger
from core.risk import math as risk
from core.risk.loop import RISK_TICK_LOCK_KEY, LiquidationCaps, RiskLoop
from tests.integration.risk_support import COLL, Desk, make_desk, usd

pytestmark = pytest.mark.integration


@pytest.fixture
async def desk(ledger: Ledger) -> Desk:
    return await make_desk(ledger)


async def sale_value(desk: Desk, line_id: int) -> int:
    """The market value (debt minor units) of what the ladder would sell of the line now."""
    state = await desk.lines.get(line_id)
    assert state.params is not None and state.price_per_minor is not None
    action = risk.decide(state.position(), state.params.ladder)
    assert action.kind is risk.ActionKind.PARTIAL
    return risk.value_of(action.sold, state.price_per_minor)


async def events(desk: Desk, line_id: int) -> list[str]:
    async with desk.ledger.engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT kind FROM risk_events WHERE line_id = :l ORDER BY id"), {"l": line_id}
        )
        return [r.kind for r in rows]


async def conserved(desk: Desk) -> None:
    assert set((await desk.totals()).values()) == {0}
    assert await desk.ledger.reconcile() == []


@pytest.mark.parametrize("scope", ["global", "asset"])
@pytest.mark.parametrize("over", [0, 1])
async def test_two_sales_fit_exactly_at_the_cap_and_one_unit_over_the_second_is_cut(
    desk: Desk, scope: str, over: int
) -> None:
    first = await desk.line(COLL, spend=usd(1_000))
    second = await desk.line(COLL, spend=usd(1_000))
    await desk.price(1_300)  # both past partial liquidation (LTV 76.9%), the same sale each
    value = await sale_value(desk, first.id)
    assert value > 0 and await sale_value(desk, second.id) == value
    cap = 2 * value - over
    caps = (
        LiquidationCaps(global_cap=cap, asset_cap=10 * value)
        if scope == "global"
        else LiquidationCaps(global_cap=10 * value, per_asset={desk.coll: cap})
    )
    loop = RiskLoop(desk.ledger, caps=caps)

    report = await loop.tick(desk.coll)
    assert report.actions == {"PARTIAL": 2} and report.deferred == 0
    assert report.cut == over
    assert await events(desk, second.id) == ["PARTIAL"]
    sold_first = COLL - (await desk.lines.get(first.id)).collateral
    sold_second = COLL - (await desk.lines.get(second.id)).collateral
    assert sold_second <= sold_first
    price = (await desk.lines.get(first.id)).price_per_minor
    assert price is not None
    # one unit short: the lot is the most collateral worth at most the room (value - 1)
    assert risk.value_of(sold_second, price) == value - over
    assert over or sold_second == sold_first
    if over:
        assert risk.value_of(sold_second + 1, price) > value - 1
    assert (await desk.loop.tick(desk.coll)).actions == {}  # both back under margin call
    await conserved(desk)


async def test_capped_lines_are_liquidated_on_later_ticks_with_one_margin_call_each(
    desk: Desk,
) -> None:
    lines = [await desk.line(COLL, spend=usd(1_000)) for _ in range(3)]
    await desk.price(1_300)
    value = await sale_value(desk, lines[0].id)
    loop = RiskLoop(desk.ledger, caps=LiquidationCaps(global_cap=value, asset_cap=value))

    first = await loop.tick(desk.coll)
    assert first.actions == {"PARTIAL": 1, "NOTIFY": 2} and first.deferred == 2
    second = await loop.tick(desk.coll)  # the last line waits again, already notified
    assert second.actions == {"PARTIAL": 1} and second.deferred == 1
    third = await loop.tick(desk.coll)
    assert third.actions == {"PARTIAL": 1} and third.deferred == 0
    assert [await events(desk, line.id) for line in lines] == [
        ["PARTIAL"], ["NOTIFY", "PARTIAL"], ["NOTIFY", "PARTIAL"],
    ]  # fmt: skip
    await conserved(desk)


async def test_a_sale_larger_than_the_cap_runs_alone_in_its_tick(desk: Desk) -> None:
    big = await desk.line(COLL, spend=usd(1_000))
    small = await desk.line(COLL, spend=usd(1_000))
    await desk.price(1_300)
    loop = RiskLoop(desk.ledger, caps=LiquidationCaps(global_cap=1, asset_cap=1))
    assert (await loop.tick(desk.coll)).actions == {"PARTIAL": 1, "NOTIFY": 1}
    assert await events(desk, big.id) == ["PARTIAL"]
    assert (await loop.tick(desk.coll)).actions == {"PARTIAL": 1}
    assert await events(desk, small.id) == ["NOTIFY", "PARTIAL"]
    await conserved(desk)


async def details(desk: Desk, line_id: int) -> list[dict[str, object]]:
    async with desk.ledger.engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT details::text FROM risk_events WHERE line_id = :l ORDER BY id"),
            {"l": line_id},
        )
        return [json.loads(r[0]) for r in rows]


@pytest.mark.parametrize("short", [1, 0])
async def test_a_lot_under_the_dust_minimum_waits_and_one_at_it_is_sold(
    desk: Desk, short: int
) -> None:
    first = await desk.line(COLL, spend=usd(1_000))
    second = await desk.line(COLL, spend=usd(1_000))
    await desk.price(1_300)
    value = await sale_value(desk, first.id)
    dust = usd(100)  # the desk's min_leftover
    loop = RiskLoop(desk.ledger, caps=LiquidationCaps(global_cap=value + dust - short))
    report = await loop.tick(desk.coll)
    if short:
        assert report.actions == {"PARTIAL": 1, "NOTIFY": 1}
        assert (report.deferred, report.cut) == (1, 0)
        assert (await desk.lines.get(second.id)).collateral == COLL
    else:
        assert report.actions == {"PARTIAL": 2} and (report.deferred, report.cut) == (0, 1)
        [event] = await details(desk, second.id)
        price = (await desk.lines.get(second.id)).price_per_minor
        assert price is not None
        assert risk.value_of(int(str(event["sold"])), price) == dust
        assert int(str(event["capped_from"])) > int(str(event["sold"]))
    await conserved(desk)


@pytest.mark.parametrize(("room", "cut"), [(usd(1_000), False), (usd(900), True)])
async def test_a_lot_that_would_leave_a_dust_position_waits(
    desk: Desk, room: int, cut: bool
) -> None:
    """Two lines past full liquidation (LTV 95.2%) selling all their collateral; the second
    gets ``room``: $1,000 of its $1,050 would leave $50 of collateral (under the $100 minimum
    leftover: it waits), $900 leaves $150 of collateral and $145 of debt (the lot is sold)."""
    first = await desk.line(COLL, spend=usd(1_000))
    second = await desk.line(COLL, spend=usd(1_000))
    await desk.price(1_050)
    state = await desk.lines.get(first.id)
    assert state.value == usd(1_050)
    loop = RiskLoop(desk.ledger, caps=LiquidationCaps(global_cap=state.value + room))
    report = await loop.tick(desk.coll)
    after = await desk.lines.get(second.id)
    if cut:
        assert report.actions == {"FULL": 1 + cut} and report.cut == 1
        assert after.debt == usd(145) and usd(150) - 1 <= after.value <= usd(150)
        assert await desk.balance(after.line.credit_account_id) == -usd(145)  # no bad debt yet
    else:
        assert report.actions == {"FULL": 1, "NOTIFY": 1} and report.deferred == 1
        assert after.collateral == COLL
    await conserved(desk)


async def test_ticks_cutting_lots_terminate_with_value_conserved(desk: Desk) -> None:
    partial = [await desk.line(COLL, spend=usd(900)) for _ in range(3)]
    full = [await desk.line(COLL, spend=usd(1_000)) for _ in range(2)]
    await desk.price(1_050)  # LTV 85.7% (partial) and 95.2% (full)
    loop = RiskLoop(desk.ledger, caps=LiquidationCaps(global_cap=usd(1_000), asset_cap=usd(1_000)))
    cuts = 0
    for _ in range(40):
        report = await loop.tick(desk.coll)
        cuts += report.cut
        if not set(report.actions) & {"PARTIAL", "FULL"} and not report.deferred:
            break
    else:
        pytest.fail("the capped ticks did not come to rest")
    assert cuts > 0
    for line in partial + full:
        state = await desk.lines.get(line.id)
        assert state.params is not None and state.price_per_minor is not None
        kind = risk.decide(state.position(), state.params.ladder).kind
        assert kind in {risk.ActionKind.NONE, risk.ActionKind.NOTIFY}, (line.id, kind)
    for line in full:  # sold out: the rest is bad debt, the line owes nothing
        state = await desk.lines.get(line.id)
        assert (state.collateral, state.debt) == (0, 0)
    await conserved(desk)


def test_caps_must_be_positive() -> None:
    for caps in ({"global_cap": 0}, {"asset_cap": -1}, {"per_asset": {"X": 0}}):
        with pytest.raises(ValueError, match="positive"):
            LiquidationCaps(**caps)  # type: ignore[arg-type]


async def test_one_tick_at_a_time_so_the_caps_bound_every_worker(desk: Desk) -> None:
    """A tick that finds another one running (its session lock held, as by another worker's
    process) does nothing and says so; once the lock is free it ticks."""
    line = await desk.line(COLL, spend=usd(1_000))
    await desk.price(1_300)  # past partial liquidation
    async with desk.ledger.engine.connect() as plain:
        other = await plain.execution_options(isolation_level="AUTOCOMMIT")
        await other.execute(text("SELECT pg_advisory_lock(:k)"), {"k": RISK_TICK_LOCK_KEY})
        try:
            report = await desk.loop.tick(desk.coll)
        finally:
            await other.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": RISK_TICK_LOCK_KEY})
    assert report.skipped and report.actions == {} and report.evaluated == 0
    assert await events(desk, line.id) == []
    report = await desk.loop.tick(desk.coll)
    assert not report.skipped and report.actions == {"PARTIAL": 1}
    await conserved(desk)
