"""Bodies of the account and wallet endpoints: balances, history, balance as of a point."""

from __future__ import annotations

import uuid
from datetime import datetime

from msgspec import Struct

from core.types import AccountKind, AccountStatus, OperationType


class BalanceRead(Struct):
    account_id: int
    asset: str
    posted: str
    pending: str
    available: str


class AccountRead(Struct):
    id: int
    asset: str
    kind: AccountKind
    owner_id: uuid.UUID | None
    status: AccountStatus
    floor: str | None
    created_at: datetime
    balance: BalanceRead


class CompartmentRead(Struct):
    account_id: int
    kind: AccountKind
    posted: str
    pending: str
    available: str


class WalletRead(Struct):
    asset: str
    scale: int
    compartments: list[CompartmentRead]
    #: posted across compartments
    total: str


class HistoryEntryRead(Struct):
    seq: int
    operation_id: int
    operation_type: OperationType
    amount: str
    balance_after: str
    epoch: int
    created_at: datetime


class HistoryRead(Struct):
    account_id: int
    asset: str
    entries: list[HistoryEntryRead]
    #: pass as ``cursor`` for the next (older) page; null at the end
    next_cursor: int | None


class BalanceAtRead(Struct):
    account_id: int
    asset: str
    posted: str
    seq: int | None = None
    at: datetime | None = None
