"""Bodies of the vault endpoints."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from msgspec import Meta, Struct

from api.schemas.common import Amount, AssetCode, Create, Id
from api.schemas.p2p import P2PMemo
from core.types import AccountStatus
from core.vaults import MAX_NAME, VaultRole


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
