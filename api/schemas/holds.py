"""Bodies of the hold endpoints (two-phase transfers)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from msgspec import Meta, Struct

from api.schemas.common import Amount, Create, Reason
from api.schemas.credits import PaymentCreate
from core.types import HoldStatus


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
