"""Types every resource's bodies share: amounts, codes, ids, reasons, the base of request bodies.

Amounts cross the API as decimal strings in the asset's scale ("12.50"), never floats; the
pattern is documented in the OpenAPI schema and the scale is checked against the asset (too
many decimals: 422 INVALID_AMOUNT naming the field). Text fields refuse NUL characters
(PostgreSQL cannot store them)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from msgspec import Meta, Struct

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


Memo = Annotated[str, Meta(max_length=500, pattern=r"^[^\x00]*$")]


Id = Annotated[int, Meta(ge=1, le=2**63 - 1)]


class Create(Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of request bodies: unknown fields are an error, not silently dropped."""


class SweepRead(Struct):
    expired: int


AwareTime = Annotated[datetime, Meta(tz=True)]


#: at least one visible character, no NUL (PostgreSQL text refuses it)
Reason = Annotated[str, Meta(min_length=1, max_length=1000, pattern=r"^[^\x00]*\S[^\x00]*$")]


Label = Annotated[str, Meta(min_length=1, max_length=200, pattern=r"^[^\x00]+$")]


class ReasonCreate(Create):
    """A state change that needs only its reason (revoke, activate)."""

    reason: Reason
