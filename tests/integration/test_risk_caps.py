"""Liquidation caps on the real database: the collateral value one tick sells, globally and
per collateral asset; a sale that would pass a cap waits for a later tick (with its margin
call sent now), exactly at the cap it runs."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from core.ledger import Ledger
from core.risk import math as risk
from core.risk.loop import LiquidationCaps, RiskLoop
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
async def test_two_sales_fit_exactly_at_the_cap_and_one_unit_over_the_second_waits(
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
    if over:
        assert report.actions == {"PARTIAL": 1, "NOTIFY": 1} and report.deferred == 1
        assert await events(desk, second.id) == ["NOTIFY"]  # the margin call goes out now
        assert (await desk.lines.get(second.id)).line.notified_at is not None
        assert (await desk.lines.get(second.id)).collateral == COLL
        report = await loop.tick(desk.coll)  # a fresh budget: the waiting sale runs
        assert report.actions == {"PARTIAL": 1} and report.deferred == 0
        assert await events(desk, second.id) == ["NOTIFY", "PARTIAL"]
    else:
        assert report.actions == {"PARTIAL": 2} and report.deferred == 0
        assert await events(desk, second.id) == ["PARTIAL"]
    assert (await desk.lines.get(first.id)).collateral == (
        await desk.lines.get(second.id)
    ).collateral
    assert (await desk.loop.tick(desk.coll)).actions == {}  # both restored to target
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


def test_caps_must_be_positive() -> None:
    for caps in ({"global_cap": 0}, {"asset_cap": -1}, {"per_asset": {"X": 0}}):
        with pytest.raises(ValueError, match="positive"):
            LiquidationCaps(**caps)  # type: ignore[arg-type]
