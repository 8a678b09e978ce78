"""Bodies of the compliance endpoints (attestations and current claims)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from msgspec import Meta, Struct

from api.schemas.common import AwareTime, Create, Label, Reason

ClaimName = Annotated[
    str,
    Meta(
        pattern=r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$",
        max_length=64,
        examples=["kyc.level"],
    ),
]


ClaimValue = (
    bool
    | Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)]
    | Annotated[str, Meta(max_length=200, pattern=r"^[^\x00]*$")]
)


EvidenceHash = Annotated[
    str,
    Meta(
        pattern=r"^[0-9a-f]{16,128}$",
        description="lowercase hex digest of the evidence",
        examples=["9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"],
    ),
]


class AttestationCreate(Create):
    subject_id: uuid.UUID
    claim: ClaimName
    value: ClaimValue
    evidence_hash: EvidenceHash
    reason: Reason
    #: who vouches for the claim (default: the caller)
    issuer: Label | None = None
    expires_at: AwareTime | None = None
    #: when the check was made (default: now; never in the future)
    issued_at: AwareTime | None = None


class AttestationRead(Struct):
    id: int
    subject_id: uuid.UUID
    claim: str
    value: bool | int | str
    issuer: str
    evidence_hash: str
    issued_at: datetime
    expires_at: datetime | None
    issued_by: str
    revoked_at: datetime | None
    revoked_by: str | None
    revoke_reason: str | None


class ClaimsRead(Struct):
    user_id: uuid.UUID
    #: the claims that count now (per claim, the latest current attestation)
    claims: dict[str, bool | int | str]
