"""Proof bundles and the anchor list, as JSON-ready dicts (for the HTTP API and the CLI).

A bundle is self-contained: the leaf fields, the leaf hash, the Merkle proof, the epoch header
fields (enough to recompute the header hash and its link to the previous epoch), and where it
is anchored (chain id, contract address, transaction hash, block, status). ``valueos verify``
(:mod:`chain.evm.verify`) checks one offline and, with ``--rpc``, against the contract.

JSON conventions: bytes are ``0x``-prefixed lowercase hex; amounts and balances are decimal
*strings* (int64 minor units do not fit a JavaScript number); other integers are numbers.

Proofs are served from the stored tree levels (``valueos_merkle_proof``: a key lookup and one
32-byte slice per level), never by rebuilding a tree. The leaf itself is re-read from the
ledger, so a row changed after sealing yields a bundle that does not verify; with
``check=True`` (the default) the server notices first and raises :class:`LedgerIntegrityError`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import asyncpg

from core.anchors import ANCHOR_SELECT, AnchorRecord, anchor_from_row
from core.epochs import (
    BALANCE_TREE,
    COMMITMENT,
    ENTRY_TREE,
    EpochRoots,
    raw_connection,
    roots_from_row,
)
from core.errors import (
    EpochNotSealed,
    HistoryTooLong,
    LedgerIntegrityError,
    NotFound,
    UnknownAccount,
    UnknownEntry,
    UnknownEpoch,
    ValidationError,
)
from merkle.leaves import BalanceLeaf, BalanceLeafV1, EntryLeaf, fold_entries
from merkle.tree import EMPTY_ROOT, verify

if TYPE_CHECKING:
    from core.ledger import Ledger

__all__ = [
    "BUNDLE_VERSION",
    "anchor_view",
    "balance_proof_bundle",
    "entry_account",
    "entry_proof_bundle",
    "history_bundle",
    "list_anchors",
]

BUNDLE_VERSION = 1
MAX_PAGE = 500
#: the most entries one history bundle carries (ask for a shorter range beyond)
MAX_HISTORY = 10_000


def _hex(value: bytes | None) -> str | None:
    return None if value is None else "0x" + value.hex()


def anchor_view(record: AnchorRecord) -> dict[str, Any]:
    """One anchor as listed: epoch, roots, header, chain coordinates and status."""
    return {
        **record.roots.header_fields(),
        "balance_count": record.roots.balance_count,
        "status": record.status,
        "chain_id": record.chain_id,
        "contract_address": record.contract_address,
        "tx_hash": _hex(record.tx_hash),
        "block_number": record.block_number,
        "block_hash": _hex(record.block_hash),
    }


async def list_anchors(
    ledger: Ledger, *, limit: int = 100, before_epoch: int | None = None
) -> list[dict[str, Any]]:
    """Sealed epochs with their anchors, newest first; page with ``before_epoch``."""
    if not 1 <= limit <= MAX_PAGE:
        raise ValidationError(f"limit must be between 1 and {MAX_PAGE}", limit=limit)
    async with raw_connection(ledger.engine) as conn:
        rows = await conn.fetch(
            ANCHOR_SELECT + "WHERE $1::bigint IS NULL OR a.epoch < $1 "
            "ORDER BY a.epoch DESC LIMIT $2",
            before_epoch,
            limit,
        )
    return [anchor_view(anchor_from_row(r)) for r in rows]


async def entry_account(ledger: Ledger, seq: int) -> int | None:
    """The account of the entry ``seq`` (None: no such entry) -- the API's ownership check
    runs before the bundle is built, so a stranger learns nothing about the entry's epoch."""
    async with raw_connection(ledger.engine) as conn:
        found: int | None = await conn.fetchval(
            "SELECT account_id FROM ledger_entries WHERE seq = $1", seq
        )
    return found


async def _sealed(conn: asyncpg.Connection, epoch: int) -> tuple[EpochRoots, dict[str, Any]]:
    row = await conn.fetchrow(ANCHOR_SELECT + "WHERE r.epoch = $1", epoch)
    if row is None:
        status = await conn.fetchval("SELECT status FROM epochs WHERE id = $1", epoch)
        if status is None:
            raise UnknownEpoch(f"epoch {epoch} does not exist", epoch=epoch)
        raise EpochNotSealed(
            f"epoch {epoch} is {'open' if status == 'OPEN' else 'sealed but not hashed yet'}",
            epoch=epoch,
        )
    record = anchor_from_row(row)
    return roots_from_row(row), {
        "status": record.status,
        "chain_id": record.chain_id,
        "contract_address": record.contract_address,
        "tx_hash": _hex(record.tx_hash),
        "block_number": record.block_number,
        "block_hash": _hex(record.block_hash),
    }


async def _proof(
    conn: asyncpg.Connection, epoch: int, tree: int, key: int
) -> tuple[bytes, list[bytes]] | None:
    row = await conn.fetchrow(
        "SELECT leaf, proof FROM valueos_merkle_proof($1, $2::smallint, $3)", epoch, tree, key
    )
    if row is None:
        return None
    proof = bytes(row["proof"])
    return bytes(row["leaf"]), [proof[i : i + 32] for i in range(0, len(proof), 32)]


def _bundle(
    kind: str,
    leaf: dict[str, Any],
    leaf_hash: bytes,
    proof: list[bytes],
    roots: EpochRoots,
    anchor: dict[str, Any],
) -> dict[str, Any]:
    return {
        "version": BUNDLE_VERSION,
        "kind": kind,
        "leaf": leaf,
        "leaf_hash": _hex(leaf_hash),
        "proof": [_hex(p) for p in proof],
        "header": roots.header_fields(),
        "anchor": anchor,
    }


def _check(
    check: bool, root: bytes, leaf_hash: bytes, stored: bytes, proof: list[bytes], what: str
) -> None:
    if check and (stored != leaf_hash or not verify(root, leaf_hash, proof)):
        raise LedgerIntegrityError(f"{what} no longer matches the sealed root")


async def entry_proof_bundle(ledger: Ledger, seq: int, *, check: bool = True) -> dict[str, Any]:
    """The proof bundle of the entry ``seq`` against its epoch's ``entriesRoot``.

    Raises UNKNOWN_ENTRY (404), EPOCH_NOT_SEALED (409) while its epoch is open or not hashed
    yet, LEDGER_INTEGRITY (500) when a sealed tree holds the seq but its row is gone, when a
    row inside a sealed epoch's seq range names another epoch or is missing from the sealed
    tree (an inserted row), and (only with ``check``) if the entry changed since sealing.
    """
    async with raw_connection(ledger.engine) as conn:
        row = await conn.fetchrow(
            "SELECT seq, operation_id, account_id, asset, amount, balance_after, epoch "
            "FROM ledger_entries WHERE seq = $1",
            seq,
        )
        sealed_in = await conn.fetchval(
            "SELECT min(id) FROM epochs WHERE status = 'SEALED' AND last_seq >= $1", seq
        )
        if row is None:
            if sealed_in is not None and await _proof(conn, sealed_in, ENTRY_TREE, seq):
                raise LedgerIntegrityError(
                    f"entry {seq} is in the sealed tree of epoch {sealed_in} but its row is gone",
                    seq=seq, epoch=sealed_in,
                )  # fmt: skip
            raise UnknownEntry(f"entry {seq} does not exist", seq=seq)
        if sealed_in is not None and row["epoch"] != sealed_in:
            raise LedgerIntegrityError(
                f"entry {seq} says epoch {row['epoch']} but lies in the seq range of sealed "
                f"epoch {sealed_in}",
                seq=seq, epoch=sealed_in,
            )  # fmt: skip
        roots, anchor = await _sealed(conn, row["epoch"])
        found = await _proof(conn, roots.epoch, ENTRY_TREE, seq)
    if found is None:
        raise LedgerIntegrityError(f"entry {seq} is missing from the sealed tree", seq=seq)
    leaf = EntryLeaf(
        roots.ledger_id, roots.epoch, seq, row["operation_id"], row["account_id"], row["asset"],
        row["amount"], row["balance_after"],
    )  # fmt: skip
    leaf_hash = leaf.hash()
    stored, proof = found
    _check(check, roots.entries_root, leaf_hash, stored, proof, f"entry {seq}")
    fields = {
        "kind": leaf.KIND,
        "ledger_id": _hex(leaf.ledger_id),
        "epoch": leaf.epoch,
        "seq": leaf.seq,
        "operation_id": leaf.operation_id,
        "account_id": leaf.account_id,
        "asset_code": leaf.asset_code,
        "amount": str(leaf.amount),
        "balance_after": str(leaf.balance_after),
    }
    return _bundle("entry", fields, leaf_hash, proof, roots, anchor)


async def balance_proof_bundle(
    ledger: Ledger, account_id: int, epoch: int, *, check: bool = True
) -> dict[str, Any]:
    """The proof bundle of ``account_id``'s balance at the end of ``epoch`` (``balancesRoot``):
    its balance, last seq, entry count and the running hash of its entries (epochs sealed in
    leaf format 1, before migration 0018, have neither count nor hash).

    Raises UNKNOWN_ACCOUNT / UNKNOWN_EPOCH / NOT_FOUND (404: the account had no entry by the
    end of the epoch, so it has no leaf), EPOCH_NOT_SEALED (409), LEDGER_INTEGRITY (500).
    """
    async with raw_connection(ledger.engine) as conn:
        asset = await conn.fetchval("SELECT asset FROM accounts WHERE id = $1", account_id)
        if asset is None:
            raise UnknownAccount(f"account {account_id} does not exist", account_id=account_id)
        roots, anchor = await _sealed(conn, epoch)
        row = await conn.fetchrow(
            "SELECT seq, balance_after FROM ledger_entries WHERE account_id = $1 AND seq <= $2 "
            "ORDER BY seq DESC LIMIT 1",
            account_id,
            roots.cut_seq,
        )
        commitment = await conn.fetchrow(COMMITMENT, account_id, epoch)
        found = await _proof(conn, epoch, BALANCE_TREE, account_id)
    if row is None:
        raise NotFound(
            f"account {account_id} had no entry by the end of epoch {epoch}: balance 0, no leaf",
            account_id=account_id,
            epoch=epoch,
        )
    if found is None:
        raise LedgerIntegrityError(
            f"the balance of account {account_id} is missing from the sealed tree",
            account_id=account_id,
            epoch=epoch,
        )
    fields: dict[str, Any]
    leaf: BalanceLeaf | BalanceLeafV1
    if roots.balance_leaf_format == 1:
        leaf = BalanceLeafV1(
            roots.ledger_id, epoch, row["seq"], account_id, asset, row["balance_after"]
        )
    else:
        count, folded = (0, EMPTY_ROOT) if commitment is None else tuple(commitment)
        leaf = BalanceLeaf(
            roots.ledger_id, epoch, row["seq"], account_id, asset, row["balance_after"], count,
            bytes(folded),
        )  # fmt: skip
    leaf_hash = leaf.hash()
    stored, proof = found
    _check(check, roots.balances_root, leaf_hash, stored, proof, f"balance of {account_id}")
    fields = {
        "kind": leaf.KIND,
        "ledger_id": _hex(leaf.ledger_id),
        "epoch": leaf.epoch,
        "seq": leaf.seq,
        "account_id": leaf.account_id,
        "asset_code": leaf.asset_code,
        "balance": str(leaf.balance),
    }
    if isinstance(leaf, BalanceLeaf):
        fields["entry_count"] = leaf.entry_count
        fields["entries_hash"] = _hex(leaf.entries_hash)
    return _bundle("balance", fields, leaf_hash, proof, roots, anchor)


async def history_bundle(
    ledger: Ledger, account_id: int, from_epoch: int, to_epoch: int, *, check: bool = True
) -> dict[str, Any]:
    """An account's entries after epoch ``from_epoch`` up to the end of ``to_epoch``, with the
    balance proof bundles at both ends (``from`` is null when the account had no entry by the
    end of ``from_epoch``, or ``from_epoch`` is 0: the entries then start at its first).

    Folding the listed entries (their ENTRY leaf hashes) from ``from``'s (entry count,
    entries hash) must give exactly ``to``'s: ``valueos verify`` checks it, so an omitted,
    added, reordered or altered entry is caught. Both ends must be sealed in leaf format 2.

    Raises VALIDATION_ERROR (422: ``from_epoch >= to_epoch``, an end in leaf format 1),
    HISTORY_TOO_LONG (422, ``details.limit``: more than :data:`MAX_HISTORY` entries), plus
    the errors of :func:`balance_proof_bundle`.
    """
    if not 0 <= from_epoch < to_epoch:
        raise ValidationError(
            "from_epoch must be smaller than to_epoch", from_epoch=from_epoch, to_epoch=to_epoch
        )
    to = await balance_proof_bundle(ledger, account_id, to_epoch, check=check)
    start: dict[str, Any] | None = None
    if from_epoch > 0:
        try:
            start = await balance_proof_bundle(ledger, account_id, from_epoch, check=check)
        except NotFound:
            start = None  # no entry by then: the history starts at the account's first
    for end in (to, start):
        if end is not None and "entry_count" not in end["leaf"]:
            raise ValidationError(
                f"epoch {end['leaf']['epoch']} was sealed before balance leaves carried an "
                "entry count and hash: choose a later from_epoch (0 = from the first entry)",
                epoch=end["leaf"]["epoch"],
            )
    lo = start["leaf"]["seq"] if start is not None else 0
    hi = to["leaf"]["seq"]
    async with raw_connection(ledger.engine) as conn:
        rows = await conn.fetch(
            "SELECT epoch, seq, operation_id, amount, balance_after FROM ledger_entries "
            "WHERE account_id = $1 AND seq > $2 AND seq <= $3 ORDER BY seq LIMIT $4",
            account_id, lo, hi, MAX_HISTORY + 1,
        )  # fmt: skip
    if len(rows) > MAX_HISTORY:
        raise HistoryTooLong(
            f"more than {MAX_HISTORY} entries between epochs {from_epoch} and {to_epoch}: ask "
            "for a shorter range (pieces between sealed epochs)",
            limit=MAX_HISTORY,
        )
    ledger_id = bytes.fromhex(to["header"]["ledger_id"][2:])
    asset = to["leaf"]["asset_code"]
    leaves = [EntryLeaf(ledger_id, r[0], r[1], r[2], account_id, asset, r[3], r[4]) for r in rows]
    if check:
        count = start["leaf"]["entry_count"] if start is not None else 0
        folded = bytes.fromhex(start["leaf"]["entries_hash"][2:]) if start else EMPTY_ROOT
        if fold_entries(count, folded, [x.hash() for x in leaves]) != (
            to["leaf"]["entry_count"], bytes.fromhex(to["leaf"]["entries_hash"][2:])
        ):  # fmt: skip
            raise LedgerIntegrityError(
                f"the entries of account {account_id} between epochs {from_epoch} and "
                f"{to_epoch} as the rows hold them do not fold to its anchored entries hash",
                account_id=account_id, epoch=to_epoch,
            )  # fmt: skip
    return {
        "version": BUNDLE_VERSION,
        "kind": "history",
        "account_id": account_id,
        "asset_code": asset,
        "from_epoch": from_epoch,
        "to_epoch": to_epoch,
        "from": start,
        "to": to,
        "entries": [
            {
                "epoch": x.epoch,
                "seq": x.seq,
                "operation_id": x.operation_id,
                "amount": str(x.amount),
                "balance_after": str(x.balance_after),
            }
            for x in leaves
        ],
    }
