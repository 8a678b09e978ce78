"""The risk model's boundaries (core.risk.math): each threshold exactly at and one unit over,
a price gap through several thresholds, the close factor's $2,000 edge, the minimum leftover,
repeated partials, rounding, and value conserved along random price paths."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.risk.math import (
    BPS,
    ActionKind,
    Ladder,
    Position,
    Price,
    RiskParameterError,
    accrue_interest,
    close_factor_bps,
    credit_limit,
    crossed,
    decide,
    ewma_volatility,
    haircut_bps,
    health_factor,
    proceeds_of,
    value_of,
)

pytestmark = pytest.mark.unit

LADDER = Ladder(
    initial_bps=5_000,
    margin_call_bps=6_500,
    partial_bps=7_500,
    full_bps=9_000,
    target_bps=6_000,
    penalty_bps=500,
    min_leftover=10_000,
)
ETH = 10**18  # wETH minor units per whole unit
#: $2,000.00 per ETH as an 8-decimal feed answer, in cents per wei
PX = Price(2_000 * 10**8, 8).per_minor(18, 2)


def pos(debt: int, collateral: int = ETH, price: Fraction = PX, **kw: object) -> Position:
    return Position(debt=debt, collateral=collateral, price=price, **kw)  # type: ignore[arg-type]


def test_a_price_converts_exactly() -> None:
    assert value_of(ETH, PX) == 200_000  # $2,000.00
    assert value_of(1, PX) == 0  # a wei is worth 2e-13 cents: rounded down
    assert value_of(3 * ETH // 2, PX) == 300_000


@pytest.mark.parametrize(
    ("threshold", "kind_over"),
    [
        (LADDER.margin_call_bps, ActionKind.NOTIFY),
        (LADDER.partial_bps, ActionKind.PARTIAL),
        (LADDER.full_bps, ActionKind.FULL),
    ],
)
def test_exactly_at_a_threshold_is_safe_one_cent_over_acts(
    threshold: int, kind_over: ActionKind
) -> None:
    value = 200_000
    at = value * threshold // BPS  # exact: value is a multiple of 100
    assert not crossed(at, value, threshold)
    assert crossed(at + 1, value, threshold)
    below = decide(pos(at), LADDER).kind
    assert below != kind_over
    assert decide(pos(at + 1), LADDER).kind is kind_over


def test_health_factor_is_one_exactly_at_the_partial_threshold() -> None:
    assert health_factor(150_000, 200_000, LADDER.partial_bps) == 1
    assert health_factor(150_001, 200_000, LADDER.partial_bps) < 1  # type: ignore[operator]
    assert health_factor(0, 200_000, LADDER.partial_bps) is None


def test_a_gap_through_several_thresholds_in_one_tick_acts_on_the_worst() -> None:
    debt = 90_000  # LTV 45% at $2,000
    assert decide(pos(debt), LADDER).kind is ActionKind.NONE
    crash = Price(1_000 * 10**8, 8).per_minor(18, 2)  # LTV 90% + : past margin, partial, full
    action = decide(pos(debt + 1, price=crash), LADDER)
    assert action.kind is ActionKind.FULL
    assert action.repaid == debt + 1 and action.shortfall == 0


def test_close_factor_edge_at_2000_dollars() -> None:
    # HF > 0.95 in both cases: only the size decides
    value = 300_000
    assert close_factor_bps(200_000, value, LADDER) == 5_000
    assert close_factor_bps(199_999, value, LADDER) == BPS  # $1,999.99: all of it
    assert close_factor_bps(200_000, 199_999, LADDER) == BPS  # collateral $1,999.99
    # HF exactly 0.95 is not "above": all of it
    debt = 750_000
    value_at = debt * 9_500 // LADDER.partial_bps  # value * 0.75 / debt = 0.95
    assert health_factor(debt, value_at, LADDER.partial_bps) == Fraction(95, 100)
    assert close_factor_bps(debt, value_at, LADDER) == BPS
    assert close_factor_bps(debt, value_at + 1, LADDER) == 5_000


def test_a_partial_restores_the_target_and_sells_the_fewest_units() -> None:
    p = pos(155_000, collateral=ETH)  # LTV 77.5%: over partial, under full, debt < $2,000
    action = decide(p, LADDER)
    assert action.kind is ActionKind.PARTIAL
    left_debt = p.debt - action.repaid
    left_value = value_of(p.collateral - action.sold, PX)
    assert not crossed(left_debt, left_value, LADDER.target_bps)
    one_less = action.sold - 1
    repaid = min(proceeds_of(one_less, PX, LADDER.penalty_bps), p.debt)
    assert crossed(p.debt - repaid, value_of(p.collateral - one_less, PX), LADDER.target_bps)
    assert action.surplus == 0 and action.shortfall == 0


def test_the_close_factor_caps_a_large_partial() -> None:
    p = pos(1_600_000, collateral=10 * ETH)  # $20,000 collateral, LTV 80%, HF 0.9375 < .95
    assert decide(p, LADDER).kind is ActionKind.PARTIAL  # 100% allowed: reaches target
    p2 = pos(1_560_000, collateral=10 * ETH)  # LTV 78%, HF 0.96 > .95: capped at 50%
    action = decide(p2, LADDER)
    assert action.kind is ActionKind.PARTIAL
    assert action.repaid <= p2.debt // 2


def test_a_leftover_under_the_minimum_closes_fully() -> None:
    p = pos(155_000)  # a partial leaves about $700 of debt and $1,200 of collateral
    partial = decide(p, LADDER)
    assert partial.kind is ActionKind.PARTIAL
    left_debt = p.debt - partial.repaid
    at_minimum = Ladder(**{**_fields(LADDER), "min_leftover": left_debt})
    assert decide(p, at_minimum).kind is ActionKind.PARTIAL  # exactly the minimum: kept
    strict = Ladder(**{**_fields(LADDER), "min_leftover": left_debt + 1})
    action = decide(p, strict)
    assert action.kind is ActionKind.FULL and action.repaid == p.debt


def test_repeated_partials_terminate() -> None:
    # a close factor of 1% forces many small partials; each sells at least one unit
    ladder = Ladder(**{**_fields(LADDER), "close_factor_bps": 100, "min_leftover": 0,
                       "close_factor_min": 0})  # fmt: skip
    p = pos(1_560_000, collateral=10 * ETH)
    for _ in range(1_000):
        action = decide(p, ladder)
        if action.kind is ActionKind.NONE or action.kind is ActionKind.NOTIFY:
            break
        assert action.sold > 0
        p = pos(p.debt - action.repaid, p.collateral - action.sold, notified=True)
    else:  # pragma: no cover - the assertion is the point
        pytest.fail("partials did not terminate")
    assert not crossed(p.debt, value_of(p.collateral, PX), ladder.partial_bps)


def test_frozen_price_never_acts() -> None:
    assert decide(pos(10**9, frozen=True), LADDER).kind is ActionKind.NONE


def test_cushion_first_then_notify_once() -> None:
    p = pos(140_000, cushion=5_000)  # LTV 70%: over margin call
    action = decide(p, LADDER)
    assert action.kind is ActionKind.CUSHION and action.repaid == 5_000
    assert decide(pos(140_000), LADDER).kind is ActionKind.NOTIFY
    assert decide(pos(140_000, notified=True), LADDER).kind is ActionKind.NONE


def test_stop_loss_sells_everything_and_returns_the_surplus() -> None:
    action = decide(pos(50_000, stop_loss=PX), LADDER)
    assert action.kind is ActionKind.STOP_LOSS and action.sold == ETH
    assert action.proceeds == 190_000  # $2,000 less 5%
    assert (action.repaid, action.surplus) == (50_000, 140_000)


def test_no_collateral_value_writes_the_debt_off() -> None:
    action = decide(pos(10_000, collateral=0), LADDER)
    assert action.kind is ActionKind.FULL and action.shortfall == 10_000


def test_rounding_is_never_more_than_one_unit_against_the_user() -> None:
    odd = Price(1_234_567_891, 8).per_minor(18, 2)  # $12.34567891
    for q in (1, 7, 10**15 + 3, 3 * ETH + 11):
        exact = q * odd * (BPS - 500) / BPS
        paid = proceeds_of(q, odd, 500)
        assert 0 <= exact - paid < 1
        assert 0 <= q * odd - value_of(q, odd) < 1


def test_interest_across_a_month_is_the_exact_total_rounded_down_once() -> None:
    debt, apr, carry, charged = 123_457, 1_999, 0, 0
    for _ in range(31):
        interest, carry = accrue_interest(debt + charged, apr, carry)
        charged += interest
    # the same, computed at once from the daily balances
    balance, total = debt, Fraction(0)
    expected_charged = 0
    exact_num = 0
    for _ in range(31):
        exact_num += balance * apr
        now = exact_num // (BPS * 365)
        balance += now - expected_charged
        expected_charged = now
        total = Fraction(exact_num, BPS * 365)
    assert charged == expected_charged == int(total)
    assert accrue_interest(0, apr, 5) == (0, 5)


def test_haircut_and_limit() -> None:
    flat = ewma_volatility([100, 100, 100], Decimal("0.94"))
    assert flat == 0
    h = haircut_bps(flat, z=Decimal("2.33"), horizon_periods=10, floor_bps=500, ceiling_bps=5000)
    assert h == 500  # the floor
    vol = ewma_volatility([100, 110, 99, 120, 90], Decimal("0.94"))
    raw = Decimal("2.33") * vol * Decimal(10).sqrt() * BPS
    h = haircut_bps(vol, z=Decimal("2.33"), horizon_periods=10, floor_bps=0, ceiling_bps=9_999)
    assert h - 1 < raw <= h  # rounded up
    capped = haircut_bps(vol, z=Decimal(10), horizon_periods=10, floor_bps=0, ceiling_bps=3_000)
    assert capped == 3_000
    assert credit_limit([(200_000, 2_000), (100_001, 1_000)], buffer=1_000) == (
        160_000 + 90_000 - 1_000
    )
    assert credit_limit([(200_000, 2_000)], buffer=0, initial_bps=5_000) == 100_000
    assert credit_limit([(1_000, 2_000)], buffer=5_000) == 0


def test_the_ladder_must_rise() -> None:
    with pytest.raises(RiskParameterError):
        Ladder(**{**_fields(LADDER), "partial_bps": 6_000}).validate()
    with pytest.raises(RiskParameterError):
        Ladder(**{**_fields(LADDER), "target_bps": 9_600}).validate()
    LADDER.validate()


def _fields(ladder: Ladder) -> dict[str, int]:
    return {name: getattr(ladder, name) for name in Ladder.__slots__}


# ---------------------------------------------------------------------------
# Properties: value is conserved over random price paths, whatever the decisions
# ---------------------------------------------------------------------------


@st.composite
def _paths(draw: st.DrawFn) -> tuple[list[tuple[int, int, int]], list[int]]:
    n = draw(st.integers(1, 12))
    positions = [
        (
            draw(st.integers(0, 5_000_000)),  # debt, cents
            draw(st.integers(0, 50 * ETH)),  # collateral, wei
            draw(st.integers(0, 20_000)),  # cushion
        )
        for _ in range(n)
    ]
    prices = draw(st.lists(st.integers(1, 10_000 * 10**8), min_size=1, max_size=15))
    return positions, prices


@settings(max_examples=150, deadline=None)
@given(_paths())
def test_value_is_conserved_over_random_price_paths(
    case: tuple[list[tuple[int, int, int]], list[int]],
) -> None:
    positions, answers = case
    for answer in answers:
        price = Price(answer, 8).per_minor(18, 2)
        nxt = []
        for debt, coll, cushion in positions:
            a = decide(Position(debt, coll, price, cushion), LADDER)
            # what leaves the user equals what reaches the others, unit for unit
            assert a.repaid + a.surplus == (
                a.proceeds if a.kind is not ActionKind.CUSHION else a.repaid
            )
            assert a.sold <= coll and a.repaid <= max(debt, 0)
            assert a.shortfall == 0 or a.sold == coll
            assert a.proceeds >= 0
            exact = a.sold * price * (BPS - LADDER.penalty_bps) / BPS
            assert 0 <= exact - a.proceeds < 1  # rounding: under one cent against the user
            new_debt = debt - a.repaid - a.shortfall
            new_cushion = cushion - (a.repaid if a.kind is ActionKind.CUSHION else 0)
            assert new_debt >= 0 and new_cushion >= 0
            if a.kind is ActionKind.PARTIAL:
                value = value_of(coll - a.sold, price)
                assert not crossed(new_debt, value, LADDER.full_bps)
            if a.kind is ActionKind.FULL:
                assert new_debt == 0
            nxt.append((new_debt, coll - a.sold, new_cushion))
        positions = nxt


def test_the_worked_example_of_the_readme() -> None:
    """1 wETH, $980 owed, price $1,300 (LTV 75.4%): a partial back to 60%, then a gap to $500."""
    px = Price(1_300 * 10**8, 8).per_minor(9, 2)
    ladder = LADDER
    p = Position(98_000, 10**9, px)
    action = decide(p, ladder)
    assert (action.kind, action.sold, action.proceeds) == (ActionKind.PARTIAL, 439_587_045, 54_289)
    left_debt, left_value = 98_000 - action.repaid, value_of(10**9 - action.sold, px)
    assert (left_debt, left_value) == (43_711, 72_853)
    assert not crossed(left_debt, left_value, ladder.target_bps)
    # the exact real-valued sale, and what the sliver sold beyond it costs the user
    t = Fraction(ladder.target_bps, BPS)
    d = px * (BPS - ladder.penalty_bps) / BPS
    exact = (98_000 - t * value_of(10**9, px)) / (d - t * px)
    assert 0 <= (action.sold - exact) * px * ladder.penalty_bps / BPS < 1
    gap = decide(Position(left_debt, 10**9 - action.sold, Price(500 * 10**8, 8).per_minor(9, 2)),
                 ladder)  # fmt: skip
    assert (gap.kind, gap.proceeds, gap.shortfall) == (ActionKind.FULL, 26_619, 17_092)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 10_000_000),
    st.integers(1, 100 * 10**9),
    st.integers(1, 100_000 * 10**8),
)
def test_a_partial_oversells_by_less_than_one_unit_of_value(
    debt: int, collateral: int, answer: int
) -> None:
    px = Price(answer, 8).per_minor(9, 2)
    ladder = Ladder(**{**_fields(LADDER), "min_leftover": 0, "close_factor_bps": BPS})
    action = decide(Position(debt, collateral, px), ladder)
    if action.kind is not ActionKind.PARTIAL:
        return
    t = Fraction(ladder.target_bps, BPS)
    d = px * (BPS - ladder.penalty_bps) / BPS
    exact = (debt - t * value_of(collateral, px)) / (d - t * px)
    assert 0 <= (action.sold - exact) * px * ladder.penalty_bps / BPS < 1
