"""The credit-line risk model as pure functions: no I/O, no clock, no float on a money path.

Units. A position owes ``debt`` minor units of the debt asset (e.g. USD cents) and holds
``collateral`` minor units of its line's collateral asset (e.g. wETH wei), and possibly
holdings of further collateral assets (:class:`Holding`), each with its own price and ladder.
A :class:`Price` is a feed's integer answer with its decimals (USD per one whole collateral
unit, as Chainlink reports it); :meth:`Price.per_minor` turns it into the exact rational "debt
minor units per collateral minor unit" every computation here uses. Ratios (LTV thresholds,
penalty, haircut) are integer basis points (1 bp = 1/10,000).

Rounding, each in one place and in one direction, never more than one minor unit:

* a collateral value is rounded **down** (:func:`value_of`): the user's collateral counts for at
  most one debt minor unit less than its exact worth;
* a credit limit is rounded **down** (:func:`credit_limit`), for the same reason;
* sale proceeds are rounded **down** (:func:`proceeds_of`): the user receives at most one debt
  minor unit less than ``quantity * price * (1 - penalty)``; a sale of several assets rounds
  the exact sum of its lots once (:func:`sale_proceeds`), so still under one unit;
* the collateral sold is the **smallest** whole number of minor units for which the goal holds
  *as judged with the rounded-down values above* (:func:`decide`); against the exact real-valued
  quantity it sells a sliver more (what two debt minor units move in LTV terms), and that sliver
  costs the user only the penalty on it: under one debt minor unit for any ladder whose
  ``penalty <= 1 - penalty - target`` (tested in tests/unit/test_risk_math.py);
* daily interest is rounded **down** and its remainder carried to the next day
  (:func:`accrue_interest`), so over any number of days the total is the exact total rounded
  down once;
* every threshold test is an exact integer comparison (no rounding at all): a threshold is
  *crossed* when LTV is strictly above it; exactly at a threshold is still on the safe side.

Several collateral assets (Aave v3's weighted thresholds). A position holding several assets
crosses threshold ``k`` when ``debt * 10,000 > sum value_i * k_i`` (each value rounded down, each
``k_i`` its own asset's ladder): its threshold is the value-weighted mean of its assets'. A sale
sells the assets in :func:`sale_order` (the lowest penalty first: the cheapest for the user),
each only as far as the goal needs; the line's own (first) asset's ladder gives the rules that
are the position's, not an asset's: close factor, its bounds, and the minimum leftover. With one
asset every formula here is the single-asset one.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal, localcontext
from enum import StrEnum
from fractions import Fraction
from functools import partial

BPS = 10_000
#: interest: APR in basis points accrues per day over this many days a year
DAYS_PER_YEAR = 365


class RiskParameterError(ValueError):
    """A parameter set that breaks the ladder's order or a bound."""


@dataclass(frozen=True, slots=True)
class Price:
    """A feed's answer: ``answer / 10**decimals`` debt units per one whole collateral unit."""

    answer: int
    decimals: int

    def per_minor(self, collateral_scale: int, debt_scale: int) -> Fraction:
        """Exact debt minor units per collateral minor unit."""
        return Fraction(self.answer * 10**debt_scale, 10 ** (collateral_scale + self.decimals))


@dataclass(frozen=True, slots=True)
class Ladder:
    """One collateral asset's thresholds (bps of LTV = debt / collateral value) and the rules
    of a liquidation.

    ``initial < margin_call < partial < full``: borrowing and withdrawals stay at or under
    ``initial``; over ``margin_call`` the cushion is applied, then the user is notified; over
    ``partial`` collateral is sold back to ``target``; over ``full`` all the debt is closed.
    """

    initial_bps: int
    margin_call_bps: int
    partial_bps: int
    full_bps: int
    target_bps: int
    penalty_bps: int
    #: share of the debt one partial liquidation may repay while the position is healthy
    #: enough and large enough (Aave v3: 50%)
    close_factor_bps: int = 5_000
    #: the close factor applies only while HF is strictly above this (bps of HF 1.0)
    close_factor_hf_bps: int = 9_500
    #: ... and both debt and collateral value are at least this (debt minor units)
    close_factor_min: int = 200_000
    #: a partial that would leave less debt or collateral value than this closes fully
    min_leftover: int = 100_000

    def validate(self) -> None:
        order = (self.initial_bps, self.margin_call_bps, self.partial_bps, self.full_bps)
        if not 0 < self.initial_bps < self.margin_call_bps < self.partial_bps < self.full_bps:
            raise RiskParameterError(f"ladder must rise: initial < margin < partial < full {order}")
        if self.full_bps > BPS:
            raise RiskParameterError("full liquidation LTV cannot exceed 100%")
        if not 0 <= self.penalty_bps < BPS:
            raise RiskParameterError("penalty must be in [0, 100%)")
        if not 0 < self.target_bps < self.partial_bps:
            raise RiskParameterError("target LTV must be positive and under the partial threshold")
        if self.target_bps >= BPS - self.penalty_bps:
            # selling at a discount lowers LTV only while LTV < 1 - penalty
            raise RiskParameterError("target LTV must be under 100% minus the penalty")
        if not 0 < self.close_factor_bps <= BPS:
            raise RiskParameterError("close factor must be in (0, 100%]")
        if self.close_factor_min < 0 or self.min_leftover < 0:
            raise RiskParameterError("minimums cannot be negative")


# ---------------------------------------------------------------------------
# Values, LTV, health factor
# ---------------------------------------------------------------------------


def value_of(quantity: int, price: Fraction) -> int:
    """Debt minor units ``quantity`` collateral minor units are worth, rounded down."""
    if quantity <= 0:
        return 0
    return (quantity * price.numerator) // price.denominator


def proceeds_of(quantity: int, price: Fraction, penalty_bps: int) -> int:
    """What selling ``quantity`` at ``price * (1 - penalty)`` pays, rounded down."""
    if quantity <= 0:
        return 0
    return (quantity * price.numerator * (BPS - penalty_bps)) // (price.denominator * BPS)


def crossed(debt: int, value: int, threshold_bps: int) -> bool:
    """True when LTV = debt / value is strictly above ``threshold_bps`` (exact)."""
    if debt <= 0:
        return False
    return debt * BPS > value * threshold_bps


def ltv(debt: int, value: int) -> Fraction | None:
    """Loan to value, exact; ``None`` when there is no collateral value."""
    if value <= 0:
        return None if debt > 0 else Fraction(0)
    return Fraction(max(debt, 0), value)


def health_factor(debt: int, value: int, liquidation_bps: int) -> Fraction | None:
    """Aave's HF = value * liquidation threshold / debt (exact); ``None`` without debt.

    HF < 1 exactly when LTV is over the liquidation threshold (``partial`` here)."""
    if debt <= 0:
        return None
    return Fraction(value * liquidation_bps, debt * BPS)


def close_factor_bps(debt: int, value: int, ladder: Ladder) -> int:
    """The share of the debt one partial may repay: ``close_factor_bps`` while HF is strictly
    above ``close_factor_hf_bps`` and debt and collateral value are both at least
    ``close_factor_min``; all of it otherwise (Aave v3.3)."""
    return _close_factor(debt, value, value * ladder.partial_bps, ladder)


# ---------------------------------------------------------------------------
# Haircut and credit limit
# ---------------------------------------------------------------------------


def ewma_volatility(prices: list[int], lam: Decimal) -> Decimal:
    """EWMA (RiskMetrics) volatility per period of the log returns of ``prices`` (oldest
    first): var[t] = lambda*var[t-1] + (1 - lambda)*r[t]^2, seeded with the first squared return.

    Decimal at 40 digits: the same inputs give the same sigma on every machine."""
    if not Decimal(0) < lam < Decimal(1):
        raise RiskParameterError("EWMA lambda must be in (0, 1)")
    if any(p <= 0 for p in prices):
        raise RiskParameterError("prices must be positive")
    with localcontext() as ctx:
        ctx.prec = 40
        returns = [(Decimal(b) / Decimal(a)).ln() for a, b in itertools.pairwise(prices)]
        if not returns:
            return Decimal(0)
        variance = returns[0] ** 2
        for r in returns[1:]:
            variance = lam * variance + (1 - lam) * r * r
        return +variance.sqrt()


def haircut_bps(
    sigma: Decimal, *, z: Decimal, horizon_periods: int, floor_bps: int, ceiling_bps: int
) -> int:
    """H = z*sigma*sqrt(T) in basis points, rounded **up** (a larger haircut is the cautious side),
    then held within ``[floor_bps, ceiling_bps]``."""
    if not 0 <= floor_bps <= ceiling_bps < BPS:
        raise RiskParameterError("haircut bounds must satisfy 0 <= floor <= ceiling < 100%")
    if horizon_periods <= 0 or z <= 0:
        raise RiskParameterError("z and the horizon must be positive")
    with localcontext() as ctx:
        ctx.prec = 40
        raw = z * sigma * Decimal(horizon_periods).sqrt() * BPS
        bps = int(raw.to_integral_value(rounding="ROUND_CEILING"))
    return min(max(bps, floor_bps), ceiling_bps)


def credit_limit(
    collateral: list[tuple[int, int]], *, buffer: int, initial_bps: int | None = None
) -> int:
    """limit = sum value_i * (1 - H_i) - buffer for ``(value, haircut_bps)`` pairs, each term
    rounded down, never below 0; with ``initial_bps`` also at most sum value * initial LTV, so a
    line drawn to its limit is never over the initial threshold."""
    haircut = sum((v * (BPS - h)) // BPS for v, h in collateral)
    limit = haircut - buffer
    if initial_bps is not None:
        limit = min(limit, (sum(v for v, _ in collateral) * initial_bps) // BPS)
    return max(limit, 0)


def accrue_interest(debt: int, apr_bps: int, carry: int) -> tuple[int, int]:
    """One day's interest on ``debt`` at ``apr_bps``: ``(interest, new carry)``.

    ``carry`` is the remainder (in 1/(BPS*DAYS_PER_YEAR) of a minor unit) left by earlier
    days; interest is rounded down and the remainder carried, so N days charge exactly
    ``floor(sum debt_i * apr / (BPS * 365))``, never a unit more."""
    if debt <= 0 or apr_bps <= 0:
        return 0, carry
    interest, carry = divmod(carry + debt * apr_bps, BPS * DAYS_PER_YEAR)
    return interest, carry


# ---------------------------------------------------------------------------
# The decision: at most one action per position per tick
# ---------------------------------------------------------------------------


class ActionKind(StrEnum):
    NONE = "NONE"
    NOTIFY = "NOTIFY"  # margin call: tell the card app
    CUSHION = "CUSHION"  # apply the yield cushion to the debt
    PARTIAL = "PARTIAL"  # sell collateral back to the target LTV
    FULL = "FULL"  # close the debt, selling what it takes
    STOP_LOSS = "STOP_LOSS"  # the user's stop price was reached: sell all collateral


@dataclass(frozen=True, slots=True)
class Holding:
    """Collateral of one asset: the line's own (built from :class:`Position`'s first fields)
    or a further asset the line holds (:attr:`Position.others`)."""

    asset: str
    quantity: int  # collateral minor units held
    price: Fraction  # debt minor units per collateral minor unit
    ladder: Ladder  # this asset's thresholds and penalty
    stop_loss: Fraction | None = None  # sell all of this asset when price <= this

    @property
    def value(self) -> int:
        return value_of(self.quantity, self.price)

    def pays(self, quantity: int) -> int:
        """What selling ``quantity`` of it pays (:func:`proceeds_of`, rounded down)."""
        return proceeds_of(quantity, self.price, self.ladder.penalty_bps)


@dataclass(frozen=True, slots=True)
class Position:
    debt: int  # minor units owed (> 0 means owed)
    collateral: int  # collateral minor units held
    price: Fraction  # debt minor units per collateral minor unit
    cushion: int = 0  # yield cushion, debt minor units
    stop_loss: Fraction | None = None  # sell everything when price <= this
    notified: bool = False  # a margin call is already out for this crossing
    frozen: bool = False  # a held asset's price cannot be trusted now
    asset: str = ""  # the line's own collateral asset
    #: further collateral assets held, each with its own price and ladder
    others: tuple[Holding, ...] = ()

    def holdings(self, ladder: Ladder) -> tuple[Holding, ...]:
        """Every holding, the line's own first (with ``ladder``, the line's)."""
        own = Holding(self.asset, self.collateral, self.price, ladder, self.stop_loss)
        return (own, *self.others)

    def value(self) -> int:
        """The collateral's value: the sum of each holding's (each rounded down)."""
        return value_of(self.collateral, self.price) + sum(h.value for h in self.others)


def capacity(holdings: tuple[Holding, ...], threshold: Callable[[Ladder], int]) -> int:
    """``sum value_i * threshold_i`` (debt minor units x bps): a position crosses that
    threshold when ``debt * BPS`` is above it (:func:`crossed_capacity`)."""
    return sum(h.value * threshold(h.ladder) for h in holdings)


def crossed_capacity(debt: int, cap: int) -> bool:
    """:func:`crossed` against a :func:`capacity` (the weighted threshold), exact."""
    return debt > 0 and debt * BPS > cap


def sale_order(holdings: tuple[Holding, ...]) -> list[int]:
    """The order a sale takes the holdings in: the lowest penalty first (what the sale costs
    the user), then the line's own asset, then the order the line holds them in."""
    return sorted(range(len(holdings)), key=lambda i: (holdings[i].ladder.penalty_bps, i))


@dataclass(frozen=True, slots=True)
class Lot:
    """What a sale takes of one further collateral asset (:attr:`Action.lots`)."""

    asset: str
    quantity: int
    #: what the lot pays, rounded down (:func:`proceeds_of`); part of :attr:`Action.proceeds`
    proceeds: int


@dataclass(frozen=True, slots=True)
class Action:
    kind: ActionKind
    #: collateral minor units sold to the liquidation account
    sold: int = 0
    #: debt minor units the sale pays (rounded down)
    proceeds: int = 0
    #: what of ``proceeds`` (or of the cushion) repays debt
    repaid: int = 0
    #: what of ``proceeds`` goes back to the user
    surplus: int = 0
    #: debt left unpaid after all collateral was sold: written off to bad debt
    shortfall: int = 0
    #: what the sale takes of the line's further collateral assets (``sold`` is its own's)
    lots: tuple[Lot, ...] = ()

    @property
    def sells(self) -> bool:
        return self.sold > 0 or any(lot.quantity for lot in self.lots)


NO_ACTION = Action(ActionKind.NONE)


def sale_proceeds(holdings: tuple[Holding, ...], sold: Sequence[int]) -> int:
    """What selling ``sold[i]`` of each holding pays: the exact sum of ``q * price * (1 -
    penalty)`` over the lots, rounded down **once** (never a minor unit against the user, however
    many assets the sale takes; with one asset, :func:`proceeds_of`)."""
    lots = zip(sold, holdings, strict=True)
    exact = sum((q * h.price * (BPS - h.ladder.penalty_bps) for q, h in lots if q > 0), Fraction(0))
    return (exact.numerator // exact.denominator) // BPS


def _sale_of(kind: ActionKind, holdings: tuple[Holding, ...], sold: list[int], debt: int) -> Action:
    """The action selling ``sold[i]`` of each holding: its proceeds (:func:`sale_proceeds`)
    repay the debt, the rest is surplus; debt left once every holding is sold out is the
    shortfall (never for a partial). Each :class:`Lot` records its own proceeds rounded down
    (their sum may be a unit or so under the sale's)."""
    paid = [h.pays(q) for q, h in zip(sold, holdings, strict=True)]
    proceeds = sale_proceeds(holdings, sold)
    repaid = min(proceeds, max(debt, 0))
    shortfall = 0
    sold_out = all(q >= h.quantity for q, h in zip(sold, holdings, strict=True))
    if sold_out and repaid < debt and kind is not ActionKind.PARTIAL:
        shortfall = debt - repaid
    lots = tuple(
        Lot(h.asset, q, pay)
        for q, h, pay in zip(sold[1:], holdings[1:], paid[1:], strict=True)
        if q > 0
    )
    return Action(kind, sold[0], proceeds, repaid, proceeds - repaid, shortfall, lots)


def _sale(kind: ActionKind, sold: int, p: Position, ladder: Ladder) -> Action:
    """A sale of ``sold`` units of the line's own asset only."""
    holdings = p.holdings(ladder)
    return _sale_of(kind, holdings, [sold] + [0] * (len(holdings) - 1), p.debt)


def _smallest(quantity_hint: int, limit: int, good: Callable[[int], bool]) -> int:
    """The smallest q in [0, limit] with good(q) (``limit`` when none is), for a predicate
    that only turns true as q grows; bisected upward of the exact real-valued answer (the
    hint), below which rounding down can only make it false."""
    lo, hi = max(min(quantity_hint, limit) - 1, 0), limit
    if good(lo):
        return lo
    while hi - lo > 1:  # good(hi) or hi == limit; not good(lo)
        mid = (lo + hi) // 2
        if good(mid):
            hi = mid
        else:
            lo = mid
    return hi


def _with(sold: list[int], j: int, q: int) -> list[int]:
    """``sold`` with ``q`` of holding ``j``."""
    return [q if i == j else x for i, x in enumerate(sold)]


def _pays_more(holdings: tuple[Holding, ...], sold: list[int], j: int, cap: int, q: int) -> bool:
    return sale_proceeds(holdings, _with(sold, j, q)) > cap


def _covers(holdings: tuple[Holding, ...], sold: list[int], j: int, need: int, q: int) -> bool:
    return sale_proceeds(holdings, _with(sold, j, q)) >= need


def full_sale(p: Position, ladder: Ladder, kind: ActionKind = ActionKind.FULL) -> Action:
    """Sell the fewest collateral units whose proceeds cover the whole debt (all of it if they
    cannot: the rest is the shortfall), taking the holdings in :func:`sale_order`."""
    holdings = p.holdings(ladder)
    sold = [0] * len(holdings)
    for i in sale_order(holdings):
        need = p.debt - sale_proceeds(holdings, sold)
        if need <= 0:
            break
        h = holdings[i]
        discounted = h.price * (BPS - h.ladder.penalty_bps) / BPS
        hint = int(Fraction(need) / discounted) if discounted > 0 else h.quantity
        covers = partial(_covers, holdings, sold, i, p.debt)
        sold[i] = _smallest(min(hint, h.quantity), h.quantity, covers)
    return _sale_of(kind, holdings, sold, p.debt)


def partial_sale(p: Position, ladder: Ladder) -> Action:
    """Sell the fewest units that bring LTV back to ``target`` (at most the close factor's
    share of the debt), taking the holdings in :func:`sale_order`, each whole before the next;
    a full sale when the leftover would be under ``min_leftover`` or the target cannot be
    reached with the collateral held."""
    holdings = p.holdings(ladder)
    sold = [0] * len(holdings)

    def restored(trial: list[int]) -> bool:
        paid = sale_proceeds(holdings, trial)
        left = tuple(
            replace(h, quantity=h.quantity - q) for q, h in zip(trial, holdings, strict=True)
        )
        return not crossed_capacity(
            p.debt - min(paid, p.debt), capacity(left, lambda lad: lad.target_bps)
        )

    for j in sale_order(holdings):
        h = holdings[j]
        if h.quantity <= 0 or h.price <= 0:
            continue
        others = [q if i != j else 0 for i, q in enumerate(sold)]
        paid = sale_proceeds(holdings, others)
        cap = capacity(
            tuple(
                replace(o, quantity=o.quantity - q) for q, o in zip(others, holdings, strict=True)
            ),
            lambda lad: lad.target_bps,
        )
        discounted = h.price * (BPS - h.ladder.penalty_bps) / BPS
        per_unit = discounted - Fraction(h.ladder.target_bps, BPS) * h.price  # > 0 (validate)
        exact = (p.debt - paid - Fraction(cap, BPS)) / per_unit

        def with_j(q: int, j: int = j, others: list[int] = others) -> bool:
            return restored([q if i == j else o for i, o in enumerate(others)])

        if exact >= h.quantity or not with_j(h.quantity):
            sold[j] = h.quantity
            continue
        sold[j] = _smallest(int(exact), h.quantity, with_j)
        break
    else:
        return full_sale(p, ladder)
    value = p.value()
    hf_capacity = capacity(holdings, lambda lad: lad.partial_bps)
    max_repay = (p.debt * _close_factor(p.debt, value, hf_capacity, ladder)) // BPS
    order = sale_order(holdings)
    taken = [0] * len(holdings)
    for n, j in enumerate(order):
        taken[j] = sold[j]
        if sale_proceeds(holdings, taken) > max_repay:
            # the largest sale whose proceeds stay within the close factor
            over = _smallest(0, sold[j], partial(_pays_more, holdings, taken, j, max_repay))
            taken[j] = max(over - 1 if _pays_more(holdings, taken, j, max_repay, over) else over, 0)
            for k in order[n + 1 :]:
                taken[k] = 0
            break
    sold = taken
    action = _sale_of(ActionKind.PARTIAL, holdings, sold, p.debt)
    left_debt = p.debt - action.repaid
    left_value = sum(value_of(h.quantity - q, h.price) for q, h in zip(sold, holdings, strict=True))
    if not any(sold) or left_debt < ladder.min_leftover or left_value < ladder.min_leftover:
        return full_sale(p, ladder)
    return action


def _close_factor(debt: int, value: int, hf_capacity: int, ladder: Ladder) -> int:
    """:func:`close_factor_bps` with the health factor's numerator given as a
    :func:`capacity` at the partial threshold (the weighted form)."""
    hf_above = hf_capacity * BPS > ladder.close_factor_hf_bps * debt * BPS
    big = debt >= ladder.close_factor_min and value >= ladder.close_factor_min
    return ladder.close_factor_bps if hf_above and big else BPS


def lot_values(p: Position, ladder: Ladder, action: Action) -> dict[str, int]:
    """The market value (:func:`value_of`, rounded down) of what ``action`` sells, per
    collateral asset."""
    holdings = {h.asset: h for h in p.holdings(ladder)}
    values: dict[str, int] = {}
    if action.sold:
        values[p.asset] = value_of(action.sold, p.price)
    for lot in action.lots:
        values[lot.asset] = values.get(lot.asset, 0) + value_of(
            lot.quantity, holdings[lot.asset].price
        )
    return values


def _fits(price: Fraction, room: int) -> int:
    """The most collateral minor units whose value (rounded down) is at most ``room``."""
    # value_of(q) <= room  <=>  q * num < (room + 1) * den
    return ((room + 1) * price.denominator - 1) // price.numerator


def _lot_or_wait(
    p: Position, ladder: Ladder, kind: ActionKind, holdings: tuple[Holding, ...], sold: list[int]
) -> Action | None:
    """The cut sale, or None when it is dust or leaves a dust position (see
    :func:`capped_lot`)."""
    lot_value = sum(value_of(q, h.price) for q, h in zip(sold, holdings, strict=True))
    if not any(sold) or lot_value < max(ladder.min_leftover, 1):
        return None
    lot = _sale_of(kind, holdings, sold, p.debt)
    left_debt = p.debt - lot.repaid
    left_value = sum(value_of(h.quantity - q, h.price) for q, h in zip(sold, holdings, strict=True))
    if left_value < ladder.min_leftover or 0 < left_debt < ladder.min_leftover:
        return None
    return lot


def capped_lot(p: Position, ladder: Ladder, action: Action, room: int) -> Action | None:
    """The part of ``action``'s sale (of the line's own asset) that fits under a liquidation
    cap with ``room`` debt minor units of market value left (Maker Liquidations 2.0
    ``dog.bark``'s partial lot), or None when the sale must wait for a later tick.

    The lot is the most collateral whose value (rounded down, :func:`value_of`) is at most
    ``room``, and less than the whole sale: collateral minor units rounded **down**, so the cap
    is never passed. Its proceeds repay debt like any sale (surplus to the user past the debt;
    no shortfall, since collateral remains). It waits when the lot would be worth less than the
    dust minimum (the ladder's ``min_leftover``, like Maker's ``dust``: no sliver of a sale), or
    when what remains would be a dust position: collateral value under ``min_leftover``, or
    debt left but under it."""
    if room < 0 or p.price <= 0:
        return None
    holdings = p.holdings(ladder)
    sold = [min(_fits(p.price, room), action.sold - 1)] + [0] * (len(holdings) - 1)
    if sold[0] <= 0:
        return None
    return _lot_or_wait(p, ladder, action.kind, holdings, sold)


def capped_sale(
    p: Position,
    ladder: Ladder,
    action: Action,
    global_room: int | None,
    asset_rooms: dict[str, int | None],
) -> Action | None:
    """``action`` when its sale fits the rooms a tick's liquidation caps leave (``None``:
    unbounded), else the part that fits, or None when it must wait (:func:`capped_lot`'s rule).

    The lots are taken in :func:`sale_order`; each counts against the global room and its
    asset's; the first that does not fit whole is cut to the most that fits (and less than
    itself), and the later ones are dropped."""
    holdings = p.holdings(ladder)
    sold = [action.sold] + [0] * (len(holdings) - 1)
    index = {h.asset: i for i, h in enumerate(holdings)}
    for lot in action.lots:
        sold[index[lot.asset]] = lot.quantity
    order = [i for i in sale_order(holdings) if sold[i] > 0]
    taken_total = 0
    taken: dict[str, int] = {}
    for n, j in enumerate(order):
        h = holdings[j]
        asset_room = asset_rooms.get(h.asset)
        rooms = []
        if global_room is not None:
            rooms.append(global_room - taken_total)
        if asset_room is not None:
            rooms.append(asset_room - taken.get(h.asset, 0))
        worth = value_of(sold[j], h.price)
        if not rooms or worth <= min(rooms):
            taken_total += worth
            taken[h.asset] = taken.get(h.asset, 0) + worth
            continue
        room = min(rooms)
        sold[j] = max(min(_fits(h.price, room), sold[j] - 1), 0) if room >= 0 else 0
        for k in order[n + 1 :]:
            sold[k] = 0
        return _lot_or_wait(p, ladder, action.kind, holdings, sold)
    return action


def decide(p: Position, ladder: Ladder) -> Action:
    """The one action for this tick, in order: nothing on a frozen price; full past ``full``
    (or with no collateral value left); the user's stop-loss (every holding at its stop is sold
    whole); the cushion once over margin call; a partial over ``partial``; a margin-call notice
    once per crossing. Thresholds are weighted over the holdings (:func:`capacity`)."""
    if p.frozen:
        return NO_ACTION
    holdings = p.holdings(ladder)
    value = p.value()
    if p.debt > 0 and (
        value == 0 or crossed_capacity(p.debt, capacity(holdings, lambda lad: lad.full_bps))
    ):
        return full_sale(p, ladder)
    stops = [
        h.quantity if h.stop_loss is not None and h.quantity > 0 and h.price <= h.stop_loss else 0
        for h in holdings
    ]
    if any(stops):
        return _sale_of(ActionKind.STOP_LOSS, holdings, stops, p.debt)
    if not crossed_capacity(p.debt, capacity(holdings, lambda lad: lad.margin_call_bps)):
        return NO_ACTION
    if p.cushion > 0:
        used = min(p.cushion, p.debt)
        return Action(ActionKind.CUSHION, repaid=used)
    if crossed_capacity(p.debt, capacity(holdings, lambda lad: lad.partial_bps)):
        return partial_sale(p, ladder)
    return NO_ACTION if p.notified else Action(ActionKind.NOTIFY)
