"""Pure posting rules: validation and the in-memory balance state of one batch.

No I/O here. The repository loads the locked balance rows into a ``BalanceBook``,
the planner applies commands to it, and only what the book accepted is written.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from core.errors import (
    AccountFrozen,
    AmountOverflow,
    AssetMismatch,
    InsufficientFunds,
    InvalidAmount,
    UnbalancedOperation,
    UnknownAccount,
)
from core.money import INT64_MAX, INT64_MIN, check_int64
from core.types import AccountStatus, EntrySpec

_ACTIVE = AccountStatus.ACTIVE


def validate_entries(entries: Sequence[EntrySpec]) -> None:
    """Shape rules that need no database: two accounts at least, positive amounts, sum to
    zero per asset."""
    if len(entries) < 2:
        raise UnbalancedOperation("an operation needs at least two entries")
    if len({entry.account_id for entry in entries}) < 2:
        raise UnbalancedOperation("an operation moves value between at least two accounts")
    totals: dict[str, int] = {}
    for index, entry in enumerate(entries):
        check_int64(entry.amount, f"entries[{index}].amount")
        if entry.amount <= 0:
            raise InvalidAmount(
                f"entries[{index}].amount must be positive, got {entry.amount}",
                field=f"entries[{index}].amount",
            )
        totals[entry.asset] = totals.get(entry.asset, 0) + entry.signed
    unbalanced = {asset: total for asset, total in totals.items() if total != 0}
    if unbalanced:
        raise UnbalancedOperation(
            "debits and credits differ for " + ", ".join(sorted(unbalanced)),
            imbalance={asset: str(total) for asset, total in sorted(unbalanced.items())},
        )


@dataclass(slots=True)
class AccountState:
    """A locked balance row as the batch sees it."""

    id: int
    asset: str
    floor: int | None  # None: unbounded
    status: AccountStatus
    posted: int
    pending: int

    @property
    def available(self) -> int:
        return self.posted - self.pending


class BalanceBook:
    """Balances of the accounts one batch touches, with checkpoint/rollback.

    Every mutation is checked first and applied only when all its checks pass, so a
    failed command leaves the book as it was. ``checkpoint``/``rollback`` undo whole
    commands (all-or-nothing linked groups).
    """

    def __init__(self, accounts: Iterable[AccountState]) -> None:
        self.accounts = {a.id: a for a in accounts}
        self._undo: list[tuple[int, int, int]] = []
        self.touched: set[int] = set()

    def get(self, account_id: int) -> AccountState:
        try:
            return self.accounts[account_id]
        except KeyError:
            raise UnknownAccount(
                f"account {account_id} does not exist", account_id=account_id
            ) from None

    def usable(self, account_id: int, asset: str) -> AccountState:
        account = self.get(account_id)
        if account.asset != asset:
            raise AssetMismatch(
                f"account {account_id} holds {account.asset}, not {asset}",
                account_id=account_id,
                expected=account.asset,
                got=asset,
            )
        if account.status is not AccountStatus.ACTIVE:
            raise AccountFrozen(f"account {account_id} is frozen", account_id=account_id)
        return account

    def _remember(self, account: AccountState) -> None:
        self._undo.append((account.id, account.posted, account.pending))
        self.touched.add(account.id)

    def checkpoint(self) -> int:
        return len(self._undo)

    def rollback(self, mark: int) -> None:
        while len(self._undo) > mark:
            account_id, posted, pending = self._undo.pop()
            account = self.accounts[account_id]
            account.posted, account.pending = posted, pending

    def apply(self, entries: Sequence[EntrySpec]) -> list[int]:
        """Post balanced ``entries``; return each entry's ``balance_after`` in order."""
        net: dict[int, int] = {}
        for entry in entries:
            self.usable(entry.account_id, entry.asset)
            net[entry.account_id] = net.get(entry.account_id, 0) + entry.signed
        for account_id, delta in net.items():
            account = self.accounts[account_id]
            after = account.posted + delta
            if not INT64_MIN <= after <= INT64_MAX:
                raise AmountOverflow(
                    f"balance of account {account_id} would overflow", account_id=account_id
                )
            if delta < 0 and account.floor is not None and after - account.pending < account.floor:
                raise InsufficientFunds(
                    f"account {account_id} has {account.available} available, needs {-delta}",
                    account_id=account_id,
                    available=str(account.available),
                    needed=str(-delta),
                )
        for account_id in net:
            self._remember(self.accounts[account_id])
        balances_after = []
        for entry in entries:
            account = self.accounts[entry.account_id]
            account.posted += entry.signed
            balances_after.append(account.posted)
        return balances_after

    def move(self, debit: int, credit: int, asset: str, amount: int) -> tuple[int, int] | None:
        """Fast path of ``apply`` for a plain transfer of ``amount`` (> 0, int64) between
        two distinct accounts: return (debit's, credit's) ``balance_after``, or ``None``
        without touching anything when any rule of ``apply`` would refuse it (the caller
        then takes the general path, which raises the precise error)."""
        accounts = self.accounts
        d = accounts.get(debit)
        c = accounts.get(credit)
        if (
            d is None
            or c is None
            or d.asset != asset
            or c.asset != asset
            or d.status is not _ACTIVE
            or c.status is not _ACTIVE
        ):
            return None
        d_after = d.posted - amount
        c_after = c.posted + amount
        if (
            d_after < INT64_MIN
            or c_after > INT64_MAX
            or (d.floor is not None and d_after - d.pending < d.floor)
        ):
            return None
        self._undo.append((debit, d.posted, d.pending))
        self._undo.append((credit, c.posted, c.pending))
        self.touched.add(debit)
        self.touched.add(credit)
        d.posted = d_after
        c.posted = c_after
        return d_after, c_after

    def reserve(self, account_id: int, asset: str, amount: int) -> None:
        """Count ``amount`` against the account's available balance (a pending hold)."""
        account = self.usable(account_id, asset)
        if account.floor is not None and account.available - amount < account.floor:
            raise InsufficientFunds(
                f"account {account_id} has {account.available} available, needs {amount}",
                account_id=account_id,
                available=str(account.available),
                needed=str(amount),
            )
        if account.pending + amount > INT64_MAX:
            raise AmountOverflow(f"pending of account {account_id} would overflow")
        self._remember(account)
        account.pending += amount

    def release(self, account_id: int, amount: int) -> None:
        """Give back a reservation made by ``reserve`` (always allowed, even when frozen)."""
        account = self.get(account_id)
        self._remember(account)
        account.pending -= amount
