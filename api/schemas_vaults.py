"""Request and response bodies of vaults, P2P requests and the forensic ledger view
(msgspec Structs; amounts as decimal strings in the asset's scale, as in ``api.schemas``)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from msgspec import Meta, Struct

from api.schemas import Amount, AssetCode, Create, Id, OperationRead, Reason
from core.p2p import MAX_MEMO, P2PStatus
from core.types import AccountKind, AccountStatus, OperationType
from core.vaults import MAX_NAME, VaultRole

P2PMemo = Annotated[str, Meta(max_length=MAX_MEMO)]


# -- vaults -----------------------------------------------------------------------------------
class VaultCreate(Create):
    asset: AssetCode
    name: Annotated[str, Meta(min_length=1, max_length=MAX_NAME, pattern=r"\S")]


class VaultRead(Struct):
    #: the vault's account id (also readable under /accounts/{id})
    id: int
    name: str
    asset: str
    owner_id: uuid.UUID
    #: the role of the user this view is for (the caller, or the user a staff reader named)
    role: VaultRole
    status: AccountStatus
    posted: str
    pending: str
    available: str
    created_at: datetime


class VaultMemberSet(Create):
    role: VaultRole


class VaultMemberRead(Struct):
    vault_id: int
    user_id: uuid.UUID
    role: VaultRole
    added_by: str
    created_at: datetime
    updated_at: datetime


class VaultMoveCreate(Create):
    """An atomic move between two accounts of the caller: their AVAILABLE compartment
    or a vault they own or contribute to (one ledger operation, INTERNAL_MOVE)."""

    from_account_id: Id
    to_account_id: Id
    asset: AssetCode
    amount: Amount
    memo: P2PMemo | None = None


# -- P2P requests -----------------------------------------------------------------------------
class P2PRequestCreate(Create):
    payer_id: uuid.UUID
    asset: AssetCode
    amount: Amount
    memo: P2PMemo | None = None
    #: seconds until the request expires (omitted: it never does; at most 90 days)
    expires_in: Annotated[int, Meta(ge=1, le=90 * 86400)] | None = None


class P2PCloseCreate(Create):
    reason: Reason | None = None


class P2PRequestRead(Struct):
    id: int
    requester_id: uuid.UUID
    payer_id: uuid.UUID
    asset: str
    amount: str
    memo: str | None
    status: P2PStatus
    expires_at: datetime | None
    #: the settlement's ledger operation (SETTLED only)
    operation_id: int | None
    created_at: datetime
    updated_at: datetime


class P2PPageRead(Struct):
    requests: list[P2PRequestRead]
    #: pass as ``cursor`` for the next (older) page; null at the end
    next_cursor: int | None


class P2PSettlementRead(Struct):
    request: P2PRequestRead
    operation: OperationRead


# -- forensic ledger view ---------------------------------------------------------------------
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
