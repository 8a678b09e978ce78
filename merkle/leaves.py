"""The ledger's Merkle leaves and epoch header: fixed ABI layouts shared with the contract.

These layouts are agreed with the contract author; changing one changes every root.

ENTRY leaf, one per journal entry posted in the epoch::

    abi.encode(uint8 kind = 1, bytes32 ledgerId, uint64 epoch, uint64 seq, uint64 operationId,
               uint64 accountId, bytes32 assetCode, int256 amount, int256 balanceAfter)

BALANCE leaf, one per (account, asset) balance at the end of the epoch::

    abi.encode(uint8 kind = 2, bytes32 ledgerId, uint64 epoch, uint64 seq, uint64 accountId,
               bytes32 assetCode, int256 balance, uint64 entryCount, bytes32 entriesHash)

    where seq is the seq of the account's last entry at or before the end of the epoch
    (0 if it has none), entryCount the number of the account's entries up to then (all
    epochs), and entriesHash the running hash of those entries in seq order::

        h_0 = 32 zero bytes;  h_i = keccak256(h_(i-1) ++ entryLeafHash_i)

    with entryLeafHash_i the leaf hash of the account's i-th ENTRY leaf (the hash that is in
    its epoch's entries tree). A holder of the account's entries between two anchored epochs A
    and B folds them from A's (entryCount, entriesHash) and must land exactly on B's: an entry
    omitted, added, reordered or altered changes the result (:func:`fold_entries`).

    Epochs sealed before this layout (``epoch_roots.balance_leaf_format`` 1) keep their
    BALANCE leaves in the earlier 7-word layout, :class:`BalanceLeafV1` (no entryCount, no
    entriesHash).

A leaf's hash is OpenZeppelin's standard leaf hash, ``keccak256(keccak256(encoding))``; the
trees are :class:`merkle.tree.StandardMerkleTree` (sorted leaves, sorted-pair node hashing).
The leading ``kind`` word keeps the two layouts apart: an entry can never pass for a balance.

``assetCode`` is the ASCII asset code ("USD", "MILES": uppercase letters, digits and ``_``, 1 to
32 characters) right-padded with zero bytes to 32 bytes. Amounts and balances are integers in
minor units and may be negative (two's complement int256).

Epoch header, hashed once (a single keccak, it is not a leaf)::

    keccak256(abi.encode(bytes32 ledgerId, uint64 epoch, bytes32 prevHeader, bytes32 entriesRoot,
                         bytes32 balancesRoot, uint64 firstSeq, uint64 lastSeq, uint64 leafCount))

The root of an empty tree (an epoch without entries) is defined as 32 zero bytes,
:data:`merkle.tree.EMPTY_ROOT`.

Every static ABI field is one 32-byte big-endian word, so these fixed tuples are encoded here
by hand with :mod:`struct` (the tests check the bytes against ``eth_abi.encode``), which is
several times faster than ``eth_abi`` when hashing a million leaves.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, cast

from merkle.tree import EMPTY_ROOT, StandardMerkleTree, keccak256, keccak_256

__all__ = [
    "BALANCE_KIND",
    "BALANCE_LEAF_FORMAT",
    "BALANCE_TYPES",
    "BALANCE_TYPES_V1",
    "EMPTY_ROOT",
    "ENTRY_KIND",
    "ENTRY_TYPES",
    "HEADER_TYPES",
    "BalanceLeaf",
    "BalanceLeafV1",
    "EntryLeaf",
    "asset_code_from_bytes32",
    "asset_code_to_bytes32",
    "balance_tree",
    "entry_tree",
    "fold_entries",
    "hash_balance_leaves",
    "hash_entry_leaves",
    "header_hash",
]

ENTRY_KIND = 1
BALANCE_KIND = 2
ENTRY_TYPES: tuple[str, ...] = (
    "uint8",
    "bytes32",
    "uint64",
    "uint64",
    "uint64",
    "uint64",
    "bytes32",
    "int256",
    "int256",
)
BALANCE_TYPES: tuple[str, ...] = (
    "uint8",
    "bytes32",
    "uint64",
    "uint64",
    "uint64",
    "bytes32",
    "int256",
    "uint64",
    "bytes32",
)
#: the BALANCE layout of epochs sealed before entryCount and entriesHash (format 1)
BALANCE_TYPES_V1: tuple[str, ...] = BALANCE_TYPES[:7]
#: the BALANCE leaf format of newly sealed epochs (``epoch_roots.balance_leaf_format``)
BALANCE_LEAF_FORMAT = 2
HEADER_TYPES: tuple[str, ...] = (
    "bytes32",
    "uint64",
    "bytes32",
    "bytes32",
    "bytes32",
    "uint64",
    "uint64",
    "uint64",
)

UINT64_MAX = 2**64 - 1
INT256_MIN = -(2**255)
INT256_MAX = 2**255 - 1

_ASSET_CODE_RE = re.compile(r"[A-Z0-9_]{1,32}")

# One 32-byte word per field: "31xB" is a uint8, "24xQ" a uint64, "32s" a bytes32.
_ENTRY_HEAD = struct.Struct(">31xB32s24xQ24xQ24xQ24xQ32s")
_BALANCE_HEAD = struct.Struct(">31xB32s24xQ24xQ24xQ32s")
_HEADER = struct.Struct(">32s24xQ32s32s32s24xQ24xQ24xQ")
# Bulk fast path: an int256 that fits 64 bits is 24 sign bytes then itself as "q"; struct
# raises struct.error for anything wider and we fall back. _SIGN[x < 0] are the sign bytes.
_ENTRY_FAST = struct.Struct(">31xB32s24xQ24xQ24xQ24xQ32s24sq24sq")
_BALANCE_FAST = struct.Struct(">31xB32s24xQ24xQ24xQ32s24sq24xQ32s")
_BALANCE_TAIL = struct.Struct(">24xQ32s")
_BALANCE_FAST_V1 = struct.Struct(">31xB32s24xQ24xQ24xQ32s24sq")
_SIGN = (bytes(24), b"\xff" * 24)


def asset_code_to_bytes32(code: str) -> bytes:
    """``"USD"`` -> ``b"USD"`` right-padded with zero bytes to 32 bytes."""
    if not isinstance(code, str) or not _ASSET_CODE_RE.fullmatch(code):
        raise ValueError(f"invalid asset code {code!r}: 1-32 of A-Z, 0-9 and _")
    return code.encode("ascii").ljust(32, b"\0")


def asset_code_from_bytes32(word: bytes) -> str:
    """The inverse of :func:`asset_code_to_bytes32`; ``ValueError`` for any other 32 bytes."""
    if not isinstance(word, bytes | bytearray) or len(word) != 32:
        raise ValueError("an asset code word is exactly 32 bytes")
    text = bytes(word).rstrip(b"\0")
    code = text.decode("ascii", errors="replace")
    if asset_code_to_bytes32(code) != word:
        raise ValueError(f"invalid asset code word {bytes(word).hex()}")
    return code


def _uint64(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= UINT64_MAX:
        raise ValueError(f"{name} must be an integer in the uint64 range, got {value!r}")
    return value


def _int256(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if not INT256_MIN <= value <= INT256_MAX:
        raise ValueError(f"{name} {value} does not fit in int256")
    return value


def _bytes32(value: bytes, name: str) -> bytes:
    if not isinstance(value, bytes | bytearray) or len(value) != 32:
        raise ValueError(f"{name} must be exactly 32 bytes")
    return bytes(value)


def _word(value: int) -> bytes:
    """One signed int256 word (two's complement, big-endian)."""
    return value.to_bytes(32, "big", signed=True)


@dataclass(frozen=True, slots=True)
class EntryLeaf:
    """The ENTRY leaf of one journal entry (kind 1); every field is range-checked.

    ``asset_word`` is derived: the bytes32 form of ``asset_code`` that goes into the encoding.
    """

    KIND: ClassVar[int] = ENTRY_KIND
    TYPES: ClassVar[tuple[str, ...]] = ENTRY_TYPES

    ledger_id: bytes
    epoch: int
    seq: int
    operation_id: int
    account_id: int
    asset_code: str
    amount: int
    balance_after: int
    asset_word: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ledger_id", _bytes32(self.ledger_id, "ledger_id"))
        for name in ("epoch", "seq", "operation_id", "account_id"):
            _uint64(getattr(self, name), name)
        _int256(self.amount, "amount")
        _int256(self.balance_after, "balance_after")
        object.__setattr__(self, "asset_word", asset_code_to_bytes32(self.asset_code))

    def values(self) -> tuple[int, bytes, int, int, int, int, bytes, int, int]:
        """The ABI values, in :data:`ENTRY_TYPES` order."""
        return (
            ENTRY_KIND,
            self.ledger_id,
            self.epoch,
            self.seq,
            self.operation_id,
            self.account_id,
            self.asset_word,
            self.amount,
            self.balance_after,
        )

    def encode(self) -> bytes:
        """``abi.encode(...)`` of :meth:`values`: 9 words, 288 bytes."""
        head = _ENTRY_HEAD.pack(
            ENTRY_KIND,
            self.ledger_id,
            self.epoch,
            self.seq,
            self.operation_id,
            self.account_id,
            self.asset_word,
        )
        return head + _word(self.amount) + _word(self.balance_after)

    def hash(self) -> bytes:
        """The leaf hash, ``keccak256(keccak256(encode()))``."""
        return keccak256(keccak256(self.encode()))


@dataclass(frozen=True, slots=True)
class BalanceLeaf:
    """The BALANCE leaf of one account's balance in one asset (kind 2); range-checked.

    ``entry_count`` and ``entries_hash`` are the account's entries so far and their running
    hash (:func:`fold_entries`). ``asset_word`` is derived: the bytes32 form of ``asset_code``
    that goes into the encoding.
    """

    KIND: ClassVar[int] = BALANCE_KIND
    TYPES: ClassVar[tuple[str, ...]] = BALANCE_TYPES
    FORMAT: ClassVar[int] = 2

    ledger_id: bytes
    epoch: int
    seq: int
    account_id: int
    asset_code: str
    balance: int
    entry_count: int
    entries_hash: bytes
    asset_word: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ledger_id", _bytes32(self.ledger_id, "ledger_id"))
        for name in ("epoch", "seq", "account_id", "entry_count"):
            _uint64(getattr(self, name), name)
        _int256(self.balance, "balance")
        object.__setattr__(self, "entries_hash", _bytes32(self.entries_hash, "entries_hash"))
        object.__setattr__(self, "asset_word", asset_code_to_bytes32(self.asset_code))

    def values(self) -> tuple[int, bytes, int, int, int, bytes, int, int, bytes]:
        """The ABI values, in :data:`BALANCE_TYPES` order."""
        return (
            BALANCE_KIND,
            self.ledger_id,
            self.epoch,
            self.seq,
            self.account_id,
            self.asset_word,
            self.balance,
            self.entry_count,
            self.entries_hash,
        )

    def encode(self) -> bytes:
        """``abi.encode(...)`` of :meth:`values`: 9 words, 288 bytes."""
        head = _BALANCE_HEAD.pack(
            BALANCE_KIND, self.ledger_id, self.epoch, self.seq, self.account_id, self.asset_word
        )
        return head + _word(self.balance) + _BALANCE_TAIL.pack(self.entry_count, self.entries_hash)

    def hash(self) -> bytes:
        """The leaf hash, ``keccak256(keccak256(encode()))``."""
        return keccak256(keccak256(self.encode()))


@dataclass(frozen=True, slots=True)
class BalanceLeafV1:
    """The BALANCE leaf of epochs sealed in format 1 (kind 2, 7 words: no ``entryCount``, no
    ``entriesHash``); kept to serve, audit and verify those epochs' anchored trees."""

    KIND: ClassVar[int] = BALANCE_KIND
    TYPES: ClassVar[tuple[str, ...]] = BALANCE_TYPES_V1
    FORMAT: ClassVar[int] = 1

    ledger_id: bytes
    epoch: int
    seq: int
    account_id: int
    asset_code: str
    balance: int
    asset_word: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ledger_id", _bytes32(self.ledger_id, "ledger_id"))
        for name in ("epoch", "seq", "account_id"):
            _uint64(getattr(self, name), name)
        _int256(self.balance, "balance")
        object.__setattr__(self, "asset_word", asset_code_to_bytes32(self.asset_code))

    def values(self) -> tuple[int, bytes, int, int, int, bytes, int]:
        """The ABI values, in :data:`BALANCE_TYPES_V1` order."""
        return (
            BALANCE_KIND,
            self.ledger_id,
            self.epoch,
            self.seq,
            self.account_id,
            self.asset_word,
            self.balance,
        )

    def encode(self) -> bytes:
        """``abi.encode(...)`` of :meth:`values`: 7 words, 224 bytes."""
        head = _BALANCE_HEAD.pack(
            BALANCE_KIND, self.ledger_id, self.epoch, self.seq, self.account_id, self.asset_word
        )
        return head + _word(self.balance)

    def hash(self) -> bytes:
        """The leaf hash, ``keccak256(keccak256(encode()))``."""
        return keccak256(keccak256(self.encode()))


def fold_entries(
    entry_count: int, entries_hash: bytes, entry_leaf_hashes: Sequence[bytes]
) -> tuple[int, bytes]:
    """(count, running hash) after appending entries (their ENTRY leaf hashes, in seq order)
    to an account's (``entry_count``, ``entries_hash``): ``h = keccak256(h ++ leafHash)`` per
    entry. Start from ``(0, 32 zero bytes)`` for an account's first entry."""
    h = _bytes32(entries_hash, "entries_hash")
    k = keccak_256
    for leaf_hash in entry_leaf_hashes:
        h = k(h + _bytes32(leaf_hash, "entry leaf hash")).digest()
    return entry_count + len(entry_leaf_hashes), h


def hash_entry_leaves(leaves: Sequence[EntryLeaf]) -> list[bytes]:
    """``[leaf.hash() for leaf in leaves]``, about twice as fast (the bulk path of the trees)."""
    k = keccak_256
    pack = _ENTRY_FAST.pack
    sign = _SIGN
    try:
        return [
            k(
                k(
                    pack(
                        ENTRY_KIND,
                        x.ledger_id,
                        x.epoch,
                        x.seq,
                        x.operation_id,
                        x.account_id,
                        x.asset_word,
                        sign[(a := x.amount) < 0],
                        a,
                        sign[(b := x.balance_after) < 0],
                        b,
                    )
                ).digest()
            ).digest()
            for x in leaves
        ]
    except struct.error:  # an amount wider than 64 bits somewhere: the general encoding
        return [leaf.hash() for leaf in leaves]


def hash_balance_leaves(leaves: Sequence[BalanceLeaf | BalanceLeafV1]) -> list[bytes]:
    """``[leaf.hash() for leaf in leaves]``, faster (the bulk path of the trees)."""
    k = keccak_256
    sign = _SIGN
    try:
        if leaves and isinstance(leaves[0], BalanceLeafV1):
            pack1 = _BALANCE_FAST_V1.pack
            return [
                k(
                    k(
                        pack1(
                            BALANCE_KIND,
                            x.ledger_id,
                            x.epoch,
                            x.seq,
                            x.account_id,
                            x.asset_word,
                            sign[(s := x.balance) < 0],
                            s,
                        )
                    ).digest()
                ).digest()
                for x in leaves
            ]
        pack = _BALANCE_FAST.pack
        return [
            k(
                k(
                    pack(
                        BALANCE_KIND,
                        x.ledger_id,
                        x.epoch,
                        x.seq,
                        x.account_id,
                        x.asset_word,
                        sign[(s := x.balance) < 0],
                        s,
                        x.entry_count,
                        x.entries_hash,
                    )
                ).digest()
            ).digest()
            for x in cast("Sequence[BalanceLeaf]", leaves)
        ]
    except struct.error:
        return [leaf.hash() for leaf in leaves]


def entry_tree(leaves: Sequence[EntryLeaf]) -> StandardMerkleTree:
    """The entries tree of an epoch (``proof(i)`` is the proof of ``leaves[i]``)."""
    return StandardMerkleTree.build(leaves, hash_entry_leaves)


def balance_tree(leaves: Sequence[BalanceLeaf | BalanceLeafV1]) -> StandardMerkleTree:
    """The balances tree of an epoch (``proof(i)`` is the proof of ``leaves[i]``)."""
    return StandardMerkleTree.build(leaves, hash_balance_leaves)


def header_hash(
    ledger_id: bytes,
    epoch: int,
    prev_header: bytes,
    entries_root: bytes,
    balances_root: bytes,
    first_seq: int,
    last_seq: int,
    leaf_count: int,
) -> bytes:
    """The epoch header hash: ``keccak256(abi.encode(HEADER_TYPES...))``, a single keccak."""
    return keccak256(
        _HEADER.pack(
            _bytes32(ledger_id, "ledger_id"),
            _uint64(epoch, "epoch"),
            _bytes32(prev_header, "prev_header"),
            _bytes32(entries_root, "entries_root"),
            _bytes32(balances_root, "balances_root"),
            _uint64(first_seq, "first_seq"),
            _uint64(last_seq, "last_seq"),
            _uint64(leaf_count, "leaf_count"),
        )
    )
