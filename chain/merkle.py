"""A Merkle tree byte-for-byte compatible with OpenZeppelin's ``StandardMerkleTree``.

This reproduces ``@openzeppelin/merkle-tree`` 1.0.x (``StandardMerkleTree.of`` with the default
``sortLeaves: true``), so roots and proofs verify with OpenZeppelin's ``MerkleProof.sol``.

Hashing
    * leaf hash: ``keccak256(keccak256(abi.encode(types, values)))`` -- see :func:`leaf_hash`;
      the ledger's own fixed leaf layouts are encoded by hand, faster, in :mod:`chain.leaves`.
    * node hash: ``keccak256(min(a, b) ++ max(a, b))``: the two 32-byte children are sorted as
      bytes (the same order as uint256) before hashing, so a proof needs no left/right flags.

Layout ("complete binary tree in an array")
    ``nodes`` has ``2n - 1`` entries for ``n`` leaves. ``nodes[0]`` is the root, the children
    of ``nodes[i]`` are ``nodes[2i + 1]`` and ``nodes[2i + 2]``, and the leaves fill
    ``nodes[n - 1:]``. The leaf hashes are sorted ascending first, and the ``k``-th smallest is
    stored at ``nodes[2n - 2 - k]`` (so the leaf region reads in descending order). An odd node
    is never duplicated: the tree is simply not perfect when ``n`` is not a power of two.

Proofs
    The proof of the leaf at array index ``i`` is the list of siblings from the leaf up to, not
    including, the root. :func:`verify` folds it with the node hash and compares with the root.
    ``proof(index)`` takes the index of the leaf in the *input* order, like OpenZeppelin's
    ``getProof(i)``; :meth:`StandardMerkleTree.proof_for_hash` looks a leaf up by its hash.
    Multiproofs (``getMultiProof``, ``MerkleProof.multiProofVerify``) are supported too.

Empty tree
    OpenZeppelin refuses to build a tree without leaves. Here an empty tree is allowed, has no
    proofs, and its root is defined as 32 zero bytes (:data:`EMPTY_ROOT`).

Serialised form (:meth:`StandardMerkleTree.to_bytes`), all integers big-endian::

    0   4 bytes        magic b"VOMT"
    4   1 byte         format version (1)
    5   1 byte         flags: bit 0 set when the leaves were sorted (the OpenZeppelin default)
    6   2 bytes        reserved, zero
    8   8 bytes        n, the number of leaves
    16  32 * (2n - 1)  the node array, in array order
    ..  4 * n          uint32 array index of each leaf, in input order (the leaf -> position index)

A reloaded tree serves proofs straight from that buffer, without rehashing anything;
:meth:`StandardMerkleTree.validate` rehashes every node when the stored bytes are not trusted.

Speed
    keccak is called directly through ``sha3.keccak_256`` (safe-pysha3, the C backend behind
    ``eth_hash.auto``), once per node on 64 bytes. The rows of the array are built deepest
    first with list comprehensions over byte strings; no per-node Python objects besides the
    hashes themselves. The time goes to keccak itself: a 288-byte entry leaf costs four
    Keccak-f permutations (three for the encoding, one for the outer hash) and each internal
    node one more, so about five permutations per leaf.

Two processes (:meth:`StandardMerkleTree.build`, from :data:`PARALLEL_MIN_LEAVES` leaves, on
a machine with two CPUs): a forked child hashes and sorts 48% of the leaves while this process
does the rest, and the two sorted halves are merged (one timsort pass over two runs); then a
second child hashes the subtree of node 2 while this process hashes the subtree of node 1 (in
the array layout a subtree is one contiguous run per row), and the root is hashed last.
Results come back through an anonymous shared mapping. safe-pysha3 holds the GIL for inputs
this small, so threads would not help. The tree is byte-identical either way; a child that
fails is redone here.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import mmap
import os
import select
import signal
import struct
import sys
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar, overload

from eth_abi.abi import encode as abi_encode
from sha3 import keccak_256 as _sha3_keccak_256

__all__ = [
    "EMPTY_ROOT",
    "PARALLEL_MIN_LEAVES",
    "MultiProof",
    "StandardMerkleTree",
    "default_workers",
    "hash_pair",
    "keccak256",
    "keccak_256",
    "leaf_hash",
    "process_multiproof",
    "process_proof",
    "verify",
    "verify_multiproof",
]

T = TypeVar("T")

#: The root of a tree without leaves (OpenZeppelin has no such tree; this is our convention).
EMPTY_ROOT = bytes(32)

_MAGIC = b"VOMT"
_VERSION = 1
_FLAG_SORTED = 1
_HEADER = struct.Struct(">4sBBHQ")


class KeccakHash(Protocol):
    """What we use of a ``sha3.keccak_256`` object."""

    def digest(self) -> bytes: ...


#: The raw C keccak256 constructor (``sha3.keccak_256``, untyped upstream): for hot loops,
#: ``keccak_256(data).digest()`` skips every wrapper between Python and the C code.
keccak_256: Callable[[bytes], KeccakHash] = _sha3_keccak_256
_keccak = keccak_256


def keccak256(data: bytes) -> bytes:
    """Ethereum's keccak256 (the original Keccak padding, not NIST SHA3-256)."""
    return _keccak(data).digest()


def hash_pair(a: bytes, b: bytes) -> bytes:
    """The OpenZeppelin node hash: keccak256 of the two children, smaller first."""
    return _keccak(a + b if a < b else b + a).digest()


def leaf_hash(values: Sequence[object], types: Sequence[str]) -> bytes:
    """The OpenZeppelin standard leaf hash of ``values`` ABI-encoded as ``types`` (generic path)."""
    return _keccak(_keccak(abi_encode(list(types), list(values))).digest()).digest()


def process_proof(leaf: bytes, proof: Iterable[bytes]) -> bytes:
    """Fold ``proof`` into ``leaf`` with the node hash; the result is the implied root."""
    node = leaf
    for sibling in proof:
        node = _keccak(node + sibling if node < sibling else sibling + node).digest()
    return node


def verify(root: bytes, leaf: bytes, proof: Sequence[bytes]) -> bool:
    """Whether ``proof`` proves the leaf hash ``leaf`` under ``root``.

    Standalone: needs no tree, only the 32-byte root, the 32-byte leaf hash (for the ledger,
    ``EntryLeaf.hash()`` or ``BalanceLeaf.hash()``) and the sibling hashes. Malformed input
    (any value not exactly 32 bytes long) is rejected, never raised on.
    """
    if len(root) != 32 or len(leaf) != 32 or any(len(s) != 32 for s in proof):
        return False
    return process_proof(bytes(leaf), (bytes(s) for s in proof)) == bytes(root)


@dataclass(frozen=True)
class MultiProof:
    """A proof of several leaves at once (OpenZeppelin's ``getMultiProof``).

    ``leaves`` are the proven leaf hashes in the order the proof consumes them (by descending
    array index), ``proof`` the extra sibling hashes, ``flags`` OpenZeppelin's ``proofFlags``.
    """

    leaves: list[bytes]
    proof: list[bytes]
    flags: list[bool]


def process_multiproof(
    leaves: Sequence[bytes], proof: Sequence[bytes], flags: Sequence[bool]
) -> bytes:
    """The root implied by a multiproof; ``ValueError`` when its parts do not fit together."""
    if len(proof) < sum(1 for f in flags if not f):
        raise ValueError("invalid multiproof format")
    if len(leaves) + len(proof) != len(flags) + 1:
        raise ValueError("the leaves and the multiproof are not compatible")
    stack = deque(leaves)
    extra = deque(proof)
    for flag in flags:
        a = stack.popleft()
        b = stack.popleft() if flag else extra.popleft()
        stack.append(hash_pair(a, b))
    if len(stack) + len(extra) != 1:
        raise ValueError("invalid multiproof")
    return stack.pop() if stack else extra.popleft()


def verify_multiproof(root: bytes, multiproof: MultiProof) -> bool:
    """Whether ``multiproof`` proves all its leaf hashes under ``root``; never raises."""
    parts = (root, *multiproof.leaves, *multiproof.proof)
    if any(len(x) != 32 for x in parts):
        return False
    try:
        implied = process_multiproof(multiproof.leaves, multiproof.proof, multiproof.flags)
    except (ValueError, IndexError):
        return False
    return implied == bytes(root)


class _Packed(Sequence[bytes]):
    """A read-only sequence of the 32-byte hashes packed back to back in ``buf[start:end]``."""

    __slots__ = ("_buf", "_len", "_start")

    def __init__(self, buf: bytes, start: int = 0, end: int | None = None) -> None:
        end = len(buf) if end is None else end
        if (end - start) % 32 or not 0 <= start <= end <= len(buf):
            raise ValueError("packed hashes must be a multiple of 32 bytes")
        self._buf = buf
        self._start = start
        self._len = (end - start) // 32

    def __len__(self) -> int:
        return self._len

    @overload
    def __getitem__(self, index: int) -> bytes: ...
    @overload
    def __getitem__(self, index: slice) -> list[bytes]: ...
    def __getitem__(self, index: int | slice) -> bytes | list[bytes]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._len))]
        if index < 0:
            index += self._len
        if not 0 <= index < self._len:
            raise IndexError("index out of range")
        offset = self._start + 32 * index
        return self._buf[offset : offset + 32]

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.tolist())

    def tobytes(self) -> bytes:
        """The packed hashes as one byte string."""
        return self._buf[self._start : self._start + 32 * self._len]

    def tolist(self) -> list[bytes]:
        """The hashes as a list of 32-byte strings."""
        buf, start = self._buf, self._start
        return [buf[i : i + 32] for i in range(start, start + 32 * self._len, 32)]


class _Chained(Sequence[bytes]):
    """Two sequences of hashes read as one (the input-order hashes of a two-process build)."""

    __slots__ = ("_head", "_tail")

    def __init__(self, head: Sequence[bytes], tail: Sequence[bytes]) -> None:
        self._head = head
        self._tail = tail

    def __len__(self) -> int:
        return len(self._head) + len(self._tail)

    @overload
    def __getitem__(self, index: int) -> bytes: ...
    @overload
    def __getitem__(self, index: slice) -> list[bytes]: ...
    def __getitem__(self, index: int | slice) -> bytes | list[bytes]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError("index out of range")
        split = len(self._head)
        return self._head[index] if index < split else self._tail[index - split]

    def __iter__(self) -> Iterator[bytes]:
        return itertools.chain(self._head, self._tail)


def _subtree_runs(root: int, n_leaves: int) -> list[tuple[int, int]]:
    """The internal nodes under (and including) ``root`` as array runs ``[lo, hi)``, deepest
    first.

    At relative depth ``d`` the subtree of ``root`` covers the contiguous array positions
    ``[(root + 1) * 2**d - 1, (root + 2) * 2**d - 1)``; the internal nodes are those below
    ``n_leaves - 1``, and the children of a run ``[lo, hi)`` are the run ``[2lo + 1, 2hi + 1)``.
    """
    runs = []
    depth = 0
    while (lo := (root + 1) * 2**depth - 1) < n_leaves - 1:
        runs.append((lo, min((root + 2) * 2**depth - 1, n_leaves - 1)))
        depth += 1
    runs.reverse()
    return runs


def _hash_runs(nodes: list[bytes], runs: Iterable[tuple[int, int]]) -> None:
    """Hash the internal node runs (deepest first) in place: one list comprehension per run
    over two strided slices of the run below."""
    k = _keccak
    for lo, hi in runs:
        lefts = nodes[2 * lo + 1 : 2 * hi + 1 : 2]
        rights = nodes[2 * lo + 2 : 2 * hi + 2 : 2]
        nodes[lo:hi] = [
            k(a + b if a < b else b + a).digest() for a, b in zip(lefts, rights, strict=True)
        ]


def _hash_internal_nodes(nodes: list[bytes], n_leaves: int) -> None:
    """Fill in ``nodes[:n_leaves - 1]`` from the leaves in ``nodes[n_leaves - 1:]``, in place."""
    _hash_runs(nodes, _subtree_runs(0, n_leaves))


def _split32(data: bytes) -> list[bytes]:
    """Packed 32-byte hashes -> a list of them."""
    return [data[i : i + 32] for i in range(0, len(data), 32)]


# ------------------------------------------------------------------- using a second core

#: Trees with fewer leaves are built in this process only (a fork costs milliseconds).
PARALLEL_MIN_LEAVES = 50_000
#: A forked child still running after this long is killed and its share redone here (it
#: normally takes about as long as this process's own share: ~1.5 s for 1M leaves).
CHILD_TIMEOUT_S = 120.0


def default_workers() -> int:
    """Processes a large build uses: 2 when this process may run on two CPUs and can fork."""
    if not hasattr(os, "fork"):  # pragma: no cover - not POSIX
        return 1
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS
        cpus = os.cpu_count() or 1
    return min(cpus, 2)


def _parallel(n_leaves: int, workers: int | None) -> bool:
    workers = default_workers() if workers is None else workers
    return workers >= 2 and n_leaves >= max(PARALLEL_MIN_LEAVES, 4)


class _Forked:
    """``work()`` run in a forked child, its result (exactly ``size`` bytes) handed back through
    an anonymous shared mapping.

    The child only computes (keccak, struct, lists) and writes into the mapping, then leaves
    with ``os._exit``: no file descriptor, lock, atexit hook or event loop of the parent is
    touched, so forking from a worker thread of an asyncio program is safe. :meth:`result` is
    None when the child failed in any way; the caller then does the work itself.
    """

    def __init__(self, size: int, work: Callable[[], bytes]) -> None:
        self._size = size
        self._buf = mmap.mmap(-1, max(size, 1))
        self._pid = os.fork()
        if self._pid == 0:  # pragma: no cover - runs in the child (coverage cannot see it)
            code = 1
            try:
                with contextlib.suppress(ValueError):  # an event loop's wakeup fd is not ours
                    signal.set_wakeup_fd(-1)
                data = work()
                if len(data) == size:
                    self._buf[:size] = data
                    code = 0
            finally:
                os._exit(code)

    def result(self, timeout_s: float | None = None) -> bytes | None:
        """The child's bytes, or None if it failed or is still running after ``timeout_s``
        (default :data:`CHILD_TIMEOUT_S`): a child stuck on a lock some other thread of the
        parent held at fork time is killed, and the caller does the work itself."""
        if not self._exited(CHILD_TIMEOUT_S if timeout_s is None else timeout_s):
            os.kill(self._pid, signal.SIGKILL)
        _, status = os.waitpid(self._pid, 0)
        data = self._buf[: self._size] if os.waitstatus_to_exitcode(status) == 0 else None
        self._buf.close()
        return data

    def _exited(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the child to exit (a pidfd: no polling)."""
        if not hasattr(os, "pidfd_open"):  # pragma: no cover - not Linux: wait without limit
            return True
        fd = os.pidfd_open(self._pid)
        try:
            ready, _, _ = select.select([fd], [], [], timeout_s)
        finally:
            os.close(fd)
        return bool(ready)


def _hash_leaves_in_two(
    items: Sequence[T], hash_leaves: Callable[[Sequence[T]], list[bytes]], sort: bool
) -> tuple[Sequence[bytes], list[bytes]]:
    """(input-order hashes, leaf row) with the hashing and sorting of the first half of
    ``items`` done by a forked child while this process does the second half.

    The leaf row is the hashes sorted descending (the two sorted halves merged: timsort on two
    runs is a linear merge) or, unsorted, the input reversed.
    """
    n = len(items)
    # the child's share, 48%: a forked child pays more per leaf (copy-on-write faults on the
    # pages it touches, tearing its address space down), measured against this process's
    # extra work (splitting the child's result, merging the halves)
    half = n * 12 // 25

    def child() -> bytes:  # pragma: no cover - runs in the child
        hashes = hash_leaves(items[:half])
        if len(hashes) != half or any(len(h) != 32 for h in hashes):
            return b""  # wrong size: the parent redoes it and reports the error
        packed = b"".join(hashes)
        if sort:
            hashes.sort(reverse=True)
            packed += b"".join(hashes)
        return packed

    job = _Forked(32 * half * (2 if sort else 1), child)
    mine = hash_leaves(items[half:])
    mine_sorted = sorted(mine, reverse=True) if sort else []
    data = job.result()
    if data is None:
        theirs = hash_leaves(items[:half])
        theirs_sorted = sorted(theirs, reverse=True) if sort else []
    elif sort:  # the input order is only needed for the leaf index: kept packed until then
        by_input: Sequence[bytes] = _Chained(_Packed(data, 0, 32 * half), mine)
        leaves = _split32(data[32 * half :]) + mine_sorted
        leaves.sort(reverse=True)
        return by_input, leaves
    else:
        theirs = _split32(data)
    by_input = theirs + mine
    if not sort:
        return by_input, by_input[::-1]
    leaves = theirs_sorted + mine_sorted
    leaves.sort(reverse=True)
    return by_input, leaves


def _hash_tree_in_two(nodes: list[bytes], n_leaves: int) -> None:
    """:func:`_hash_internal_nodes`, the subtree of node 2 hashed by a forked child while this
    process hashes the subtree of node 1 (never smaller); then the root."""
    right, left = _subtree_runs(1, n_leaves), _subtree_runs(2, n_leaves)

    def child() -> bytes:  # pragma: no cover - runs in the child
        _hash_runs(nodes, left)
        return b"".join(itertools.chain.from_iterable(nodes[lo:hi] for lo, hi in left))

    job = _Forked(32 * sum(hi - lo for lo, hi in left), child)
    _hash_runs(nodes, right)
    data = job.result()
    if data is None:
        _hash_runs(nodes, left)
    else:
        offset = 0
        for lo, hi in left:
            end = offset + 32 * (hi - lo)
            nodes[lo:hi] = _split32(data[offset:end])
            offset = end
    _hash_runs(nodes, [(0, 1)])


class StandardMerkleTree:
    """An OpenZeppelin ``StandardMerkleTree``: build it, take its root, serve proofs."""

    __slots__ = ("_by_input", "_n", "_nodes", "_positions", "_sorted")

    def __init__(
        self,
        nodes: Sequence[bytes],
        *,
        sorted_leaves: bool,
        by_input: Sequence[bytes] | None = None,
        positions: Sequence[int] | None = None,
    ) -> None:
        """Wrap a ready node array; use the ``build``/``of``/``from_*`` constructors instead."""
        if len(nodes) % 2 == 0 and len(nodes) != 0:
            raise ValueError("a node array has an odd length, 2n - 1")
        self._nodes = nodes
        self._n = (len(nodes) + 1) // 2
        self._sorted = sorted_leaves
        self._by_input = by_input
        self._positions = positions

    # ----------------------------------------------------------------- building

    @classmethod
    def from_leaf_hashes(
        cls, hashes: Iterable[bytes], *, sort_leaves: bool = True, workers: int | None = None
    ) -> StandardMerkleTree:
        """Build from already-hashed leaves (32 bytes each), given in input order."""
        by_input = [bytes(h) for h in hashes]
        if any(len(h) != 32 for h in by_input):
            raise ValueError("Merkle tree leaves must be 32-byte hashes")
        return cls._from_hashes(by_input, sort_leaves, workers=workers)

    @classmethod
    def of(
        cls,
        values: Sequence[Sequence[object]],
        types: Sequence[str],
        *,
        sort_leaves: bool = True,
        workers: int | None = None,
    ) -> StandardMerkleTree:
        """``StandardMerkleTree.of(values, types)``: any ABI leaf layout, via ``eth_abi``."""
        types = list(types)

        def hash_leaves(rows: Sequence[Sequence[object]]) -> list[bytes]:
            return [leaf_hash(row, types) for row in rows]

        return cls.build(values, hash_leaves, sort_leaves=sort_leaves, workers=workers)

    @classmethod
    def build(
        cls,
        items: Sequence[T],
        hash_leaves: Callable[[Sequence[T]], list[bytes]],
        *,
        sort_leaves: bool = True,
        workers: int | None = None,
    ) -> StandardMerkleTree:
        """Build from ``items`` hashed in bulk by ``hash_leaves`` (one 32-byte hash per item).

        ``hash_leaves`` must hash each item on its own (a pure function of the item): from
        :data:`PARALLEL_MIN_LEAVES` items on, with ``workers`` (default
        :func:`default_workers`) of 2 or more, half of the items are hashed by a forked
        process, and the internal nodes are split the same way. The tree is the same
        byte for byte either way.
        """
        if not _parallel(len(items), workers):
            hashes = hash_leaves(items)
            if len(hashes) != len(items):
                raise ValueError("hash_leaves must return one hash per item")
            return cls._from_hashes(hashes, sort_leaves, workers=1)
        by_input, leaves = _hash_leaves_in_two(items, hash_leaves, sort_leaves)
        if len(by_input) != len(items):
            raise ValueError("hash_leaves must return one hash per item")
        return cls._from_rows(by_input, leaves, sort_leaves, parallel=True)

    @classmethod
    def _from_hashes(
        cls, by_input: list[bytes], sort: bool, *, workers: int | None = None
    ) -> StandardMerkleTree:
        leaves = sorted(by_input, reverse=True) if sort else by_input[::-1]
        return cls._from_rows(by_input, leaves, sort, parallel=_parallel(len(leaves), workers))

    @classmethod
    def _from_rows(
        cls, by_input: Sequence[bytes], leaves: list[bytes], sort: bool, *, parallel: bool
    ) -> StandardMerkleTree:
        """The tree over ``leaves``, the leaf row already in array order."""
        if not leaves:
            return cls([], sorted_leaves=sort, by_input=[])
        nodes = [b""] * (len(leaves) - 1) + leaves
        if parallel:
            _hash_tree_in_two(nodes, len(leaves))
        else:
            _hash_internal_nodes(nodes, len(leaves))
        return cls(nodes, sorted_leaves=sort, by_input=by_input)

    # ----------------------------------------------------------------- reading

    @property
    def root(self) -> bytes:
        """The 32-byte root (:data:`EMPTY_ROOT` for a tree without leaves)."""
        return self._nodes[0] if self._n else EMPTY_ROOT

    def __len__(self) -> int:
        """The number of leaves."""
        return self._n

    @property
    def nodes(self) -> Sequence[bytes]:
        """The node array (OpenZeppelin's ``dump().tree``, as bytes)."""
        return self._nodes

    def position(self, index: int) -> int:
        """The array index of the ``index``-th leaf in input order."""
        if not 0 <= index < self._n:
            raise IndexError("leaf index out of range")
        return self._index()[index]

    def leaf_hash(self, index: int) -> bytes:
        """The hash of the ``index``-th leaf in input order."""
        return self._nodes[self.position(index)]

    def proof(self, index: int) -> list[bytes]:
        """The proof of the ``index``-th leaf in input order (OpenZeppelin's ``getProof(i)``)."""
        return self._proof_at(self.position(index))

    def proof_for_hash(self, leaf: bytes) -> list[bytes]:
        """The proof of the leaf whose hash is ``leaf``; ``KeyError`` if it is not in the tree."""
        return self._proof_at(self.find(leaf))

    def find(self, leaf: bytes) -> int:
        """The array index of the leaf hash ``leaf`` (binary search when the leaves are sorted)."""
        nodes, n = self._nodes, self._n
        if self._sorted:
            # leaves ascend from nodes[2n - 2] down to nodes[n - 1]
            rank = bisect.bisect_left(range(n), leaf, key=lambda k: nodes[2 * n - 2 - k])
            if rank < n and nodes[2 * n - 2 - rank] == leaf:
                return 2 * n - 2 - rank
        else:
            for pos in range(n - 1, 2 * n - 1):
                if nodes[pos] == leaf:
                    return pos
        raise KeyError("leaf is not in the tree")

    def multiproof(self, indices: Sequence[int]) -> MultiProof:
        """One proof for the leaves at these input indices (OpenZeppelin's ``getMultiProof``)."""
        positions = sorted((self.position(i) for i in indices), reverse=True)
        if len(set(positions)) != len(positions):
            raise ValueError("cannot prove a duplicated index")
        nodes = self._nodes
        stack = deque(positions)
        proof: list[bytes] = []
        flags: list[bool] = []
        while stack and stack[0] > 0:
            j = stack.popleft()
            sibling = j + 1 if j % 2 else j - 1
            if stack and stack[0] == sibling:
                flags.append(True)
                stack.popleft()
            else:
                flags.append(False)
                proof.append(nodes[sibling])
            stack.append((j - 1) // 2)
        if not positions:
            proof.append(self.root)
        result = MultiProof([nodes[p] for p in positions], proof, flags)
        if not verify_multiproof(self.root, result):
            raise ValueError("stored Merkle tree is inconsistent: the multiproof does not verify")
        return result

    def _proof_at(self, pos: int) -> list[bytes]:
        nodes = self._nodes
        leaf = nodes[pos]
        proof = []
        while pos > 0:
            proof.append(nodes[pos + 1 if pos % 2 else pos - 1])
            pos = (pos - 1) // 2
        # like OpenZeppelin, check before handing it out: catches a corrupted stored tree
        if process_proof(leaf, proof) != self.root:
            raise ValueError("stored Merkle tree is inconsistent: the proof does not verify")
        return proof

    def _index(self) -> Sequence[int]:
        """Input index -> array index, computed on first use from the input-order hashes."""
        if self._positions is None:
            if self._by_input is None:  # pragma: no cover - every constructor sets one
                raise ValueError("this tree has no leaf index")
            n, by_input = self._n, self._by_input
            where = dict(zip(self._nodes[n - 1 :], range(n - 1, 2 * n - 1), strict=True))
            if not self._sorted:
                positions = array("I", range(2 * n - 2, n - 2, -1))
            elif len(where) == n:  # distinct leaves, the usual case
                positions = array("I", map(where.__getitem__, by_input))
            else:  # equal leaves keep their input order: JavaScript's sort is stable
                positions = array("I", bytes(4 * n))
                for rank, i in enumerate(sorted(range(n), key=by_input.__getitem__)):
                    positions[i] = 2 * n - 2 - rank
            self._positions = positions
            self._by_input = None  # no longer needed
        return self._positions

    def validate(self) -> None:
        """Rehash every internal node (and check the index); ``ValueError`` if anything is off."""
        n, nodes = self._n, self._nodes
        if n == 0:
            return
        rebuilt = nodes.tolist() if isinstance(nodes, _Packed) else list(nodes)
        leaves = rebuilt[n - 1 :]
        if self._sorted and any(a < b for a, b in itertools.pairwise(leaves)):
            raise ValueError("Merkle tree leaves are not sorted")
        _hash_internal_nodes(rebuilt, n)
        if rebuilt[: n - 1] != list(nodes[: n - 1]):
            raise ValueError("Merkle tree is invalid: an internal node does not match")
        index = self._index()
        if sorted(index) != list(range(n - 1, 2 * n - 1)):
            raise ValueError("Merkle tree leaf index is not a permutation of the leaves")

    # ----------------------------------------------------------------- storage

    def to_bytes(self) -> bytes:
        """The compact serialised form (see the module docstring)."""
        header = _HEADER.pack(_MAGIC, _VERSION, _FLAG_SORTED if self._sorted else 0, 0, self._n)
        index = array("I", self._index())
        if sys.byteorder == "little":
            index.byteswap()
        nodes = self._nodes
        body = nodes.tobytes() if isinstance(nodes, _Packed) else b"".join(nodes)
        return b"".join((header, body, index.tobytes()))

    @classmethod
    def from_bytes(cls, data: bytes) -> StandardMerkleTree:
        """Reload :meth:`to_bytes` output. Nothing is rehashed; see :meth:`validate`."""
        if len(data) < _HEADER.size:
            raise ValueError("not a serialised Merkle tree: too short")
        magic, version, flags, _reserved, n = _HEADER.unpack_from(data)
        if magic != _MAGIC or version != _VERSION:
            raise ValueError("not a serialised Merkle tree (bad magic or version)")
        nodes_end = _HEADER.size + 32 * max(2 * n - 1, 0)
        if len(data) != nodes_end + 4 * n:
            raise ValueError("serialised Merkle tree has the wrong length")
        data = bytes(data)
        index = array("I")
        index.frombytes(data[nodes_end:])
        if sys.byteorder == "little":
            index.byteswap()
        if n and (min(index) < n - 1 or max(index) > 2 * n - 2):
            raise ValueError("serialised Merkle tree has a leaf index out of range")
        nodes = _Packed(data, _HEADER.size, nodes_end)
        return cls(nodes, sorted_leaves=bool(flags & _FLAG_SORTED), positions=index)
