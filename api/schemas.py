"""Request (``*Create``) and response (``*Read``) bodies: msgspec Structs.

Amounts cross the API as decimal strings in the asset's scale ("12.50"), never floats;
the pattern below is documented in the OpenAPI schema and the scale is checked against
the asset (too many decimals: 422 INVALID_AMOUNT naming the field)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from msgspec import Meta, Struct

from core.payments import PaymentOrder
from core.types import AccountKind, AccountStatus, AssetKind, HoldStatus, OperationType, Role, Side

AMOUNT_PATTERN = r"^(0|[1-9][0-9]{0,19})(\.[0-9]{1,18})?$"
Amount = Annotated[
    str,
    Meta(
        pattern=AMOUNT_PATTERN,
        description="decimal string in the asset's scale",
        examples=["12.50"],
    ),
]
SignedAmount = Annotated[str, Meta(pattern=r"^-?" + AMOUNT_PATTERN[1:])]
AssetCode = Annotated[str, Meta(pattern=r"^[A-Z][A-Z0-9_]{0,31}$", examples=["MILES"])]
Reason = Annotated[str, Meta(min_length=1, max_length=1000, pattern=r"\S")]
Memo = Annotated[str, Meta(max_length=500, pattern=r"^[^\x00]*$")]
Id = Annotated[int, Meta(ge=1, le=2**63 - 1)]


class Create(Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of request bodies: unknown fields are an error, not silently dropped."""


# -- assets -----------------------------------------------------------------------------
class AssetCreate(Create):
    code: AssetCode
    name: Annotated[str, Meta(min_length=1, max_length=200)]
    scale: Annotated[int, Meta(ge=0, le=18)]
    kind: AssetKind


class AssetRead(Struct):
    code: str
    name: str
    scale: int
    kind: AssetKind


# -- users, keys, tokens ------------------------------------------------------------------
class UserCreate(Create):
    role: Role = Role.USER
    email: Annotated[str, Meta(max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")] | None = None


class UserRead(Struct):
    id: uuid.UUID
    email: str | None
    role: Role
    status: str
    created_at: datetime


class MeRead(Struct):
    user_id: uuid.UUID
    role: Role
    scopes: list[str]
    client: str


class ApiKeyCreate(Create):
    user_id: uuid.UUID
    name: Annotated[str, Meta(min_length=1, max_length=100)]
    scopes: Annotated[list[str], Meta(min_length=1, max_length=8)]
    role: Role | None = None
    expires_at: datetime | None = None


class ApiKeyRead(Struct):
    id: str
    user_id: uuid.UUID
    name: str
    role: Role
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    #: the key itself, shown once at creation (null on an idempotent replay)
    key: str | None = None


class TokenRead(Struct):
    access_token: str
    token_type: str
    expires_in: int


# -- accounts and wallets -----------------------------------------------------------------
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


# -- credits --------------------------------------------------------------------------------
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
    account_id: int
    asset: str
    amount: str
    balance_after: str


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


# -- holds ------------------------------------------------------------------------------------
class HoldCreate(PaymentCreate):
    #: seconds until the hold expires (default 900, at most 30 days)
    expires_in: Annotated[int, Meta(ge=1, le=30 * 86400)] = 900


class CaptureCreate(Create):
    #: omitted: capture the whole remaining amount
    amount: Amount | None = None


class VoidCreate(Create):
    reason: Reason | None = None


class HoldRead(Struct):
    id: int
    status: HoldStatus
    source_account_id: int
    destination_account_id: int
    asset: str
    amount: str
    remaining: str
    expires_at: datetime


class SweepRead(Struct):
    expired: int


# -- operations, adjustments --------------------------------------------------------------
class ReverseCreate(Create):
    reason: Reason


class AdjustmentLeg(Create):
    account_id: Id
    side: Side
    amount: Amount


class AdjustmentCreate(Create):
    entries: Annotated[list[AdjustmentLeg], Meta(min_length=2, max_length=20)]
    reason: Reason


# -- deposits and sagas -----------------------------------------------------------------------
class DepositCreate(Create):
    """The provider's notification: a deposit for a user, credited into BLOCKED."""

    user_id: uuid.UUID
    asset: AssetCode
    amount: Amount
    reference: Annotated[str, Meta(min_length=1, max_length=200, pattern=r"\S")]


class ReleaseCreate(Create):
    reason: Reason
    #: omitted: release the whole deposit
    amount: Amount | None = None


class SagaOperationRead(Struct):
    id: int
    type: str
    status: str


class TransactionRead(Struct):
    id: uuid.UUID
    owner_id: uuid.UUID | None
    type: str
    status: str
    external_reference: str | None
    created_at: datetime
    operations: list[SagaOperationRead]


class DepositRead(Struct):
    transaction: TransactionRead
    operation: OperationRead


# -- public ---------------------------------------------------------------------------------
class HealthRead(Struct):
    status: str


class ReadyRead(Struct):
    status: str
    database: str
    schema_revision: str | None
    expected_revision: str | None
