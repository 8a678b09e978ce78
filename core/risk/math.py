"""The credit-line risk model as pure functions: no I/O, no clock, no float on a money path.

Units. A position owes ``debt`` minor units of the debt asset (e.g. USD cents) and holds
``collateral`` minor units of one collateral asset (e.g. wETH wei). A :class:`Price` is a feed's
integer answer with its decimals (USD per one whole collateral unit, as Chainlink reports it);
:meth:`Price.per_minor` turns it into the exact rational "debt minor units per collateral minor
unit" every computation here uses. Ratios (LTV thresholds, penalty, haircut) are integer basis
points (1 bp = 1/10,000).

Rounding, each in one place and in one direction, never more than one minor unit:

* a collateral value is rounded **down** (:func:`value_of`): the user's collateral counts for at
  most one debt minor unit less than its exact worth;
* a credit limit is rounded **down** (:func:`credit_limit`), for the same reason;
* sale proceeds are rounded **down** (:func:`proceeds_of`): the user receives at most one debt
  minor unit less than ``quantity * price * (1 - penalty)``;
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
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, localcontext
from enum import StrEnum
from fractions import Fraction

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
    hf_above = value * ladder.partial_bps * BPS > ladder.close_factor_hf_bps * debt * BPS
    big = debt >= ladder.close_factor_min and value >= ladder.close_factor_min
    return ladder.close_factor_bps if hf_above and big else BPS


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
class Position:
    debt: int  # minor units owed (> 0 means owed)
    collateral: int  # collateral minor units held
    price: Fraction  # debt minor units per collateral minor unit
    cushion: int = 0  # yield cushion, debt minor units
    stop_loss: Fraction | None = None  # sell everything when price <= this
    notified: bool = False  # a margin call is already out for this crossing
    frozen: bool = False  # the asset's price cannot be trusted now


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


NO_ACTION = Action(ActionKind.NONE)


def _sale(kind: ActionKind, sold: int, p: Position, ladder: Ladder) -> Action:
    proceeds = proceeds_of(sold, p.price, ladder.penalty_bps)
    repaid = min(proceeds, max(p.debt, 0))
    shortfall = 0
    if sold >= p.collateral and repaid < p.debt and kind is not ActionKind.PARTIAL:
        shortfall = p.debt - repaid
    return Action(kind, sold, proceeds, repaid, proceeds - repaid, shortfall)


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


def full_sale(p: Position, ladder: Ladder, kind: ActionKind = ActionKind.FULL) -> Action:
    """Sell the fewest collateral units whose proceeds cover the whole debt (all of it if they
    cannot: the rest is the shortfall)."""
    if p.debt <= 0:
        return _sale(kind, 0, p, ladder)
    discounted = p.price * (BPS - ladder.penalty_bps) / BPS
    hint = int(Fraction(p.debt) / discounted) if discounted > 0 else p.collateral
    sold = _smallest(
        min(hint, p.collateral),
        p.collateral,
        lambda q: proceeds_of(q, p.price, ladder.penalty_bps) >= p.debt,
    )
    return _sale(kind, sold, p, ladder)


def partial_sale(p: Position, ladder: Ladder) -> Action:
    """Sell the fewest units that bring LTV back to ``target`` (at most the close factor's
    share of the debt); a full sale when the leftover would be under ``min_leftover`` or the
    target cannot be reached with the collateral held."""
    value = value_of(p.collateral, p.price)
    t = Fraction(ladder.target_bps, BPS)
    discounted = p.price * (BPS - ladder.penalty_bps) / BPS

    def restored(q: int) -> bool:
        repaid = min(proceeds_of(q, p.price, ladder.penalty_bps), p.debt)
        left_value = value_of(p.collateral - q, p.price)
        return not crossed(p.debt - repaid, left_value, ladder.target_bps)

    exact = (p.debt - t * value) / (discounted - t * p.price)  # > 0 over partial
    if exact >= p.collateral or not restored(p.collateral):
        return full_sale(p, ladder)
    sold = _smallest(int(exact), p.collateral, restored)
    max_repay = (p.debt * close_factor_bps(p.debt, value, ladder)) // BPS
    if proceeds_of(sold, p.price, ladder.penalty_bps) > max_repay:
        # the largest sale whose proceeds stay within the close factor
        over = _smallest(0, sold, lambda q: proceeds_of(q, p.price, ladder.penalty_bps) > max_repay)
        sold = over - 1 if proceeds_of(over, p.price, ladder.penalty_bps) > max_repay else over
    action = _sale(ActionKind.PARTIAL, sold, p, ladder)
    left_debt = p.debt - action.repaid
    left_value = value_of(p.collateral - sold, p.price)
    if sold == 0 or left_debt < ladder.min_leftover or left_value < ladder.min_leftover:
        return full_sale(p, ladder)
    return action


def capped_lot(p: Position, ladder: Ladder, action: Action, room: int) -> Action | None:
    """The part of ``action``'s sale that fits under a liquidation cap with ``room`` debt minor
    units of market value left (Maker Liquidations 2.0 ``dog.bark``'s partial lot), or None
    when the sale must wait for a later tick.

    The lot is the most collateral whose value (rounded down, :func:`value_of`) is at most
    ``room``: collateral minor units rounded **down**, so the cap is never passed. Its proceeds
    repay debt like any sale (surplus to the user past the debt; no shortfall, since collateral
    remains). It waits when the lot would be worth less than the dust minimum (the ladder's
    ``min_leftover``, like Maker's ``dust``: no sliver of a sale), or when what remains would be
    a dust position: collateral value under ``min_leftover``, or debt left but under it."""
    if room < 0 or p.price <= 0:
        return None
    # value_of(q) <= room  <=>  q * num < (room + 1) * den
    fits = ((room + 1) * p.price.denominator - 1) // p.price.numerator
    sold = min(fits, action.sold - 1)
    if sold <= 0 or value_of(sold, p.price) < max(ladder.min_leftover, 1):
        return None
    lot = _sale(action.kind, sold, p, ladder)
    left_debt = p.debt - lot.repaid
    if value_of(p.collateral - sold, p.price) < ladder.min_leftover or (
        0 < left_debt < ladder.min_leftover
    ):
        return None
    return lot


def decide(p: Position, ladder: Ladder) -> Action:
    """The one action for this tick, in order: nothing on a frozen price; full past ``full``
    (or with no collateral value left); the user's stop-loss; the cushion once over margin
    call; a partial over ``partial``; a margin-call notice once per crossing."""
    if p.frozen:
        return NO_ACTION
    value = value_of(p.collateral, p.price)
    if p.debt > 0 and (value == 0 or crossed(p.debt, value, ladder.full_bps)):
        return full_sale(p, ladder)
    if p.stop_loss is not None and p.collateral > 0 and p.price <= p.stop_loss:
        return _sale(ActionKind.STOP_LOSS, p.collateral, p, ladder)
    if not crossed(p.debt, value, ladder.margin_call_bps):
        return NO_ACTION
    if p.cushion > 0:
        used = min(p.cushion, p.debt)
        return Action(ActionKind.CUSHION, repaid=used)
    if crossed(p.debt, value, ladder.partial_bps):
        return partial_sale(p, ladder)
    return NO_ACTION if p.notified else Action(ActionKind.NOTIFY)
