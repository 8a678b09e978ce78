"""Bodies of the forensic ledger view."""

from __future__ import annotations

import uuid
from datetime import datetime

from msgspec import Struct

from core.types import AccountKind, OperationType


class ForensicEntryRead(Struct):
    seq: int
    operation_id: int
    operation_type: OperationType
    account_id: int
    account_kind: AccountKind
    vault_name: str | None
    asset: str
    #: signed: a credit is positive, a debit negative
    amount: str
    balance_after: str
    #: the other accounts of the same operation
    counterparties: list[int]
    epoch: int
    created_at: datetime


class ForensicPageRead(Struct):
    user_id: uuid.UUID
    entries: list[ForensicEntryRead]
    #: pass as ``cursor`` for the next (older) page; null at the end
    next_cursor: int | None
