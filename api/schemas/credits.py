"""Bodies of the credit endpoints (mint, transfer, move, burn) and the operation they answer."""

from __future__ import annotations

import uuid
from datetime import datetime

from msgspec import Struct

from api.schemas.common import Amount, AssetCode, Create, Id, Memo, Reason
from core.payments import PaymentOrder
from core.types import AccountKind, OperationType


class MintCreate(Create):
    user_id: uuid.UUID
    asset: AssetCode
    amount: Amount
    memo: Memo | None = None


class PaymentCreate(Create):
    """A payment from one of the caller's AVAILABLE accounts to another user."""

    from_account_id: Id
    to_user_id: uuid.UUID
    amount: Amount
    memo: Memo | None = None

    def order(self) -> PaymentOrder:
        return PaymentOrder(self.from_account_id, self.to_user_id, self.amount, self.memo)


class TransferCreate(PaymentCreate):
    pass


class MoveCreate(Create):
    """Between compartments of one user: AVAILABLE→LOCKED (the user or staff),
    LOCKED→AVAILABLE (ops/admin, with a reason)."""

    asset: AssetCode
    from_kind: AccountKind
    to_kind: AccountKind
    amount: Amount
    user_id: uuid.UUID | None = None
    reason: Reason | None = None


class BurnCreate(Create):
    account_id: Id
    amount: Amount
    reason: Reason | None = None


class EntryRead(Struct):
    seq: int
    #: null (and ``balance_after`` too) for an account the caller may not read
    account_id: int | None
    asset: str
    #: signed: negative for a debit
    amount: str
    balance_after: str | None


class OperationRead(Struct):
    id: int
    type: OperationType
    epoch: int | None
    created_at: datetime
    entries: list[EntryRead]
    reverses: int | None = None
    reversed_by: int | None = None
    hold_id: int | None = None
    reason: str | None = None
    transaction_id: uuid.UUID | None = None
