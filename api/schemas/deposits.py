"""Bodies of the deposit webhook and the compliance release, and of the sagas they start."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from msgspec import Meta, Struct

from api.schemas.common import Amount, AssetCode, Create, Reason
from api.schemas.credits import OperationRead


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
