"""Bodies of the P2P request endpoints."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from msgspec import Meta, Struct

from api.schemas.common import Amount, AssetCode, Create, Reason
from api.schemas.credits import OperationRead
from core.p2p import MAX_MEMO, P2PStatus

P2PMemo = Annotated[str, Meta(max_length=MAX_MEMO)]


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
