"""Positions holding several collateral assets (core.risk.math, Aave v3's weighted thresholds):
a threshold is crossed exactly when ``debt * 10,000 > sum value_i * threshold_i``; a sale takes
the assets in sale order (lowest penalty first), each only as far as the goal needs; caps cut a
multi-asset sale lot by lot; value is conserved along random price paths of both assets."""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.risk.math import (
    BPS,
    ActionKind,
    Holding,
    Ladder,
    Position,
    Price,
    capacity,
    capped_sale,
    crossed_capacity,
    decide,
    lot_values,
    proceeds_of,
    sale_order,
    value_of,
)

pytestmark = pytest.mark.unit

#: the line's own asset (wETH, 18 decimals) and a second one (wBTC, 8 decimals)
ETH_LADDER = Ladder(
    initial_bps=5_000, margin_call_bps=6_500, partial_bps=7_500, full_bps=9_000,
    target_bps=6_000, penalty_bps=500, min_leftover=10_000,
)  # fmt: skip
BTC_LADDER = Ladder(
    initial_bps=6_000, margin_call_bps=7_000, partial_bps=8_000, full_bps=9_200,
    target_bps=6_500, penalty_bps=300, min_leftover=10_000,
)  # fmt: skip
ETH, BTC = 10**18, 10**8


def eth_px(dollars: int) -> Fraction:
    return Price(dollars * 10**8, 8).per_minor(18, 2)


def btc_px(dollars: int) -> Fraction:
    return Price(dollars * 10**8, 8).per_minor(8, 2)


def basket(
    debt: int, eth: int = ETH, btc: int = BTC // 10, *, eth_usd: int = 2_000,
    btc_usd: int = 60_000, **kw: object,
) -> Position:  # fmt: skip
    """$2,000 of wETH (the line's own) and $6,000 of wBTC by default."""
    other = Holding("wBTC", btc, btc_px(btc_usd), BTC_LADDER)
    return Position(debt, eth, eth_px(eth_usd), asset="wETH", others=(other,), **kw)  # type: ignore[arg-type]


def weighted(p: Position, pick: str) -> int:
    return capacity(p.holdings(ETH_LADDER), lambda lad: getattr(lad, pick))


@pytest.mark.parametrize(
    ("pick", "kind_over"),
    [("margin_call_bps", ActionKind.NOTIFY), ("partial_bps", ActionKind.PARTIAL),
     ("full_bps", ActionKind.FULL)],
)  # fmt: skip
def test_each_weighted_threshold_exactly_at_and_one_cent_over(
    pick: str, kind_over: ActionKind
) -> None:
    probe = basket(0)
    cap = weighted(probe, pick)
    assert cap % BPS == 0  # the default basket's sums are whole cents at every threshold
    at = cap // BPS
    # $2,000 x 65% + $6,000 x 70% = $5,500 at margin call: neither asset's own threshold
    if pick == "margin_call_bps":
        assert at == 550_000
    below = decide(basket(at), ETH_LADDER)
    over = decide(basket(at + 1), ETH_LADDER)
    assert not crossed_capacity(at, cap) and crossed_capacity(at + 1, cap)
    assert over.kind is kind_over
    assert below.kind is not kind_over


def test_a_partial_sells_the_cheaper_asset_first_and_only_as_much_as_needed() -> None:
    # weighted partial threshold: $2,000 x 75% + $6,000 x 80% = $6,300; no close factor here
    p = basket(630_001)
    ladder = replace(ETH_LADDER, close_factor_bps=BPS)
    holdings = p.holdings(ladder)
    assert sale_order(holdings) == [1, 0]  # wBTC's 3% penalty before wETH's 5%
    action = decide(p, ladder)
    assert action.kind is ActionKind.PARTIAL
    assert action.sold == 0 and len(action.lots) == 1 and action.lots[0].asset == "wBTC"
    sold = action.lots[0].quantity

    def left(q: int) -> tuple[int, tuple[Holding, ...]]:
        debt = p.debt - min(proceeds_of(q, holdings[1].price, BTC_LADDER.penalty_bps), p.debt)
        return debt, (holdings[0], replace(holdings[1], quantity=holdings[1].quantity - q))

    debt, rest = left(sold)
    assert not crossed_capacity(debt, capacity(rest, lambda lad: lad.target_bps))
    debt, rest = left(sold - 1)  # one unit fewer does not restore the target
    assert crossed_capacity(debt, capacity(rest, lambda lad: lad.target_bps))
    assert action.proceeds == action.lots[0].proceeds == action.repaid + action.surplus
    # the close factor (50% while HF > 0.95 and both sides >= $2,000) bounds the same sale
    capped = decide(p, ETH_LADDER)
    assert capped.kind is ActionKind.PARTIAL and capped.repaid <= p.debt // 2
    assert capped.lots[0].quantity < sold


def test_a_partial_sells_out_the_first_asset_before_taking_the_next() -> None:
    # little wBTC ($600), much wETH ($4,000): selling all the wBTC cannot restore the target
    p = basket(0, eth=2 * ETH, btc=BTC // 100)
    partial_at = weighted(p, "partial_bps") // BPS
    action = decide(replace(p, debt=partial_at + 1), ETH_LADDER)
    assert action.kind is ActionKind.PARTIAL
    assert [lot.asset for lot in action.lots] == ["wBTC"]
    assert action.lots[0].quantity == BTC // 100 and 0 < action.sold < 2 * ETH


def test_a_stop_loss_sells_only_the_asset_at_its_stop() -> None:
    p = basket(100_000)
    eth_stop = replace(p, stop_loss=eth_px(2_000))
    action = decide(eth_stop, ETH_LADDER)
    assert action.kind is ActionKind.STOP_LOSS and action.sold == ETH and not action.lots
    btc = replace(p.others[0], stop_loss=btc_px(60_000))
    action = decide(replace(p, others=(btc,)), ETH_LADDER)
    assert action.kind is ActionKind.STOP_LOSS and action.sold == 0
    assert action.lots[0].quantity == BTC // 10 and action.shortfall == 0


def test_no_collateral_value_left_closes_everything_with_a_shortfall() -> None:
    p = basket(900_000, eth_usd=1_000, btc_usd=10_000)  # $1,000 + $1,000 against $9,000
    action = decide(p, ETH_LADDER)
    assert action.kind is ActionKind.FULL
    assert action.sold == ETH and action.lots[0].quantity == BTC // 10
    assert action.repaid + action.shortfall == p.debt and action.shortfall > 0


def test_repeated_partials_on_a_basket_terminate() -> None:
    ladder = replace(ETH_LADDER, close_factor_bps=100, min_leftover=0, close_factor_min=0)
    p = basket(0, eth=5 * ETH, btc=BTC)
    p = replace(p, debt=weighted(p, "partial_bps") // BPS + 50_000)
    for _ in range(2_000):
        action = decide(p, ladder)
        if action.kind in {ActionKind.NONE, ActionKind.NOTIFY}:
            break
        assert action.sells
        btc_sold = sum(lot.quantity for lot in action.lots)
        others = (replace(p.others[0], quantity=p.others[0].quantity - btc_sold),)
        p = replace(p, debt=p.debt - action.repaid, collateral=p.collateral - action.sold,
                    others=others, notified=True)  # fmt: skip
    else:  # pragma: no cover - the assertion is the point
        pytest.fail("partials did not terminate")
    assert not crossed_capacity(p.debt, weighted(p, "partial_bps"))


def test_a_capped_basket_sale_respects_every_room() -> None:
    p = basket(0, eth=3 * ETH, btc=BTC // 10)
    p = replace(p, debt=weighted(p, "full_bps") // BPS + 1)  # full: both assets sold
    action = decide(p, ETH_LADDER)
    assert action.kind is ActionKind.FULL and action.sold > 0 and action.lots
    values = lot_values(p, ETH_LADDER, action)
    assert capped_sale(p, ETH_LADDER, action, None, {}) is action
    whole = sum(values.values())
    assert capped_sale(p, ETH_LADDER, action, whole, {"wBTC": values["wBTC"]}) is action
    # a cent short leaves a dust position (under the $100 minimum): it waits
    assert capped_sale(p, ETH_LADDER, action, whole - 1, {}) is None
    # the global room $200 short: wBTC (first in sale order) whole, wETH cut to what fits
    lot = capped_sale(p, ETH_LADDER, action, whole - 20_000, {})
    assert lot is not None and lot.lots == action.lots and lot.sold < action.sold
    cut = lot_values(p, ETH_LADDER, lot)
    assert sum(cut.values()) <= whole - 20_000 and cut["wBTC"] == values["wBTC"]
    assert value_of(lot.sold + 1, p.price) + values["wBTC"] > whole - 20_000
    # wBTC's own room short: it is cut and wETH waits for a later lot
    lot = capped_sale(p, ETH_LADDER, action, None, {"wBTC": values["wBTC"] - 20_000})
    assert lot is not None and lot.sold == 0
    assert lot_values(p, ETH_LADDER, lot)["wBTC"] <= values["wBTC"] - 20_000
    assert capped_sale(p, ETH_LADDER, action, -1, {}) is None


@st.composite
def _paths(draw: st.DrawFn) -> tuple[list[tuple[int, int, int, int]], list[tuple[int, int]]]:
    positions = [
        (draw(st.integers(0, 2_000_000)), draw(st.integers(0, 5 * ETH)),
         draw(st.integers(0, BTC)), draw(st.integers(0, 50_000)))
        for _ in range(draw(st.integers(1, 6)))
    ]  # fmt: skip
    prices = draw(
        st.lists(st.tuples(st.integers(1, 5_000), st.integers(1, 100_000)), min_size=1,
                 max_size=12)
    )  # fmt: skip
    return positions, prices


@settings(max_examples=150, deadline=None)
@given(_paths())
def test_value_is_conserved_over_random_price_paths_of_two_assets(
    case: tuple[list[tuple[int, int, int, int]], list[tuple[int, int]]],
) -> None:
    positions, prices = case
    for eth_usd, btc_usd in prices:
        nxt = []
        for debt, eth, btc, cushion in positions:
            p = basket(debt, eth, btc, eth_usd=eth_usd, btc_usd=btc_usd, cushion=cushion)
            a = decide(p, ETH_LADDER)
            btc_sold = sum(lot.quantity for lot in a.lots)
            assert 0 <= a.sold <= eth and 0 <= btc_sold <= btc
            if a.kind is not ActionKind.CUSHION:
                assert a.repaid + a.surplus == a.proceeds
                own = proceeds_of(a.sold, p.price, ETH_LADDER.penalty_bps)
                assert own + sum(lot.proceeds for lot in a.lots) <= a.proceeds
                exact = (
                    a.sold * p.price * (BPS - ETH_LADDER.penalty_bps)
                    + btc_sold * p.others[0].price * (BPS - BTC_LADDER.penalty_bps)
                ) / BPS
                assert 0 <= exact - a.proceeds < 1  # under one cent, however many assets
            assert a.shortfall == 0 or (a.sold == eth and btc_sold == btc)
            new_debt = debt - a.repaid - a.shortfall
            new_cushion = cushion - (a.repaid if a.kind is ActionKind.CUSHION else 0)
            assert new_debt >= 0 and new_cushion >= 0
            left = basket(new_debt, eth - a.sold, btc - btc_sold, eth_usd=eth_usd,
                          btc_usd=btc_usd)  # fmt: skip
            if a.kind is ActionKind.PARTIAL:
                assert not crossed_capacity(new_debt, weighted(left, "full_bps"))
            if a.kind is ActionKind.FULL:
                assert new_debt == 0
            nxt.append((new_debt, eth - a.sold, btc - btc_sold, new_cushion))
        positions = nxt


def test_one_asset_is_the_single_asset_model() -> None:
    """A basket with a second holding of nothing decides as the line alone does."""
    for debt in (0, 120_000, 140_000, 160_000, 185_000, 250_000):
        alone = Position(debt, ETH, eth_px(2_000), asset="wETH")
        empty = Holding("wBTC", 0, btc_px(60_000), BTC_LADDER)
        assert decide(replace(alone, others=(empty,)), ETH_LADDER) == decide(alone, ETH_LADDER)
    assert value_of(ETH, eth_px(2_000)) == 200_000


def test_the_worked_example_of_the_readme() -> None:
    """1 wETH (9 decimals) at $2,000 and 0.1 wBTC at $60,000, $4,600 spent; wBTC falls to
    $35,000: all the wBTC, then a sliver of wETH, back to the 60% target."""
    eth = Price(2_000 * 10**8, 8).per_minor(9, 2)
    btc = Holding("wBTC", BTC // 10, Price(60_000 * 10**8, 8).per_minor(8, 2), BTC_LADDER)
    p = Position(460_000, 10**9, eth, asset="wETH", others=(btc,))
    holdings = p.holdings(ETH_LADDER)
    assert p.value() == 800_000
    assert capacity(holdings, lambda lad: lad.initial_bps) // BPS == 460_000  # the limit
    assert capacity(holdings, lambda lad: lad.margin_call_bps) // BPS == 550_000  # 68.75%
    p = replace(p, others=(replace(btc, price=Price(35_000 * 10**8, 8).per_minor(8, 2)),))
    holdings = p.holdings(ETH_LADDER)
    assert capacity(holdings, lambda lad: lad.partial_bps) // BPS == 430_000
    assert capacity(holdings, lambda lad: lad.full_bps) // BPS == 502_000
    action = decide(p, ETH_LADDER)
    assert action.kind is ActionKind.PARTIAL
    assert [(lot.asset, lot.quantity, lot.proceeds) for lot in action.lots] == [
        ("wBTC", BTC // 10, 339_500)
    ]
    assert action.sold == 7_152_632 and action.proceeds - 339_500 == 1_359
    left_debt, left_value = 460_000 - action.repaid, value_of(10**9 - action.sold, eth)
    assert (left_debt, left_value) == (119_141, 198_569)
    assert left_debt * BPS <= left_value * ETH_LADDER.target_bps  # 59.99%
