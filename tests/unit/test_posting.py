import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import (
    AccountFrozen,
    AmountOverflow,
    AssetMismatch,
    InsufficientFunds,
    InvalidAmount,
    LedgerError,
    UnbalancedOperation,
    UnknownAccount,
)
from core.money import INT64_MAX
from core.posting import AccountState, BalanceBook, validate_entries
from core.types import AccountStatus, EntrySpec, Side, transfer_legs

pytestmark = pytest.mark.unit


def book(*balances: tuple[int, int | None]) -> BalanceBook:
    return BalanceBook(
        AccountState(i, "PTS", floor, AccountStatus.ACTIVE, posted, 0)
        for i, (posted, floor) in enumerate(balances, start=1)
    )


def test_validate_rejects_unbalanced_zero_negative() -> None:
    with pytest.raises(UnbalancedOperation):
        validate_entries([EntrySpec(1, "PTS", 5, Side.DEBIT), EntrySpec(2, "PTS", 4, Side.CREDIT)])
    with pytest.raises(UnbalancedOperation):
        validate_entries([EntrySpec(1, "PTS", 5, Side.DEBIT)])
    with pytest.raises(InvalidAmount):
        validate_entries(transfer_legs(1, 2, "PTS", 0))
    with pytest.raises(InvalidAmount):
        validate_entries(transfer_legs(1, 2, "PTS", -5))
    # balanced per asset, not in total
    with pytest.raises(UnbalancedOperation):
        validate_entries([EntrySpec(1, "PTS", 5, Side.DEBIT), EntrySpec(2, "MIL", 5, Side.CREDIT)])
    validate_entries([*transfer_legs(1, 2, "PTS", 5), *transfer_legs(3, 4, "MIL", 7)])


def test_apply_checks_floor_asset_status_unknown() -> None:
    b = book((100, 0), (0, 0), (0, None))
    assert b.apply(transfer_legs(1, 2, "PTS", 100)) == [0, 100]
    with pytest.raises(InsufficientFunds):
        b.apply(transfer_legs(1, 2, "PTS", 1))
    assert b.apply(transfer_legs(3, 1, "PTS", 10**9)) == [-(10**9), 10**9]  # unbounded
    with pytest.raises(AssetMismatch):
        b.apply(transfer_legs(1, 2, "MIL", 1))
    with pytest.raises(UnknownAccount):
        b.apply(transfer_legs(1, 99, "PTS", 1))
    b.accounts[2].status = AccountStatus.FROZEN
    with pytest.raises(AccountFrozen):
        b.apply(transfer_legs(1, 2, "PTS", 1))


def test_credit_account_floor_is_a_limit() -> None:
    b = book((0, -500), (0, 0))
    b.apply(transfer_legs(1, 2, "PTS", 500))
    with pytest.raises(InsufficientFunds):
        b.apply(transfer_legs(1, 2, "PTS", 1))


def test_overflow_rejected() -> None:
    b = book((0, None), (INT64_MAX - 1, 0))
    with pytest.raises(AmountOverflow):
        b.apply(transfer_legs(1, 2, "PTS", 2))


def test_pending_reduces_available_and_rollback_restores() -> None:
    b = book((100, 0), (0, 0))
    mark = b.checkpoint()
    b.reserve(1, "PTS", 60)
    with pytest.raises(InsufficientFunds):
        b.apply(transfer_legs(1, 2, "PTS", 41))
    b.apply(transfer_legs(1, 2, "PTS", 40))
    b.rollback(mark)
    assert (b.accounts[1].posted, b.accounts[1].pending, b.accounts[2].posted) == (100, 0, 0)


@settings(max_examples=200)
@given(
    st.lists(
        st.tuples(st.integers(1, 5), st.integers(1, 5), st.integers(-5, 300), st.booleans()),
        max_size=60,
    )
)
def test_random_operations_keep_invariants(ops: list[tuple[int, int, int, bool]]) -> None:
    """Whatever is attempted, the total stays 0, floors hold, and a failure changes nothing."""
    b = book((0, None), (0, 0), (0, 0), (0, -100), (0, 0))
    for src, dst, amount, reserve in ops:
        before = {i: (a.posted, a.pending) for i, a in b.accounts.items()}
        try:
            if reserve:
                b.reserve(src, "PTS", amount) if amount > 0 else None
            else:
                legs = transfer_legs(src, dst, "PTS", amount)
                validate_entries(legs)
                b.apply(legs)
        except LedgerError:
            assert before == {i: (a.posted, a.pending) for i, a in b.accounts.items()}
        assert sum(a.posted for a in b.accounts.values()) == 0
        for a in b.accounts.values():
            assert a.floor is None or a.available >= a.floor
