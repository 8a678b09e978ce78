"""A Merkle tree byte-for-byte compatible with OpenZeppelin's ``StandardMerkleTree``.

This reproduces ``@openzeppelin/merkle-tree`` 1.0.x (``StandardMerkleTree.of`` with the default
``sortLeaves: true``), so roots and proofs verify with OpenZeppelin's ``MerkleProof.sol``.

Hashing
    * leaf hash: ``keccak256(keccak256(abi.encode(types, values)))`` -- see :func:`leaf_hash`;
      the ledger's own fixed leaf layouts are encoded by hand, faster, in :mod:`merkle.leaves`.
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
a machine with two CPUs): one forked child and one exchange. Both processes take chunks of the
items in turn from a shared queue (a pipe), hash them into a shared input-order array and sort
their own hashes; each hands its sorted run to the other through shared memory. Then both take
the subtrees below depth 7 in turn, find each subtree's leaves in the two sorted runs (binary
search, then a linear merge) and hash the subtree straight into the shared node array; this
process hashes the last few small subtrees while the child exits, then the nodes above them.
Only bytes cross between the processes: no Python object of one is rebuilt in the other but
the hashes it needs, and a process the machine slows down simply takes fewer chunks. A tree
built that way keeps its node array (and input-order hashes) packed in the shared mapping.
The keccak call holds the GIL for inputs this small, so threads would not help. The tree is
byte-identical either way; whatever a failed or stuck child took is redone here.
"""

from __future__ import annotations

import bisect
import contextlib
import gc
import itertools
import mmap
import os
import select
import signal
import struct
import sys
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar, overload

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

    def __init__(self, buf: bytes | mmap.mmap, start: int = 0, end: int | None = None) -> None:
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
            start, stop, step = index.indices(self._len)
            if step == 1:  # one run: sliced straight from the buffer
                buf, offset = self._buf, self._start
                return [buf[i : i + 32] for i in range(offset + 32 * start, offset + 32 * stop, 32)]
            return [self[i] for i in range(start, stop, step)]
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
    _hash_runs(nodes, _runs_under(0, 1, n_leaves - 1))


# ------------------------------------------------------------------- using a second core

#: Trees with fewer leaves are built in this process only (a fork costs milliseconds).
PARALLEL_MIN_LEAVES = 50_000
#: A forked child still running this long after the fork is killed and its share redone here
#: (it normally finishes with this process: ~2.5 s for 1M leaves).
CHILD_TIMEOUT_S = 120.0
#: The items are hashed in this many chunks (at most 256), and the tree in the subtrees of the
#: nodes at this depth (at most 2**7 = 128): either process takes the next one when it is free.
_CHUNKS = 128
_SPLIT_DEPTH = 7
#: The smallest subtrees, about this share of the leaves, are left to this process, to hash
#: while the child exits (tearing down its address space takes 50-80 ms for 1M leaves).
_PARENT_TAIL = 0.05


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
    """``work`` run in a forked child, step by step, its results handed back through anonymous
    shared mappings (``mmap.mmap(-1, size)``) the caller made before the fork.

    ``work(ready)`` calls ``ready()`` when a step's bytes are in the mappings: :meth:`wait` then
    returns True in this process, and ``ready()`` returns once this process calls :meth:`go`.
    ``work`` returning True completes the last step (False: it failed). The child only computes
    (keccak, struct, lists), writes into the mappings and its own two pipes, then leaves with
    ``os._exit``: no file descriptor, lock, atexit hook or event loop of the parent is touched,
    so forking from a worker thread of an asyncio program is safe. A child that fails, dies or
    is still running :data:`CHILD_TIMEOUT_S` after the fork is killed and reaped, and
    :meth:`wait` returns False: the caller then does the child's share itself.
    """

    def __init__(self, work: Callable[[Callable[[], None]], bool]) -> None:
        self._deadline = time.monotonic() + CHILD_TIMEOUT_S
        self._pidfd = -1
        up_r, up_w = os.pipe()  # child -> parent: b"r", a step is done
        down_r, down_w = os.pipe()  # parent -> child: b"g", go on
        try:
            self._pid = os.fork()
        except OSError:  # no second process to be had: the caller does it all
            self._pid = -1
        if self._pid == 0:  # pragma: no cover - runs in the child (coverage cannot see it)
            code = 1
            try:
                os.close(up_r)
                os.close(down_w)
                with contextlib.suppress(ValueError):  # an event loop's wakeup fd is not ours
                    signal.set_wakeup_fd(-1)
                gc.disable()  # a full collection would write to every object's page

                def ready() -> None:
                    os.write(up_w, b"r")
                    if os.read(down_r, 1) != b"g":  # the parent gave up on this child
                        os._exit(1)

                if work(ready):
                    os.write(up_w, b"r")
                    code = 0
            finally:
                os._exit(code)
        os.close(up_w)
        os.close(down_r)
        self._up, self._down = up_r, down_w
        self._live = self._pid > 0
        if not self._live:
            self._close_fds()
        elif hasattr(os, "pidfd_open"):
            with contextlib.suppress(OSError):  # a kernel without pidfds: the pipe's EOF only
                self._pidfd = os.pidfd_open(self._pid)

    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait for the child's next finished step: True when it is done; False when the child
        failed, died or was still at it after ``timeout_s`` (default: until
        :data:`CHILD_TIMEOUT_S` after the fork; it is then killed and reaped). No polling
        loop: one ``poll`` on the child's pipe and its pidfd."""
        if not self._live:
            return False
        if timeout_s is None:
            timeout_s = self._deadline - time.monotonic()
        poll = select.poll()  # not select(): a busy server's descriptors may be past 1024
        poll.register(self._up, select.POLLIN)
        if self._pidfd >= 0:
            poll.register(self._pidfd, select.POLLIN)
        ready = {fd for fd, _ in poll.poll(max(timeout_s, 0.0) * 1000)}
        if self._up in ready and os.read(self._up, 1) == b"r":
            return True
        self.close()
        return False

    def go(self) -> None:
        """Let the child's ``ready()`` return (its next step's input is in the mappings)."""
        if self._live:
            try:
                os.write(self._down, b"g")
            except OSError:  # it is gone: the next wait() says so
                self.close()

    def close(self) -> None:
        """Kill the child if it is still running and reap it (idempotent)."""
        if not self._live:
            return
        self._live = False
        with contextlib.suppress(ProcessLookupError):
            os.kill(self._pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):  # someone else's waitpid(-1) reaped it
            os.waitpid(self._pid, 0)
        self._close_fds()

    def _close_fds(self) -> None:
        for fd in (self._up, self._down, self._pidfd):
            if fd >= 0:
                os.close(fd)


def _are_hashes(hashes: Sequence[bytes], count: int) -> bool:
    """Whether ``hashes`` is ``count`` 32-byte strings."""
    return len(hashes) == count and set(map(len, hashes)) <= {32}


class _Tasks:
    """Task numbers (0 to 255) shared by this process and a forked child: a pipe filled before
    the fork and its write end closed. A take is a one-byte read, atomic between the two
    processes, and an empty queue reads as end of file: whichever process is free takes the
    next task, so a process the machine slows down does less of the work."""

    def __init__(self, tasks: Iterable[int]) -> None:
        read_fd, write_fd = os.pipe()
        try:
            os.write(write_fd, bytes(tasks))  # at most 256 bytes, below PIPE_BUF: at once
        finally:
            os.close(write_fd)
        self._fd = read_fd
        #: the tasks this process took
        self.taken: list[int] = []

    def drain(self) -> Iterator[int]:
        """Take tasks until there are none left."""
        while task := os.read(self._fd, 1):
            self.taken.append(task[0])
            yield task[0]

    def __enter__(self) -> _Tasks:
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self._fd)


def _runs_under(lo: int, hi: int, size: int) -> list[tuple[int, int]]:
    """The positions under (and including) the nodes ``[lo, hi)`` of one row of a node array
    of ``size`` entries: one run ``[lo, hi)`` per row, deepest first.

    The children of a run ``[lo, hi)`` are the run ``[2lo + 1, 2hi + 1)``; positions from
    ``size`` on do not exist.
    """
    runs = []
    while lo < size:
        runs.append((lo, min(hi, size)))
        lo, hi = 2 * lo + 1, 2 * hi + 1
    runs.reverse()
    return runs


class _LeafRow:
    """Runs of the leaf row (array order) read without building the whole row.

    Sorted leaves (``runs`` given): the row is the merge of two runs, the child's hashes and
    this process's, each sorted descending (the child's first among equal hashes, which are
    the same bytes anyway). Unsorted: the row is the input reversed, read from the packed
    input-order hashes.
    """

    __slots__ = ("_by_input", "_child", "_parent", "_sort")

    def __init__(
        self,
        by_input: _Packed,
        runs: tuple[list[bytes] | _Packed, list[bytes] | _Packed] | None,
    ) -> None:
        self._by_input = by_input
        self._sort = runs is not None
        self._child, self._parent = runs or ([], [])

    def __call__(self, lo: int, hi: int) -> list[bytes]:
        """The leaves ``lo`` to ``hi`` of the row (array positions ``n - 1 + lo`` on)."""
        if not self._sort:
            n = len(self._by_input)
            row = self._by_input[n - hi : n - lo]
            row.reverse()
            return row
        a, b = self._child, self._parent
        ia, ib = self._taken(lo), self._taken(hi)
        row = a[ia:ib] + b[lo - ia : hi - ib]
        row.sort(reverse=True)  # two descending runs: one linear merge
        return row

    def _taken(self, k: int) -> int:
        """How many of the ``k`` largest hashes are the child's (binary search)."""
        a, b = self._child, self._parent
        lo, hi = max(0, k - len(b)), min(k, len(a))
        while lo < hi:
            i = (lo + hi + 1) // 2
            if a[i - 1] >= b[k - i]:  # a[i - 1] comes before b[k - i]: at least i are a's
                lo = i
            else:
                hi = i - 1
        return lo


def _hash_rows(
    out: mmap.mmap,
    runs: Iterable[tuple[int, int]],
    n_leaves: int,
    leaf_row: Callable[[int, int], list[bytes]] | None,
    below: list[bytes] | None = None,
) -> None:
    """Hash the node runs ``runs`` (one per row, deepest first, each the parents of the one
    before: see :func:`_runs_under`) into the packed node array ``out``.

    A run's internal nodes come first (hashed from the run below, or from ``below`` for the
    first run), then its leaves, taken from ``leaf_row``.
    """
    k = _keccak
    row = below or []
    for lo, hi in runs:
        mid = min(max(lo, n_leaves - 1), hi)
        m = 2 * (mid - lo)
        row = [
            k(a + b if a < b else b + a).digest()
            for a, b in zip(row[:m:2], row[1:m:2], strict=True)
        ]
        if mid < hi and leaf_row is not None:
            row += leaf_row(mid - n_leaves + 1, hi - n_leaves + 1)
        out[32 * lo : 32 * hi] = b"".join(row)


def _subtrees(n_leaves: int) -> tuple[int, int, list[int], list[int]]:
    """``(first, end, shared, tail)``: the nodes ``[first, end)`` of one row (depth
    :data:`_SPLIT_DEPTH` at most) whose subtrees cover the tree, as offsets from ``first``:
    ``shared`` (largest first) are taken by either process, ``tail``, the smallest ones (about
    :data:`_PARENT_TAIL` of the leaves), by this process at the end."""
    depth = min(_SPLIT_DEPTH, n_leaves.bit_length() - 1)  # 2**depth <= n: that row is full
    first, end, size = 2**depth - 1, 2 ** (depth + 1) - 1, 2 * n_leaves - 1
    leaves = [
        sum(
            hi - max(lo, n_leaves - 1)
            for lo, hi in _runs_under(node, node + 1, size)
            if hi >= n_leaves
        )
        for node in range(first, end)
    ]
    order = sorted(range(end - first), key=lambda i: (-leaves[i], i))
    cut, tail_leaves = len(order), 0
    while cut > 1 and tail_leaves + leaves[order[cut - 1]] <= _PARENT_TAIL * n_leaves:
        cut -= 1
        tail_leaves += leaves[order[cut]]
    return first, end, order[:cut], order[cut:]


class _TwoProcessBuild(Generic[T]):
    """The tree over ``items`` built by this process and a forked child, with one fork and one
    exchange (:meth:`run`):

    1. the two processes take chunks of the items in turn, hash them into the shared
       input-order array and keep their hashes; each sorts its own and hands them to the
       other through shared memory;
    2. they take the subtrees below depth :data:`_SPLIT_DEPTH` in turn and hash each straight
       into the shared node array, its leaves a run of the merged leaf row that each finds by
       binary search in the two sorted runs; this process hashes the nodes above them last.

    Only bytes cross between the processes, and each rebuilds only the hashes it needs from
    the other. Whatever a failed child took is redone here.
    """

    def __init__(
        self, items: Sequence[T], hash_leaves: Callable[[Sequence[T]], list[bytes]], sort: bool
    ) -> None:
        n = self._n = len(items)
        self._items, self._hash_leaves, self._sort = items, hash_leaves, sort
        chunks = min(_CHUNKS, n)
        self._bounds = [c * n // chunks for c in range(chunks + 1)]
        self._first, self._end, self._shared, self._tail = _subtrees(n)
        self._nodes = mmap.mmap(-1, 32 * (2 * n - 1))
        self._by_input = mmap.mmap(-1, 32 * n)
        self._runs = mmap.mmap(-1, 32 * n)  # the child's sorted hashes first, this process's last

    def run(self) -> tuple[_Packed, _Packed]:
        """(input-order hashes, node array), both packed."""
        n, sort = self._n, self._sort
        with _Tasks(range(len(self._bounds) - 1)) as chunks, _Tasks(self._shared) as subtrees:
            job = _Forked(lambda ready: self._child(ready, chunks, subtrees))
            try:
                mine = self._hash_chunks(chunks.drain())
                m = len(mine)
                if sort:
                    mine.sort(reverse=True)
                    self._runs[32 * (n - m) :] = b"".join(mine)
                job.go()
                theirs: list[bytes] | _Packed
                if job.wait():
                    theirs = _Packed(self._runs, 0, 32 * (n - m))
                else:  # the child failed: its chunks are hashed here
                    theirs = self._hash_chunks(set(range(len(self._bounds) - 1)) - {*chunks.taken})
                    if sort:
                        theirs.sort(reverse=True)
                row = _LeafRow(_Packed(self._by_input), (theirs, mine) if sort else None)
                self._hash_subtrees(subtrees.drain(), row)
                self._hash_subtrees(self._tail, row)  # while the child exits
                if not job.wait():
                    self._hash_subtrees(set(self._shared) - {*subtrees.taken}, row)
                del row, mine, theirs  # ~0.5M hashes freed while the child exits, not after
                self._runs.close()
            finally:
                job.close()
        top = _Packed(self._nodes, 32 * self._first, 32 * self._end).tolist()
        _hash_rows(self._nodes, _runs_under(0, 1, self._first), n, None, top)
        return _Packed(self._by_input), _Packed(self._nodes)

    def _child(  # pragma: no cover - runs in the child
        self, ready: Callable[[], None], chunks: _Tasks, subtrees: _Tasks
    ) -> bool:
        n = self._n
        try:
            mine = self._hash_chunks(chunks.drain())
        except ValueError:
            return False  # the parent redoes it and reports the error
        m = len(mine)
        if self._sort:
            mine.sort(reverse=True)
            self._runs[: 32 * m] = b"".join(mine)
        ready()
        both = (mine, _Packed(self._runs, 32 * m, 32 * n)) if self._sort else None
        self._hash_subtrees(subtrees.drain(), _LeafRow(_Packed(self._by_input), both))
        return True

    def _hash_chunks(self, todo: Iterable[int]) -> list[bytes]:
        """Hash these chunks of the items into the input-order array; their hashes, in order."""
        bounds, items, by_input = self._bounds, self._items, self._by_input
        mine: list[bytes] = []
        for chunk in todo:
            lo, hi = bounds[chunk], bounds[chunk + 1]
            hashes = self._hash_leaves(items[lo:hi])
            if not _are_hashes(hashes, hi - lo):
                raise ValueError("hash_leaves must return one hash per item, of 32 bytes")
            by_input[32 * lo : 32 * hi] = b"".join(hashes)
            mine += hashes
        return mine

    def _hash_subtrees(self, todo: Iterable[int], row: _LeafRow) -> None:
        """Hash the subtrees of these nodes (offsets from the first node of their row)."""
        first, size = self._first, 2 * self._n - 1
        for task in todo:
            _hash_rows(self._nodes, _runs_under(first + task, first + task + 1, size), self._n, row)


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
        :func:`default_workers`) of 2 or more, it is called on chunks of the items, about
        half of them in a forked process, and the subtrees are shared out the same way (see
        the module docstring). The tree is the same byte for byte either way; such a tree
        keeps its node array packed (:attr:`nodes` is then a read-only sequence over it).
        """
        if _parallel(len(items), workers):
            by_input, nodes = _TwoProcessBuild(items, hash_leaves, sort_leaves).run()
            return cls(nodes, sorted_leaves=sort_leaves, by_input=by_input)
        hashes = hash_leaves(items)
        if len(hashes) != len(items):
            raise ValueError("hash_leaves must return one hash per item")
        return cls._from_hashes(hashes, sort_leaves, workers=1)

    @classmethod
    def _from_hashes(
        cls, by_input: list[bytes], sort: bool, *, workers: int | None = None
    ) -> StandardMerkleTree:
        if _parallel(len(by_input), workers):
            return cls.build(by_input, list, sort_leaves=sort, workers=2)
        if not by_input:
            return cls([], sorted_leaves=sort, by_input=[])
        leaves = sorted(by_input, reverse=True) if sort else by_input[::-1]
        nodes = [b""] * (len(leaves) - 1) + leaves
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

    def packed_nodes(self) -> bytes:
        """The node array as one byte string (32 bytes per node, array order); no copy per
        node when the tree was built on two processes or reloaded."""
        nodes = self._nodes
        return nodes.tobytes() if isinstance(nodes, _Packed) else b"".join(nodes)

    def position(self, index: int) -> int:
        """The array index of the ``index``-th leaf in input order."""
        if not 0 <= index < self._n:
            raise IndexError("leaf index out of range")
        return self._index()[index]

    def leaf_hash(self, index: int) -> bytes:
        """The hash of the ``index``-th leaf in input order."""
        return self._nodes[self.position(index)]

    def leaf_hashes(self) -> list[bytes]:
        """Every leaf hash in input order (``leaf_hash(i)`` for each i, in bulk)."""
        if self._by_input is not None:
            return list(self._by_input)
        return [self.leaf_hash(i) for i in range(self._n)]

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
        return b"".join((header, self.packed_nodes(), index.tobytes()))

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
