import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.errors import AmountOverflow, InvalidAmount
from core.money import INT64_MAX, check_int64, format_amount, parse_amount

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "scale", "units"),
    [("12.50", 2, 1250), ("0", 2, 0), ("7", 0, 7), ("-3.1", 2, -310), ("0.000001", 6, 1)],
)
def test_parse_amount_exact(text: str, scale: int, units: int) -> None:
    assert parse_amount(text, scale) == units


@pytest.mark.parametrize("text", ["1.234", "1e3", "NaN", " 1", "1.", ".5", "01", "1,5", ""])
def test_parse_amount_rejects(text: str) -> None:
    with pytest.raises(InvalidAmount):
        parse_amount(text, 2)


def test_overflow_is_a_clear_error() -> None:
    with pytest.raises(AmountOverflow):
        parse_amount("92233720368547758.08", 2)
    with pytest.raises(AmountOverflow):
        check_int64(INT64_MAX + 1)
    with pytest.raises(InvalidAmount):
        check_int64(1.5)  # type: ignore[arg-type]


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1), st.integers(0, 18))
def test_format_parse_round_trip(units: int, scale: int) -> None:
    assert parse_amount(format_amount(units, scale), scale) == units
