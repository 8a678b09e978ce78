"""Bodies of the compliance (attestations) and policy endpoints, and of the dry run.

Policy documents are the core's own format (``core.policy``; amounts in them are integer
minor units) and are served as a JSON schema at ``GET /api/v1/policies/schema``. Dry-run
amounts are decimal strings in the asset's scale like everywhere else in the API.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from msgspec import Meta, Struct

from api.schemas import AssetCode, Create, PaymentCreate
from core.types import OperationType

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
AwareTime = Annotated[datetime, Meta(tz=True)]
#: like ``api.schemas.Reason``, and without NUL characters (PostgreSQL text refuses them)
Reason = Annotated[str, Meta(min_length=1, max_length=1000, pattern=r"^[^\x00]*\S[^\x00]*$")]
Label = Annotated[str, Meta(min_length=1, max_length=200, pattern=r"^[^\x00]+$")]


# -- attestations -----------------------------------------------------------------------------
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


class ReasonCreate(Create):
    """A state change that needs only its reason (revoke, activate)."""

    reason: Reason


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


# -- policies ---------------------------------------------------------------------------------
class PolicyCreate(Create):
    asset: AssetCode
    operation_type: OperationType
    #: the policy document (see ``GET /api/v1/policies/schema``); amounts in minor units
    document: dict[str, Any]
    reason: Reason


class PolicyRetire(Create):
    asset: AssetCode
    operation_type: OperationType
    reason: Reason


class PolicyRead(Struct):
    id: int
    asset: str
    operation_type: OperationType
    version: int
    #: DRAFT, ACTIVE or RETIRED
    status: str
    document: dict[str, Any]
    fee_account_id: int | None
    created_by: str
    created_at: datetime
    activated_at: datetime | None


# -- dry run ----------------------------------------------------------------------------------
class DryRunCreate(PaymentCreate):
    """A transfer as ``POST /api/v1/credits/transfer`` would post it (a USER: from their
    own AVAILABLE account; staff: from any AVAILABLE account)."""


class DenialRead(Struct):
    #: POLICY_DENIED, or the ledger's own refusal (INSUFFICIENT_FUNDS, ACCOUNT_FROZEN, ...)
    code: str
    message: str
    policy_id: int | None = None
    policy_version: int | None = None
    rule: str | None = None
    rule_kind: str | None = None


class PolicyVersionRead(Struct):
    policy_id: int
    version: int


class FeeRead(Struct):
    asset: str
    amount: str
    fee_account_id: int


class PostingRead(Struct):
    account_id: int
    asset: str
    #: signed: negative for a debit
    amount: str
    balance_after: str


class DryRunRead(Struct):
    allowed: bool
    operation_type: OperationType
    denial: DenialRead | None
    #: the policy versions that allow it
    policies: list[PolicyVersionRead]
    fees: list[FeeRead]
    #: the entries it would post, fee legs included (empty when denied)
    postings: list[PostingRead]
