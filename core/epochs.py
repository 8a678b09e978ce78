"""Epochs: sealing, the two Merkle trees of a sealed epoch, and its header chain.

Sealing (:func:`seal_open_epoch`)
    One short transaction: take the epoch advisory lock EXCLUSIVE. Every writer takes it SHARED
    before it reads the open epoch and holds it until it commits (``valueos_writer_epoch()``),
    so once the sealer holds it no transaction can still be adding to the open epoch E, and
    every transaction that waited behind the sealer reads E + 1. Mark E SEALED, open E + 1,
    commit. Nothing is hashed under the lock: E's entries are now frozen, and the trees are
    built afterwards (:func:`compute_roots`), so writers are blocked only for the flip.
    Consequence used below: every entry of E has a smaller seq than every entry of E + 1
    (a writer allocates its seqs while holding the shared lock).

Roots (:func:`compute_roots`, in epoch order, idempotent, resumable after a crash)
    * ``entriesRoot``: the OpenZeppelin StandardMerkleTree over one ENTRY leaf per entry of E.
    * ``balancesRoot``: one BALANCE leaf per account that has at least one entry with
      ``seq <= cut`` (cut = the last seq of the ledger at the end of E): its balance after
      its last such entry, and that entry's seq. An account that never had an entry has
      balance 0 and no leaf (its balance cannot be proven from this tree, only its absence
      from the ledger). Each leaf also carries the account's entry count and the running
      hash of its entries (:func:`merkle.leaves.fold_entries` over their ENTRY leaf hashes),
      folded like the balance: E - 1's (count, hash) plus E's entries. The accounts whose
      (count, hash) changed in E get a row in ``balance_commitments`` (migration 0018); a
      leaf of E reads the latest such row at or before E.
      The balances are *derived from the anchored past*, never re-read from history: the
      BALANCE leaves of E - 1 as the rows give them now must hash to E - 1's stored tree and
      root (else the rows were rewritten after sealing), then each entry of E is applied in
      seq order; every entry's ``balance_after`` must be the running balance, every operation
      must sum to zero per asset, and every cached balance must be the derived one plus the
      entries after E. Any disagreement is a :class:`LedgerIntegrityError` (an alarm, see
      :mod:`core.integrity`): nothing is stored, nothing is anchored.
    * leaf format: epochs sealed before migration 0018 keep their 7-word BALANCE leaves
      (``epoch_roots.balance_leaf_format = 1``, :class:`merkle.leaves.BalanceLeafV1`). The
      first epoch sealed on top of one is the only time the sealer reads history: it checks
      E - 1's balances in format 1 against E - 1's stored tree as usual, then folds every
      entry up to E - 1's cut, per account, into (count, hash) once, checking the running
      balances on the way, and stores a commitment row for every account at E.
    * header: ``keccak(abi.encode(ledgerId, E, prevHeader, entriesRoot, balancesRoot,
      firstSeq, lastSeq, leafCount))`` with ``prevHeader`` the header of E - 1 (32 zero bytes
      for epoch 1) and ``leafCount`` the number of ENTRY leaves.

Empty epoch
    An epoch without entries anchors ``entriesRoot = 0x00..00`` (:data:`merkle.tree.EMPTY_ROOT`),
    ``firstSeq = lastSeq = leafCount = 0``, and the balances tree at the unchanged cut (same
    balances, new epoch number in every leaf). It still extends the header chain. The worker
    does not seal an empty epoch on schedule unless ``VALUEOS_SEAL_EMPTY`` is set.

Layering
    core talks to no chain. It uses the pure hashing package :mod:`merkle` (keccak + ABI
    layouts, no I/O): the leaf layouts are shared byte for byte with the contract and the
    auditor's verifier, so there is one implementation. ``tests/unit/test_layering.py``
    enforces the package rules.

Storage: see ``core/migrations/versions/0002_epochs.py`` (levels per tree row, keys and
positions for the lookup, ``valueos_merkle_proof`` serving a proof in one call).
"""

from __future__ import annotations

import asyncio
import itertools
import struct
import sys
from array import array
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, cast

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from core.errors import EpochNotSealed, LedgerIntegrityError, UnknownEpoch
from merkle.leaves import (
    BALANCE_LEAF_FORMAT,
    BalanceLeaf,
    BalanceLeafV1,
    EntryLeaf,
    balance_tree,
    entry_tree,
    hash_entry_leaves,
    header_hash,
)
from merkle.tree import EMPTY_ROOT, StandardMerkleTree, keccak_256

__all__ = [
    "BALANCE_TREE",
    "ENTRY_TREE",
    "EPOCH_LOCK_KEY",
    "BuiltEpoch",
    "EpochRoots",
    "StoredTree",
    "build_epoch",
    "compute_pending_roots",
    "compute_roots",
    "get_roots",
    "open_epoch",
    "raw_connection",
    "roots_from_row",
    "seal_open_epoch",
    "tree_rows",
]

#: Key of the epoch advisory lock (same value as in migration 0001): writers shared, sealer
#: exclusive.
EPOCH_LOCK_KEY = 0x76616C75656F7331
#: ``epoch_trees.tree``: the leaf kind of the tree's leaves.
ENTRY_TREE = 1
BALANCE_TREE = 2


@asynccontextmanager
async def raw_connection(engine: AsyncEngine) -> AsyncIterator[asyncpg.Connection]:
    """A pooled asyncpg connection (bytea in and out as bytes, no SQLAlchemy layer)."""
    async with engine.connect() as sa_conn:
        raw = await sa_conn.get_raw_connection()
        conn: asyncpg.Connection = raw.driver_connection
        yield conn


# ------------------------------------------------------------------------------- sealing


async def open_epoch(engine: AsyncEngine) -> int:
    async with raw_connection(engine) as conn:
        epoch: int = await conn.fetchval("SELECT id FROM epochs WHERE status = 'OPEN'")
    return epoch


async def seal_open_epoch(engine: AsyncEngine, *, allow_empty: bool = True) -> int | None:
    """Seal the open epoch E and open E + 1 atomically; return E.

    With ``allow_empty=False`` an epoch without entries is left open and None is returned.
    """
    async with raw_connection(engine) as conn, conn.transaction():
        # waits for every writer of E to commit; later writers queue behind us and read E + 1
        await conn.execute("SELECT pg_advisory_xact_lock($1)", EPOCH_LOCK_KEY)
        row = await conn.fetchrow(
            "SELECT o.id, coalesce(s.last_seq, 0) AS sealed_seq FROM epochs o "
            "LEFT JOIN epochs s ON s.id = o.id - 1 WHERE o.status = 'OPEN' FOR UPDATE OF o"
        )
        epoch: int = row["id"]
        sealed_seq: int = row["sealed_seq"]
        # every entry of E has a seq above E - 1's last and no entry of E + 1 exists yet,
        # so E ends at the largest seq now (the insert trigger of 0008 enforces this)
        last_seq: int = await conn.fetchval("SELECT coalesce(max(seq), 0) FROM ledger_entries")
        allocated: int = await conn.fetchval(
            "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM ledger_seq"
        )
        if last_seq > allocated:  # the ledger never handed out this seq
            raise LedgerIntegrityError(
                f"an entry has seq {last_seq}, past the last seq the ledger allocated "
                f"({allocated}): a row written outside the ledger; epoch {epoch} not sealed",
                epoch=epoch,
            )
        last_seq = max(last_seq, sealed_seq)
        if not allow_empty and last_seq == sealed_seq:
            return None
        await conn.execute(
            "UPDATE epochs SET status = 'SEALED', sealed_at = clock_timestamp(), last_seq = $2 "
            "WHERE id = $1",
            epoch,
            last_seq,
        )
        await conn.execute("INSERT INTO epochs (id, status) VALUES ($1, 'OPEN')", epoch + 1)
    return epoch


# ------------------------------------------------------------------------------- pure part


@dataclass(frozen=True, slots=True)
class EpochRoots:
    """The header fields of a sealed epoch, its header hash and bookkeeping."""

    epoch: int
    ledger_id: bytes
    prev_header: bytes
    entries_root: bytes
    balances_root: bytes
    first_seq: int
    last_seq: int
    leaf_count: int
    balance_count: int
    cut_seq: int
    header: bytes
    balance_leaf_format: int = BALANCE_LEAF_FORMAT

    def header_fields(self) -> dict[str, Any]:
        """JSON-ready header fields (hex for bytes)."""
        return {
            "ledger_id": "0x" + self.ledger_id.hex(),
            "epoch": self.epoch,
            "prev_header": "0x" + self.prev_header.hex(),
            "entries_root": "0x" + self.entries_root.hex(),
            "balances_root": "0x" + self.balances_root.hex(),
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "leaf_count": self.leaf_count,
            "header_hash": "0x" + self.header.hex(),
        }


@dataclass(frozen=True, slots=True)
class StoredTree:
    """One tree as stored: the rows of the node array, leaf keys and leaf positions."""

    kind: int
    root: bytes
    leaf_count: int
    rows: list[bytes]
    keys: bytes
    positions: bytes


@dataclass(frozen=True, slots=True)
class BuiltEpoch:
    roots: EpochRoots
    entries: StoredTree
    balances: StoredTree


def tree_rows(tree: StandardMerkleTree) -> list[bytes]:
    """Split an OpenZeppelin node array into its rows: row d = positions [2^d - 1, 2^(d+1) - 1)."""
    packed, n = tree.packed_nodes(), max(2 * len(tree) - 1, 0)
    rows, start, width = [], 0, 1
    while start < n:
        rows.append(packed[32 * start : 32 * min(start + width, n)])
        start += width
        width *= 2
    return rows


def _stored(kind: int, tree: StandardMerkleTree, keys: list[int]) -> StoredTree:
    n = len(tree)
    positions = array("I", (tree.position(i) for i in range(n)))
    if sys.byteorder == "little":
        positions.byteswap()
    return StoredTree(
        kind=kind,
        root=tree.root,
        leaf_count=n,
        rows=tree_rows(tree),
        keys=struct.pack(f">{n}q", *keys),
        positions=positions.tobytes(),
    )


def build_epoch(
    *,
    ledger_id: bytes,
    epoch: int,
    prev_header: bytes,
    prev_cut: int,
    entries: Sequence[EntryLeaf],
    balances: Sequence[BalanceLeaf | BalanceLeafV1],
    entries_tree: StandardMerkleTree | None = None,
) -> BuiltEpoch:
    """Both trees and the header of ``epoch`` (pure). ``entries`` ascend by seq, ``balances``
    by account id; every leaf must carry ``ledger_id`` and ``epoch``. ``entries_tree``: the
    entries tree when the caller already built it (``entry_tree(entries)``)."""
    if any(a.seq >= b.seq for a, b in itertools.pairwise(entries)):
        raise ValueError("entry leaves must ascend by seq")
    if any(a.account_id >= b.account_id for a, b in itertools.pairwise(balances)):
        raise ValueError("balance leaves must ascend by account id")
    e_tree = entries_tree if entries_tree is not None else entry_tree(entries)
    b_tree = balance_tree(balances)
    first_seq = entries[0].seq if entries else 0
    last_seq = entries[-1].seq if entries else 0
    entries_root = e_tree.root if entries else EMPTY_ROOT
    header = header_hash(
        ledger_id, epoch, prev_header, entries_root, b_tree.root, first_seq, last_seq, len(entries)
    )
    roots = EpochRoots(
        epoch=epoch,
        ledger_id=ledger_id,
        prev_header=prev_header,
        entries_root=entries_root,
        balances_root=b_tree.root,
        first_seq=first_seq,
        last_seq=last_seq,
        leaf_count=len(entries),
        balance_count=len(balances),
        cut_seq=last_seq if entries else prev_cut,
        header=header,
        balance_leaf_format=balances[0].FORMAT if balances else BALANCE_LEAF_FORMAT,
    )
    return BuiltEpoch(
        roots,
        _stored(ENTRY_TREE, e_tree, [x.seq for x in entries]),
        _stored(BALANCE_TREE, b_tree, [x.account_id for x in balances]),
    )


# ------------------------------------------------------------------------------- roots


def roots_from_row(row: asyncpg.Record) -> EpochRoots:
    return EpochRoots(
        epoch=row["epoch"],
        ledger_id=bytes(row["ledger_id"]),
        prev_header=bytes(row["prev_header"]),
        entries_root=bytes(row["entries_root"]),
        balances_root=bytes(row["balances_root"]),
        first_seq=row["first_seq"],
        last_seq=row["last_seq"],
        leaf_count=row["leaf_count"],
        balance_count=row["balance_count"],
        cut_seq=row["cut_seq"],
        header=bytes(row["header"]),
        balance_leaf_format=row["balance_leaf_format"],
    )


async def get_roots(engine: AsyncEngine, epoch: int) -> EpochRoots | None:
    async with raw_connection(engine) as conn:
        row = await conn.fetchrow("SELECT * FROM epoch_roots WHERE epoch = $1", epoch)
    return roots_from_row(row) if row else None


#: the entries of an epoch are a seq range (migration 0008); the epoch column is checked
_ENTRIES = """
SELECT seq, operation_id, account_id, asset, amount, balance_after, epoch
FROM ledger_entries WHERE seq > $1 AND seq <= $2 ORDER BY seq
"""
_BALANCES = """
SELECT a.id, a.asset, le.seq, le.balance_after, c.entry_count, c.entries_hash
FROM accounts a
CROSS JOIN LATERAL (
    SELECT seq, balance_after FROM ledger_entries
    WHERE account_id = a.id AND seq <= $1 ORDER BY seq DESC LIMIT 1
) le
LEFT JOIN LATERAL (
    SELECT entry_count, entries_hash FROM balance_commitments
    WHERE account_id = a.id AND epoch <= $2 ORDER BY epoch DESC LIMIT 1
) c ON true
ORDER BY a.id
"""
#: one account's (count, running hash) at the end of an epoch (format 2 epochs)
COMMITMENT = """
SELECT entry_count, entries_hash FROM balance_commitments
WHERE account_id = $1 AND epoch <= $2 ORDER BY epoch DESC LIMIT 1
"""


async def epoch_bounds(conn: asyncpg.Connection, epoch: int) -> tuple[int, int]:
    """(last seq of epoch - 1, last seq of epoch): the epoch's entries are the seqs between."""
    bounds = await conn.fetchrow(
        "SELECT coalesce(p.last_seq, 0) AS lo, e.last_seq AS hi FROM epochs e "
        "LEFT JOIN epochs p ON p.id = e.id - 1 WHERE e.id = $1",
        epoch,
    )
    if bounds is None or bounds["hi"] is None:
        raise EpochNotSealed(f"epoch {epoch} is not sealed", epoch=epoch)
    return bounds["lo"], bounds["hi"]


async def load_entries(conn: asyncpg.Connection, ledger_id: bytes, epoch: int) -> list[EntryLeaf]:
    """The ENTRY leaves of sealed ``epoch`` as the rows hold them now (its seq range)."""
    lo, hi = await epoch_bounds(conn, epoch)
    rows = await conn.fetch(_ENTRIES, lo, hi)
    strays = [r[0] for r in rows if r[6] != epoch]
    if strays:  # the insert trigger makes this impossible; never build a tree over it
        raise LedgerIntegrityError(
            f"entries {strays[:5]} lie in the seq range of epoch {epoch} but not in it",
            epoch=epoch,
        )
    return [EntryLeaf(ledger_id, epoch, r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows]


async def balances_at(
    conn: asyncpg.Connection, ledger_id: bytes, epoch: int, cut: int
) -> list[BalanceLeaf]:
    """The BALANCE leaves of ``epoch`` (format 2) as the rows give them now: each account's
    ``balance_after`` at its last entry with ``seq <= cut``, and its latest (count, hash) in
    ``balance_commitments`` at or before ``epoch`` (none: 0 and zero bytes, which no honest
    leaf of an account with entries has)."""
    return [
        BalanceLeaf(
            ledger_id,
            epoch,
            r[2],
            r[0],
            r[1],
            r[3],
            r[4] or 0,
            bytes(r[5]) if r[5] is not None else EMPTY_ROOT,
        )
        for r in await conn.fetch(_BALANCES, cut, epoch)
    ]


async def balances_v1_at(
    conn: asyncpg.Connection, ledger_id: bytes, epoch: int, cut: int
) -> list[BalanceLeafV1]:
    """The format-1 BALANCE leaves of ``epoch`` (sealed before migration 0018)."""
    return [
        BalanceLeafV1(ledger_id, epoch, r[2], r[0], r[1], r[3])
        for r in await conn.fetch(_BALANCES, cut, epoch)
    ]


async def load_leaves(
    conn: asyncpg.Connection, ledger_id: bytes, epoch: int
) -> tuple[list[EntryLeaf], list[BalanceLeaf]]:
    """The leaves of sealed ``epoch`` as the database holds them now: its entries are the
    seqs after the previous epoch's ``last_seq`` up to its own, the balances are as of that
    last seq (read from the rows: the self-audit's and the tests' view, not the sealer's)."""
    entries = await load_entries(conn, ledger_id, epoch)
    _, hi = await epoch_bounds(conn, epoch)
    return entries, await balances_at(conn, ledger_id, epoch, hi)


#: a derived balance: (asset, seq of the account's last entry, balance, entry count, running
#: hash of the account's entries)
Running = dict[int, tuple[str, int, int, int, bytes]]


def apply_entries(
    running: Running, entries: Sequence[EntryLeaf], epoch: int, hashes: Sequence[bytes]
) -> None:
    """Apply ``entries`` (ascending seq; ``hashes`` their ENTRY leaf hashes) to ``running`` in
    place: balance, last seq, entry count and running hash (:func:`fold_entries`);
    LedgerIntegrityError at the first entry whose ``balance_after`` is not the running
    balance, or when an operation does not sum to zero per asset (pure)."""
    sums: dict[tuple[int, str], int] = {}
    k = keccak_256
    for e, leaf_hash in zip(entries, hashes, strict=True):
        asset, _, balance, count, folded = running.get(
            e.account_id, (e.asset_code, 0, 0, 0, EMPTY_ROOT)
        )
        if asset != e.asset_code:
            raise LedgerIntegrityError(
                f"entry {e.seq} of epoch {epoch} is in {e.asset_code}, account {e.account_id} "
                f"holds {asset}",
                epoch=epoch, seq=e.seq,
            )  # fmt: skip
        balance += e.amount
        if e.balance_after != balance:
            raise LedgerIntegrityError(
                f"entry {e.seq} of epoch {epoch}: balance_after {e.balance_after}, but account "
                f"{e.account_id}'s anchored balance plus its entries give {balance}",
                epoch=epoch, seq=e.seq, account_id=e.account_id,
            )  # fmt: skip
        running[e.account_id] = (asset, e.seq, balance, count + 1, k(folded + leaf_hash).digest())
        key = (e.operation_id, asset)
        sums[key] = sums.get(key, 0) + e.amount
    unbalanced = sorted(k for k, v in sums.items() if v != 0)
    if unbalanced:
        op, asset = unbalanced[0]
        raise LedgerIntegrityError(
            f"operation {op} of epoch {epoch} does not sum to zero in {asset} "
            f"({sums[unbalanced[0]]:+d})",
            epoch=epoch, operation_id=op,
        )  # fmt: skip


def running_leaves(running: Running, ledger_id: bytes, epoch: int) -> list[BalanceLeaf]:
    return [
        BalanceLeaf(ledger_id, epoch, seq, account, asset, balance, count, folded)
        for account, (asset, seq, balance, count, folded) in sorted(running.items())
    ]


def running_from(leaves: Sequence[BalanceLeaf]) -> Running:
    return {x.account_id: (x.asset_code, x.seq, x.balance, x.entry_count, x.entries_hash)
            for x in leaves}  # fmt: skip


async def stored_leaf_hashes(conn: asyncpg.Connection, epoch: int, tree: int) -> dict[int, bytes]:
    """key -> leaf hash of a stored tree (read from its levels, keys and positions)."""
    t = await conn.fetchrow(
        "SELECT leaf_count, keys, positions FROM epoch_trees WHERE epoch = $1 AND tree = $2",
        epoch,
        tree,
    )
    if t is None:
        return {}
    levels = await conn.fetch(
        "SELECT nodes FROM epoch_tree_levels WHERE epoch = $1 AND tree = $2 ORDER BY depth",
        epoch,
        tree,
    )
    nodes = b"".join(bytes(r[0]) for r in levels)
    n, keys, positions = t["leaf_count"], bytes(t["keys"]), bytes(t["positions"])
    out = {}
    for i, key in enumerate(struct.unpack(f">{n}q", keys)):
        pos = int.from_bytes(positions[4 * i : 4 * i + 4], "big")
        out[key] = nodes[32 * pos : 32 * pos + 32]
    return out


def first_difference(stored: dict[int, bytes], computed: dict[int, bytes]) -> int | None:
    """The smallest key whose leaf differs, is missing or is extra (None: the same leaves)."""
    keys = sorted(k for k in stored.keys() | computed.keys() if stored.get(k) != computed.get(k))
    return keys[0] if keys else None


async def checked_balances(
    conn: asyncpg.Connection, ledger_id: bytes, prev: asyncpg.Record
) -> Running:
    """The balances at the end of the sealed epoch ``prev`` (its epoch_roots row), read from
    the rows and checked leaf by leaf against its stored tree and its (anchored) root. For a
    format-1 ``prev`` the entry counts and running hashes are folded from genesis."""
    epoch = prev["epoch"]
    leaves: list[BalanceLeaf] | list[BalanceLeafV1]
    if prev["balance_leaf_format"] == 1:
        leaves = await balances_v1_at(conn, ledger_id, epoch, prev["cut_seq"])
    else:
        leaves = await balances_at(conn, ledger_id, epoch, prev["cut_seq"])
    tree = await asyncio.to_thread(balance_tree, leaves)
    stored_root = await conn.fetchval(
        "SELECT root FROM epoch_trees WHERE epoch = $1 AND tree = $2", epoch, BALANCE_TREE
    )
    if tree.root != bytes(prev["balances_root"]) or stored_root != tree.root:
        stored = await stored_leaf_hashes(conn, epoch, BALANCE_TREE)
        computed = {x.account_id: x.hash() for x in leaves}
        account = first_difference(stored, computed)
        where = (
            f"first differing leaf: account {account}"
            if account is not None
            else ("every leaf matches its stored tree, the root does not")
        )
        raise LedgerIntegrityError(
            f"the balances of epoch {epoch} as the rows hold them now do not hash to its "
            f"anchored balances root ({where}): rows were changed after sealing",
            epoch=epoch, account_id=account,
        )  # fmt: skip
    if prev["balance_leaf_format"] != 1:
        return running_from(cast("list[BalanceLeaf]", leaves))
    running = await fold_history(conn, ledger_id, epoch)
    for x in leaves:
        asset, seq, balance, _, _ = running.get(x.account_id, ("", 0, 0, 0, EMPTY_ROOT))
        if (asset, seq, balance) != (x.asset_code, x.seq, x.balance):
            raise LedgerIntegrityError(
                f"the entries up to epoch {epoch} give account {x.account_id} balance {balance} "
                f"at seq {seq}, its anchored leaf says {x.balance} at seq {x.seq}",
                epoch=epoch, account_id=x.account_id,
            )  # fmt: skip
    if len(running) != len(leaves):
        raise LedgerIntegrityError(
            f"the entries up to epoch {epoch} touch {len(running)} accounts, its anchored "
            f"balances tree has {len(leaves)}",
            epoch=epoch,
        )
    return running


async def fold_history(conn: asyncpg.Connection, ledger_id: bytes, last_epoch: int) -> Running:
    """Every account's running state folded from genesis over the entries of epochs
    1..``last_epoch`` as the rows hold them (epoch by epoch: an operation lies in one)."""
    running: Running = {}
    for epoch in range(1, last_epoch + 1):
        entries = await load_entries(conn, ledger_id, epoch)
        hashes = await asyncio.to_thread(hash_entry_leaves, entries)
        apply_entries(running, entries, epoch, hashes)
    return running


_CACHED_AT_CUT = """
SELECT b.account_id, b.posted - coalesce((
    SELECT sum(le.amount) FROM ledger_entries le WHERE le.account_id = b.account_id AND le.seq > $1
), 0)::bigint AS at_cut
FROM balances b
"""


async def check_cached(conn: asyncpg.Connection, running: Running, cut: int, epoch: int) -> None:
    """Every cached balance minus the entries after ``cut`` is the derived balance (one
    statement: one snapshot, whatever writers commit meanwhile)."""
    for account, at_cut in await conn.fetch(_CACHED_AT_CUT, cut):
        derived = running[account][2] if account in running else 0
        if at_cut != derived:
            raise LedgerIntegrityError(
                f"the cached balance of account {account} implies {at_cut} at the end of epoch "
                f"{epoch}, the anchored past and the entries give {derived}",
                epoch=epoch, account_id=account,
            )  # fmt: skip


async def compute_roots(engine: AsyncEngine, epoch: int, ledger_id: bytes) -> EpochRoots:
    """Build and store the trees and header of sealed ``epoch`` (its predecessor's first).

    Idempotent: returns the stored roots when they exist. Concurrent callers serialise on the
    epoch row. The stored rows are append-only.
    """
    async with raw_connection(engine) as conn, conn.transaction():
        status = await conn.fetchval("SELECT status FROM epochs WHERE id = $1 FOR UPDATE", epoch)
        if status is None:
            raise UnknownEpoch(f"epoch {epoch} does not exist", epoch=epoch)
        if status != "SEALED":
            raise EpochNotSealed(f"epoch {epoch} is still open", epoch=epoch)
        row = await conn.fetchrow("SELECT * FROM epoch_roots WHERE epoch = $1", epoch)
        if row is not None:
            return roots_from_row(row)
        prev_header, prev_cut = EMPTY_ROOT, 0
        prev: asyncpg.Record | None = None
        if epoch > 1:
            prev = await conn.fetchrow("SELECT * FROM epoch_roots WHERE epoch = $1", epoch - 1)
            if prev is None:
                raise EpochNotSealed(f"epoch {epoch - 1} has no roots yet", epoch=epoch - 1)
            if bytes(prev["ledger_id"]) != ledger_id:
                raise LedgerIntegrityError(
                    "the configured ledger id differs from the one already anchored", epoch=epoch
                )
            prev_header, prev_cut = bytes(prev["header"]), prev["cut_seq"]
        running: Running = {} if prev is None else await checked_balances(conn, ledger_id, prev)
        entries = await load_entries(conn, ledger_id, epoch)
        e_tree = await asyncio.to_thread(entry_tree, entries)
        apply_entries(running, entries, epoch, e_tree.leaf_hashes())
        await check_cached(conn, running, (await epoch_bounds(conn, epoch))[1], epoch)
        balances = running_leaves(running, ledger_id, epoch)
        built = await asyncio.to_thread(
            lambda: build_epoch(
                ledger_id=ledger_id,
                epoch=epoch,
                prev_header=prev_header,
                prev_cut=prev_cut,
                entries=entries,
                balances=balances,
                entries_tree=e_tree,
            )
        )
        # rows for the (count, hash) that changed in this epoch; every account's once on top
        # of a format-1 epoch (nothing stored before)
        everyone = prev is None or prev["balance_leaf_format"] == 1
        changed = running.keys() if everyone else {e.account_id for e in entries}
        commitments = [(a, epoch, running[a][3], running[a][4]) for a in sorted(changed)]
        await _store(conn, built, commitments)
        return built.roots


async def _store(
    conn: asyncpg.Connection,
    built: BuiltEpoch,
    commitments: Sequence[tuple[int, int, int, bytes]],
) -> None:
    r = built.roots
    await conn.execute(
        "INSERT INTO epoch_roots (epoch, ledger_id, prev_header, entries_root, balances_root, "
        "first_seq, last_seq, leaf_count, balance_count, cut_seq, header, balance_leaf_format) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        r.epoch, r.ledger_id, r.prev_header, r.entries_root, r.balances_root, r.first_seq,
        r.last_seq, r.leaf_count, r.balance_count, r.cut_seq, r.header, r.balance_leaf_format,
    )  # fmt: skip
    await conn.copy_records_to_table(
        "balance_commitments",
        records=commitments,
        columns=["account_id", "epoch", "entry_count", "entries_hash"],
    )
    for tree in (built.entries, built.balances):
        await conn.execute(
            "INSERT INTO epoch_trees (epoch, tree, leaf_count, root, keys, positions) "
            "VALUES ($1, $2, $3, $4, $5, $6)",
            r.epoch, tree.kind, tree.leaf_count, tree.root, tree.keys, tree.positions,
        )  # fmt: skip
        await conn.executemany(
            "INSERT INTO epoch_tree_levels (epoch, tree, depth, nodes) VALUES ($1, $2, $3, $4)",
            [(r.epoch, tree.kind, depth, nodes) for depth, nodes in enumerate(tree.rows)],
        )
    await conn.execute("INSERT INTO epoch_anchors (epoch) VALUES ($1)", r.epoch)
    await conn.execute(
        "INSERT INTO anchor_events (epoch, to_status, detail) VALUES ($1, 'SEALED', $2)",
        r.epoch,
        f"roots computed: {r.leaf_count} entries, {r.balance_count} balances",
    )


async def compute_pending_roots(engine: AsyncEngine, ledger_id: bytes) -> list[EpochRoots]:
    """Roots for every sealed epoch that has none yet, oldest first (crash recovery too)."""
    async with raw_connection(engine) as conn:
        pending = [
            r[0]
            for r in await conn.fetch(
                "SELECT e.id FROM epochs e LEFT JOIN epoch_roots r ON r.epoch = e.id "
                "WHERE e.status = 'SEALED' AND r.epoch IS NULL ORDER BY e.id"
            )
        ]
    return [await compute_roots(engine, epoch, ledger_id) for epoch in pending]
