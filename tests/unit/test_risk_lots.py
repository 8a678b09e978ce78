"""A sale cut to the room a liquidation cap leaves (``core.risk.math.capped_lot``), pure:
never worth more than the room, the most collateral that fits, the value it moves balanced,
and no lot that is dust or leaves a dust position."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.risk.math import ActionKind, Ladder, Position, capped_lot, decide, value_of

pytestmark = pytest.mark.unit

LADDER = Ladder(
    initial_bps=5_000, margin_call_bps=6_500, partial_bps=7_500, full_bps=9_000,
    target_bps=6_000, penalty_bps=500, min_leftover=10_000,
)  # fmt: skip
WETH = 10**9


def usd_per_weth(dollars: int) -> Fraction:
    """Debt minor units (cents) per collateral minor unit (gwei)."""
    return Fraction(dollars * 100, WETH)


@given(
    collateral=st.integers(WETH // 100, 50 * WETH),
    ratio_bps=st.integers(7_501, 12_000),
    dollars=st.integers(100, 10_000),
    room=st.integers(-1_000, 10**8),
)
def test_a_lot_fits_the_room_and_balances(
    collateral: int, ratio_bps: int, dollars: int, room: int
) -> None:
    price = usd_per_weth(dollars)
    debt = value_of(collateral, price) * ratio_bps // 10_000
    p = Position(debt, collateral, price)
    action = decide(p, LADDER)
    if action.kind not in {ActionKind.PARTIAL, ActionKind.FULL}:
        return
    lot = capped_lot(p, LADDER, action, room)
    if lot is None:
        return
    assert lot.kind is action.kind and 0 < lot.sold < action.sold
    assert LADDER.min_leftover <= value_of(lot.sold, price) <= room
    # the most that fits: one more unit would pass the room (or be the whole sale)
    assert lot.sold + 1 == action.sold or value_of(lot.sold + 1, price) > room
    assert lot.proceeds == lot.repaid + lot.surplus and lot.shortfall == 0
    assert lot.repaid <= debt
    assert value_of(collateral - lot.sold, price) >= LADDER.min_leftover
    left = debt - lot.repaid
    assert left == 0 or left >= LADDER.min_leftover


def test_room_below_the_dust_or_negative_waits() -> None:
    p = Position(100_000, WETH, usd_per_weth(1_300))
    action = decide(p, LADDER)
    assert action.kind is ActionKind.PARTIAL and value_of(action.sold, p.price) > 10_000
    assert capped_lot(p, LADDER, action, -5) is None
    assert capped_lot(p, LADDER, action, 9_999) is None
    lot = capped_lot(p, LADDER, action, 10_000)
    assert lot is not None and value_of(lot.sold, p.price) == 10_000
