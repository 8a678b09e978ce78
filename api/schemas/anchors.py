"""Bodies of the anchor and proof endpoints.

A proof bundle is the self-contained JSON ``valueos verify BUNDLE.json`` checks
(``core.proofs``, ``chain.evm.verify``): bytes are 0x-prefixed lowercase hex; leaf amounts and
balances are *integer* strings in minor units (exactly what the leaf hashes), not decimal
strings in the asset's scale."""

from __future__ import annotations

from msgspec import Struct


class HeaderRead(Struct):
    ledger_id: str
    epoch: int
    prev_header: str
    entries_root: str
    balances_root: str
    first_seq: int
    last_seq: int
    leaf_count: int
    header_hash: str


class AnchorRead(HeaderRead):
    balance_count: int
    #: SEALED (roots computed), then the anchor job's states up to FINALIZED
    status: str
    chain_id: int | None
    contract_address: str | None
    tx_hash: str | None
    block_number: int | None
    block_hash: str | None


class AnchorListRead(Struct):
    anchors: list[AnchorRead]
    #: pass as ``before_epoch`` for the next (older) page; null at the end
    next_cursor: int | None


class BundleAnchorRead(Struct):
    status: str
    chain_id: int | None
    contract_address: str | None
    tx_hash: str | None
    block_number: int | None
    block_hash: str | None


class LeafRead(Struct, omit_defaults=True):
    #: 1 = ENTRY, 2 = BALANCE
    kind: int
    ledger_id: str
    epoch: int
    seq: int
    account_id: int
    asset_code: str
    #: entry leaves
    operation_id: int | None = None
    amount: str | None = None
    balance_after: str | None = None
    #: balance leaves
    balance: str | None = None
    #: balance leaves of epochs sealed in leaf format 2: the account's entries so far and
    #: their running hash (absent on format-1 epochs)
    entry_count: int | None = None
    entries_hash: str | None = None


class ProofBundleRead(Struct):
    version: int
    #: "entry" or "balance"
    kind: str
    leaf: LeafRead
    leaf_hash: str
    proof: list[str]
    header: HeaderRead
    anchor: BundleAnchorRead


class HistoryEntryLeafRead(Struct):
    """One entry of the account (its ENTRY leaf with the bundle's account and asset)."""

    epoch: int
    seq: int
    operation_id: int
    amount: str
    balance_after: str


class HistoryBundleRead(Struct, rename={"start": "from"}):
    """An account's entries between two epochs and the balance proofs at both ends."""

    version: int
    #: "history"
    kind: str
    account_id: int
    asset_code: str
    from_epoch: int
    to_epoch: int
    #: the balance bundle at ``from_epoch``; null: the entries start at the account's first
    start: ProofBundleRead | None
    to: ProofBundleRead
    entries: list[HistoryEntryLeafRead]
