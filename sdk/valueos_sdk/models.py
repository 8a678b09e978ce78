"""Typed models of the API's bodies (the subset the SDK uses), written against the OpenAPI
document; ``tests/unit/test_sdk_models.py`` fails when a model and the server's schema of the
same name drift apart (a field added, removed, renamed or retyped).

Amounts are decimal strings in the asset's scale, exactly as the API sends them; statuses
and kinds are plain strings (the server's enums)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from msgspec import Meta, Struct, field

#: a time with its zone (the server always sends one)
Timestamp = Annotated[datetime, Meta(tz=True)]


class Model(Struct, kw_only=True):
    """Base of every response model: unknown fields are ignored (a newer server may add
    some), missing ones are an error."""


class MeRead(Model):
    user_id: uuid.UUID
    role: str
    scopes: list[str]
    client: str


class TokenRead(Model):
    access_token: str
    token_type: str
    expires_in: int


class BalanceRead(Model):
    account_id: int
    asset: str
    posted: str
    pending: str
    available: str


class AccountRead(Model):
    id: int
    asset: str
    kind: str
    owner_id: uuid.UUID | None
    status: str
    floor: str | None
    created_at: Timestamp
    balance: BalanceRead


class CompartmentRead(Model):
    account_id: int
    kind: str
    posted: str
    pending: str
    available: str


class WalletRead(Model):
    asset: str
    scale: int
    compartments: list[CompartmentRead]
    total: str


class HistoryEntryRead(Model):
    seq: int
    operation_id: int
    operation_type: str
    amount: str
    balance_after: str
    epoch: int
    created_at: Timestamp


class HistoryRead(Model):
    account_id: int
    asset: str
    entries: list[HistoryEntryRead]
    next_cursor: int | None


class EntryRead(Model):
    seq: int
    #: None (and ``balance_after`` too) for an account the caller may not read
    account_id: int | None
    asset: str
    #: signed: negative for a debit
    amount: str
    balance_after: str | None


class OperationRead(Model):
    id: int
    type: str
    epoch: int | None
    created_at: Timestamp
    entries: list[EntryRead]
    reverses: int | None = None
    reversed_by: int | None = None
    hold_id: int | None = None
    reason: str | None = None
    transaction_id: uuid.UUID | None = None


class IssuerRead(Model):
    public_key: str
    algorithm: str = "Ed25519"


class DeviceRead(Model):
    id: int
    public_key: str
    name: str
    #: ACTIVE or REVOKED
    status: str
    created_at: Timestamp
    revoked_at: Timestamp | None = None


class AllowanceRead(Model):
    id: int
    user_id: uuid.UUID
    device_id: int
    device_key: str
    account_id: int
    asset: str
    amount: str
    claimed: str
    expires_at: Timestamp
    hold_id: int | None
    status: str
    final_cumulative: int | None
    certificate: str
    created_at: Timestamp


class AllowancePageRead(Model):
    allowances: list[AllowanceRead]
    next_cursor: int | None


class VoucherOutcomeRead(Model):
    index: int
    status: str
    allowance_id: int | None
    counter: int | None
    asset: str | None
    amount: str | None
    code: str | None
    message: str | None
    operation_id: int | None
    replayed: bool


class RedeemRead(Model):
    results: list[VoucherOutcomeRead]
    honoured: int
    refused: int


class VoucherRead(Model):
    id: int
    allowance_id: int
    payer_id: uuid.UUID
    payee_id: uuid.UUID
    counter: int
    asset: str
    amount: str
    cumulative: str
    status: str
    code: str | None
    operation_id: int | None
    created_at: Timestamp
    updated_at: Timestamp


class VoucherPageRead(Model):
    vouchers: list[VoucherRead]
    next_cursor: int | None


# -- proof bundles: bytes are 0x-prefixed hex, leaf amounts and balances integer strings in
# minor units (what the leaves hash); checked by :mod:`valueos_sdk.proofs`


class HeaderRead(Model):
    ledger_id: str
    epoch: int
    prev_header: str
    entries_root: str
    balances_root: str
    first_seq: int
    last_seq: int
    leaf_count: int
    header_hash: str


class BundleAnchorRead(Model):
    status: str
    chain_id: int | None
    contract_address: str | None
    tx_hash: str | None
    block_number: int | None
    block_hash: str | None


class LeafRead(Model, omit_defaults=True):
    #: 1 = ENTRY, 2 = BALANCE
    kind: int
    ledger_id: str
    epoch: int
    seq: int
    account_id: int
    asset_code: str
    operation_id: int | None = None
    amount: str | None = None
    balance_after: str | None = None
    balance: str | None = None
    #: balance leaves of epochs sealed in leaf format 2 (absent on format 1)
    entry_count: int | None = None
    entries_hash: str | None = None


class ProofBundleRead(Model):
    version: int
    #: "entry" or "balance"
    kind: str
    leaf: LeafRead
    leaf_hash: str
    proof: list[str]
    header: HeaderRead
    anchor: BundleAnchorRead


class HistoryEntryLeafRead(Model):
    epoch: int
    seq: int
    operation_id: int
    amount: str
    balance_after: str


class HistoryBundleRead(Model):
    version: int
    #: "history"
    kind: str
    account_id: int
    asset_code: str
    from_epoch: int
    to_epoch: int
    #: the balance bundle at ``from_epoch``; None: the entries start at the account's first
    start: ProofBundleRead | None = field(name="from")
    to: ProofBundleRead
    entries: list[HistoryEntryLeafRead]


#: every model checked against the server's OpenAPI components of the same name
ALL: tuple[type[Model], ...] = (
    MeRead, TokenRead, BalanceRead, AccountRead, CompartmentRead, WalletRead, HistoryEntryRead,
    HistoryRead, EntryRead, OperationRead, IssuerRead, DeviceRead, AllowanceRead, AllowancePageRead,
    VoucherOutcomeRead, RedeemRead, VoucherRead, VoucherPageRead, HeaderRead, BundleAnchorRead,
    LeafRead, ProofBundleRead, HistoryEntryLeafRead, HistoryBundleRead,
)  # fmt: skip
