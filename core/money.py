"""Exact money: integer minor units of an asset with a fixed scale. No float, ever."""

from __future__ import annotations

import re
from decimal import InvalidOperation

from core.errors import AmountOverflow, InvalidAmount

#: Amounts and balances are stored as PostgreSQL ``bigint``.
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
MAX_SCALE = 18

_DECIMAL_RE = re.compile(r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?$")


def check_int64(value: int, what: str = "amount") -> int:
    """Return ``value`` if it fits a signed 64-bit integer, else raise ``AmountOverflow``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidAmount(f"{what} must be an integer number of minor units", field=what)
    if not INT64_MIN <= value <= INT64_MAX:
        raise AmountOverflow(f"{what} {value} does not fit in 64 bits", field=what)
    return value


def parse_amount(text: str, scale: int, *, field: str = "amount") -> int:
    """Parse a decimal string ("12.50") in an asset's scale into minor units, exactly.

    Rejects floats' friends: exponents, NaN, spaces, more decimals than the scale.
    """
    if not isinstance(text, str) or not _DECIMAL_RE.match(text):
        raise InvalidAmount(f"{field} must be a decimal string such as '12.50'", field=field)
    whole, _, frac = text.lstrip("-").partition(".")
    if len(frac) > scale:
        raise InvalidAmount(
            f"{field} has {len(frac)} decimals but the asset allows {scale}", field=field
        )
    try:
        units = int(whole) * 10**scale + (int(frac.ljust(scale, "0")) if scale else 0)
    except (ValueError, InvalidOperation) as exc:  # pragma: no cover - regex guards this
        raise InvalidAmount(f"{field} is not a number", field=field) from exc
    return check_int64(-units if text.startswith("-") else units, field)


def format_amount(units: int, scale: int) -> str:
    """Minor units to the canonical decimal string with exactly ``scale`` decimals."""
    sign = "-" if units < 0 else ""
    units = abs(units)
    if scale == 0:
        return f"{sign}{units}"
    whole, frac = divmod(units, 10**scale)
    return f"{sign}{whole}.{frac:0{scale}d}"
