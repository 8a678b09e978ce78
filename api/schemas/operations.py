"""Bodies of the operation endpoints: reversals and adjustments."""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta

from api.schemas.common import Amount, Create, Id, Reason
from core.types import Side


class ReverseCreate(Create):
    reason: Reason


class AdjustmentLeg(Create):
    account_id: Id
    side: Side
    amount: Amount


class AdjustmentCreate(Create):
    entries: Annotated[list[AdjustmentLeg], Meta(min_length=2, max_length=20)]
    reason: Reason
