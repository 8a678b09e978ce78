"""Bodies of the policy endpoints and of the dry run.

Policy documents are the core's own format (``core.policy.rules``; amounts in them are integer
minor units) and are served as a JSON schema at ``GET /api/v1/policies/schema``. Dry-run
amounts are decimal strings in the asset's scale like everywhere else in the API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from msgspec import Struct

from api.schemas.common import AssetCode, Create, Reason
from api.schemas.credits import PaymentCreate
from core.types import OperationType


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
    #: null (and ``balance_after`` too) for an account the caller may not read
    account_id: int | None
    asset: str
    #: signed: negative for a debit
    amount: str
    balance_after: str | None


class DryRunRead(Struct):
    allowed: bool
    operation_type: OperationType
    denial: DenialRead | None
    #: the policy versions that allow it
    policies: list[PolicyVersionRead]
    fees: list[FeeRead]
    #: the entries it would post, fee legs included (empty when denied)
    postings: list[PostingRead]
