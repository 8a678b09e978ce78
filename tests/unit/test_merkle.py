"""merkle.tree and merkle.leaves: byte-for-byte OpenZeppelin compatibility, proofs, encodings.

Tests marked ``integration`` run OpenZeppelin's own ``@openzeppelin/merkle-tree`` (through
``tests/oracle/oz_merkle.mjs`` and node) as the oracle; the ``unit`` ones are pure.
"""

from __future__ import annotations

import json
import mmap
import os
import random
import shutil
import subprocess
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from eth_abi.abi import encode as abi_encode
from hypothesis import given, settings
from hypothesis import strategies as st

import merkle.tree
from merkle.leaves import (
    BALANCE_TYPES,
    BALANCE_TYPES_V1,
    ENTRY_TYPES,
    HEADER_TYPES,
    INT256_MAX,
    INT256_MIN,
    UINT64_MAX,
    BalanceLeaf,
    BalanceLeafV1,
    EntryLeaf,
    asset_code_from_bytes32,
    asset_code_to_bytes32,
    balance_tree,
    entry_tree,
    fold_entries,
    hash_balance_leaves,
    hash_entry_leaves,
    header_hash,
)
from merkle.tree import (
    EMPTY_ROOT,
    MultiProof,
    StandardMerkleTree,
    hash_pair,
    keccak256,
    leaf_hash,
    process_proof,
    verify,
    verify_multiproof,
)

PROJECT = Path(__file__).resolve().parents[2]
ORACLE = PROJECT / "tests" / "oracle" / "oz_merkle.mjs"
OZ_PACKAGE = PROJECT / "node_modules" / "@openzeppelin" / "merkle-tree"

ORACLE_SIZES = (1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 100)
ASSETS = ("USD", "EUR", "MILES", "GOLD_OZ", "A" * 32, "X1")
LEDGER = keccak256(b"valueos:test-ledger")

# ----------------------------------------------------------------------------- helpers


def random_amount(rng: random.Random) -> int:
    """Mostly realistic minor-unit amounts, sometimes the int256 extremes and edges."""
    roll = rng.random()
    if roll < 0.1:
        return rng.choice((INT256_MIN, INT256_MAX, -1, 0, 2**63, -(2**63) - 1, 2**63 - 1))
    if roll < 0.2:
        return rng.randint(INT256_MIN, INT256_MAX)
    return rng.randint(-(10**12), 10**12)


def random_u64(rng: random.Random) -> int:
    return rng.choice((0, 1, UINT64_MAX, rng.getrandbits(64), rng.getrandbits(20)))


def random_entry(rng: random.Random, seq: int) -> EntryLeaf:
    return EntryLeaf(
        ledger_id=LEDGER,
        epoch=random_u64(rng),
        seq=seq,
        operation_id=random_u64(rng),
        account_id=random_u64(rng),
        asset_code=rng.choice(ASSETS),
        amount=random_amount(rng),
        balance_after=random_amount(rng),
    )


def random_balance(rng: random.Random, account: int) -> BalanceLeaf:
    return BalanceLeaf(
        ledger_id=rng.randbytes(32),
        epoch=random_u64(rng),
        seq=random_u64(rng),
        account_id=account,
        asset_code=rng.choice(ASSETS),
        balance=random_amount(rng),
        entry_count=random_u64(rng),
        entries_hash=rng.randbytes(32),
    )


def entries(n: int, seed: int = 1) -> list[EntryLeaf]:
    rng = random.Random(seed)
    return [random_entry(rng, seq) for seq in range(1, n + 1)]


def balances(n: int, seed: int = 2) -> list[BalanceLeaf]:
    rng = random.Random(seed)
    return [random_balance(rng, account) for account in range(1, n + 1)]


def as_json(value: object) -> str:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, int):
        return str(value)
    raise TypeError(value)


def spec(values: Sequence[Sequence[object]], types: Sequence[str], **extra: Any) -> dict[str, Any]:
    return {"types": list(types), "values": [[as_json(v) for v in row] for row in values], **extra}


def run_oracle(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenZeppelin's answers for several trees, in one node process."""
    if not OZ_PACKAGE.is_dir():
        pytest.fail("node_modules/@openzeppelin/merkle-tree is not installed (run `make setup`)")
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH: the OpenZeppelin oracle cannot run")
    done = subprocess.run(  # noqa: S603 - fixed command, our own script, JSON on stdin
        [node, str(ORACLE)],
        input=json.dumps(specs),
        capture_output=True,
        text=True,
        cwd=PROJECT,
        check=True,
        timeout=120,
    )
    result: list[dict[str, Any]] = json.loads(done.stdout)
    return result


def hexes(hashes: Sequence[bytes]) -> list[str]:
    return ["0x" + h.hex() for h in hashes]


def assert_same_as_oz(
    tree: StandardMerkleTree, oz: dict[str, Any], multiproofs: Sequence[Sequence[int]] = ()
) -> None:
    assert "0x" + tree.root.hex() == oz["root"]
    assert hexes(tree.nodes) == oz["tree"]
    assert [tree.position(i) for i in range(len(tree))] == oz["treeIndex"]
    for i, oz_proof in enumerate(oz["proofs"]):
        assert hexes(tree.proof(i)) == oz_proof, f"proof {i}"
    for indices, oz_multi in zip(multiproofs, oz["multiproofs"], strict=True):
        ours = tree.multiproof(indices)
        assert hexes(ours.leaves) == oz_multi["leaves"]
        assert hexes(ours.proof) == oz_multi["proof"]
        assert ours.flags == oz_multi["proofFlags"]


def flip(h: bytes, bit: int = 0) -> bytes:
    return bytes([h[0] ^ (1 << bit)]) + h[1:]


# ----------------------------------------------------------------------------- oracle


@pytest.mark.integration
def test_entry_trees_match_openzeppelin() -> None:
    rng = random.Random(20240601)
    sizes = [*ORACLE_SIZES, *(rng.randint(18, 300) for _ in range(6))]
    leaf_sets = [entries(n, seed=n) for n in sizes]
    multis = [[[0], list(range(n)), sorted(rng.sample(range(n), (n + 1) // 2))] for n in sizes]
    oz = run_oracle(
        [
            spec([leaf.values() for leaf in leaves], ENTRY_TYPES, multiproofs=m)
            for leaves, m in zip(leaf_sets, multis, strict=True)
        ]
    )
    for leaves, oz_tree, m in zip(leaf_sets, oz, multis, strict=True):
        tree = entry_tree(leaves)
        assert_same_as_oz(tree, oz_tree, m)
        for i, leaf in enumerate(leaves):
            assert verify(tree.root, leaf.hash(), tree.proof(i))


@pytest.mark.integration
def test_balance_trees_match_openzeppelin() -> None:
    rng = random.Random(7)
    sizes = [*ORACLE_SIZES, *(rng.randint(18, 200) for _ in range(4))]
    leaf_sets = [balances(n, seed=n) for n in sizes]
    oz = run_oracle(
        [spec([leaf.values() for leaf in leaves], BALANCE_TYPES) for leaves in leaf_sets]
    )
    for leaves, oz_tree in zip(leaf_sets, oz, strict=True):
        tree = balance_tree(leaves)
        assert_same_as_oz(tree, oz_tree)
        assert (
            StandardMerkleTree.of([leaf.values() for leaf in leaves], BALANCE_TYPES).root
            == tree.root
        )


@pytest.mark.integration
def test_generic_layouts_unsorted_trees_and_duplicates_match_openzeppelin() -> None:
    rng = random.Random(3)
    types = ["address", "uint256", "bool", "string"]
    values: list[list[object]] = [
        ["0x" + rng.randbytes(20).hex(), rng.getrandbits(256), rng.random() < 0.5, f"n{i}"]
        for i in range(23)
    ]
    values += [values[4], values[0], values[4]]  # duplicated leaves: stable order, like JS

    def as_oz(row: list[object]) -> list[object]:
        return [v if isinstance(v, str | bool) else str(v) for v in row]

    oz = run_oracle(
        [
            {"types": types, "values": [as_oz(r) for r in values]},
            {"types": types, "values": [as_oz(r) for r in values], "sortLeaves": False},
            spec([leaf.values() for leaf in entries(9)], ENTRY_TYPES, sortLeaves=False),
        ]
    )
    assert_same_as_oz(StandardMerkleTree.of(values, types), oz[0])
    assert_same_as_oz(StandardMerkleTree.of(values, types, sort_leaves=False), oz[1])
    unsorted = StandardMerkleTree.from_leaf_hashes(
        [leaf.hash() for leaf in entries(9)], sort_leaves=False
    )
    assert_same_as_oz(unsorted, oz[2])


@pytest.mark.integration
def test_trees_built_on_two_processes_match_openzeppelin(monkeypatch: pytest.MonkeyPatch) -> None:
    """The forked path (normally from 50k leaves on) on small trees, against the oracle."""
    monkeypatch.setattr(merkle.tree, "PARALLEL_MIN_LEAVES", 0)
    sizes = (4, 5, 7, 8, 9, 17, 100, 257)
    leaf_sets = [entries(n, seed=100 + n) for n in sizes]
    oz = run_oracle([spec([leaf.values() for leaf in leaves], ENTRY_TYPES) for leaves in leaf_sets])
    for leaves, oz_tree in zip(leaf_sets, oz, strict=True):
        assert_same_as_oz(StandardMerkleTree.build(leaves, hash_entry_leaves, workers=2), oz_tree)


# ----------------------------------------------------------------------------- hashing


@pytest.mark.unit
def test_keccak_is_ethereum_keccak_not_sha3() -> None:
    assert keccak256(b"").hex() == (
        "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
    )


@pytest.mark.unit
def test_node_hash_sorts_the_pair() -> None:
    a, b = keccak256(b"a"), keccak256(b"b")
    low, high = sorted((a, b))
    assert hash_pair(a, b) == hash_pair(b, a) == keccak256(low + high)
    assert hash_pair(a, b) != keccak256(high + low)


@pytest.mark.unit
def test_small_trees_by_hand() -> None:
    h = sorted(keccak256(bytes([i])) for i in range(3))
    one = StandardMerkleTree.from_leaf_hashes([h[0]])
    assert one.root == h[0]
    assert one.proof(0) == []
    two = StandardMerkleTree.from_leaf_hashes([h[1], h[0]])
    assert two.nodes == [hash_pair(h[0], h[1]), h[1], h[0]]
    assert two.proof(0) == [h[0]]
    # three leaves: [root, node(h1, h0), h2, h1, h0]; the largest leaf sits under the root
    three = StandardMerkleTree.from_leaf_hashes([h[2], h[0], h[1]])
    assert three.nodes == [hash_pair(hash_pair(h[1], h[0]), h[2]), hash_pair(h[1], h[0]), *h[::-1]]
    assert three.proof(0) == [three.nodes[1]]
    assert three.proof(1) == [h[1], h[2]]


# ----------------------------------------------------------------------------- proofs


@pytest.mark.unit
@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 13, 33])
def test_every_proof_verifies_and_forgeries_fail(n: int) -> None:
    leaves = entries(n, seed=100 + n)
    tree = entry_tree(leaves)
    root = tree.root
    for i, leaf in enumerate(leaves):
        proof = tree.proof(i)
        assert len(proof) == (tree.position(i) + 1).bit_length() - 1
        assert verify(root, leaf.hash(), proof)
        assert tree.proof_for_hash(leaf.hash()) == proof
        for k in range(len(proof)):  # a wrong sibling at any level
            assert not verify(root, leaf.hash(), [*proof[:k], flip(proof[k]), *proof[k + 1 :]])
        if proof:
            assert not verify(root, leaf.hash(), proof[:-1])  # truncated
        assert not verify(root, leaf.hash(), [*proof, keccak256(b"extra")])  # extended
        assert not verify(root, leaf.hash(), [*proof, root])
        for j in range(n):  # the proof of another leaf
            if j != i:
                assert not verify(root, leaf.hash(), tree.proof(j))
        assert not verify(flip(root, 7), leaf.hash(), proof)


@pytest.mark.unit
def test_tampered_and_reinterpreted_leaves_fail() -> None:
    leaves = entries(20, seed=9)
    tree = entry_tree(leaves)
    for i, leaf in enumerate(leaves):
        proof = tree.proof(i)
        tampered = EntryLeaf(
            leaf.ledger_id,
            leaf.epoch,
            leaf.seq,
            leaf.operation_id,
            leaf.account_id,
            leaf.asset_code,
            leaf.amount + 1 if leaf.amount < INT256_MAX else leaf.amount - 1,
            leaf.balance_after,
        )
        assert not verify(tree.root, tampered.hash(), proof)
        # the same words with the BALANCE kind tag: a different leaf that does not verify
        swapped = (2, *leaf.values()[1:])
        swapped_hash = leaf_hash(swapped, ENTRY_TYPES)
        assert swapped_hash != leaf.hash()
        assert not verify(tree.root, swapped_hash, proof)
        # the entry's own fields read as a balance leaf
        as_balance = BalanceLeaf(
            leaf.ledger_id, leaf.epoch, leaf.seq, leaf.account_id, leaf.asset_code, leaf.amount,
            leaf.operation_id, leaf.ledger_id,
        )  # fmt: skip
        assert as_balance.hash() != leaf.hash()
        assert not verify(tree.root, as_balance.hash(), proof)
        with pytest.raises(KeyError):
            tree.proof_for_hash(as_balance.hash())


@pytest.mark.unit
def test_verify_rejects_malformed_input_without_raising() -> None:
    tree = entry_tree(entries(6))
    leaf, proof = tree.leaf_hash(2), tree.proof(2)
    assert verify(tree.root, leaf, proof)
    assert not verify(tree.root, leaf[:31], proof)
    assert not verify(tree.root[:31], leaf, proof)
    assert not verify(tree.root, leaf, [*proof[:-1], proof[-1] + b"\0"])
    assert not verify(tree.root, leaf, [p[:16] for p in proof])
    single = StandardMerkleTree.from_leaf_hashes([leaf])
    assert verify(single.root, leaf, [])
    assert not verify(single.root[:31], leaf[:31], [])  # the fold alone would accept it


@pytest.mark.unit
def test_multiproofs_verify_and_reject_tampering() -> None:
    tree = entry_tree(entries(37))
    rng = random.Random(5)
    for size in (1, 2, 5, 17, 37):
        indices = rng.sample(range(37), size)
        multi = tree.multiproof(indices)
        assert sorted(multi.leaves) == sorted(tree.leaf_hash(i) for i in indices)
        assert verify_multiproof(tree.root, multi)
        forged_leaf = MultiProof(
            [flip(multi.leaves[0]), *multi.leaves[1:]], multi.proof, multi.flags
        )
        assert not verify_multiproof(tree.root, forged_leaf)
        if multi.proof:
            short = MultiProof(multi.leaves, multi.proof[:-1], multi.flags)
            assert not verify_multiproof(tree.root, short)
    assert verify_multiproof(tree.root, tree.multiproof([]))
    with pytest.raises(ValueError, match="duplicated"):
        tree.multiproof([3, 3])


@pytest.mark.unit
def test_lookups_and_errors() -> None:
    leaves = entries(10)
    tree = entry_tree(leaves)
    assert len(tree) == 10
    for i, leaf in enumerate(leaves):
        assert tree.leaf_hash(i) == leaf.hash()
        assert tree.find(leaf.hash()) == tree.position(i)
    with pytest.raises(IndexError):
        tree.proof(10)
    with pytest.raises(IndexError):
        tree.proof(-1)
    with pytest.raises(KeyError):
        tree.proof_for_hash(bytes(32))
    with pytest.raises(ValueError, match="32-byte"):
        StandardMerkleTree.from_leaf_hashes([b"short"])


@pytest.mark.unit
def test_empty_tree_root_is_zero() -> None:
    tree = entry_tree([])
    assert tree.root == EMPTY_ROOT == bytes(32)
    assert len(tree) == 0
    with pytest.raises(IndexError):
        tree.proof(0)
    again = StandardMerkleTree.from_bytes(tree.to_bytes())
    assert again.root == EMPTY_ROOT
    again.validate()


# ----------------------------------------------------------------------------- storage


@pytest.mark.unit
@pytest.mark.parametrize("n", [1, 2, 3, 10, 64, 257])
def test_serialise_and_reload_give_identical_proofs(n: int) -> None:
    leaves = entries(n, seed=n)
    tree = entry_tree(leaves)
    data = tree.to_bytes()
    assert len(data) == 16 + 32 * (2 * n - 1) + 4 * n
    loaded = StandardMerkleTree.from_bytes(data)
    loaded.validate()
    assert loaded.root == tree.root
    assert list(loaded.nodes) == list(tree.nodes)
    for i, leaf in enumerate(leaves):
        assert loaded.position(i) == tree.position(i)
        assert loaded.proof(i) == tree.proof(i)
        assert loaded.proof_for_hash(leaf.hash()) == tree.proof(i)
    assert loaded.to_bytes() == data
    unsorted = StandardMerkleTree.from_leaf_hashes([x.hash() for x in leaves], sort_leaves=False)
    reloaded = StandardMerkleTree.from_bytes(unsorted.to_bytes())
    assert [reloaded.proof(i) for i in range(n)] == [unsorted.proof(i) for i in range(n)]


@pytest.mark.unit
def test_corrupted_storage_is_detected() -> None:
    tree = entry_tree(entries(12))
    data = bytearray(tree.to_bytes())
    data[16 + 32 * 1] ^= 1  # an internal node (array index 1)
    broken = StandardMerkleTree.from_bytes(bytes(data))
    with pytest.raises(ValueError, match="invalid"):
        broken.validate()

    # proofs that read node 1 (those of the leaves under node 2) no longer verify; the others
    # only recompute node 1 from intact data and stay valid
    def under(pos: int, ancestor: int) -> bool:
        while pos > ancestor:
            pos = (pos - 1) // 2
        return pos == ancestor

    below_2 = [i for i in range(12) if under(tree.position(i), 2)]
    below_1 = [i for i in range(12) if under(tree.position(i), 1)]
    assert below_1
    assert below_2
    for i in below_2:
        with pytest.raises(ValueError, match="inconsistent"):
            broken.proof(i)
    for i in below_1:
        assert broken.proof(i) == tree.proof(i)
    with pytest.raises(ValueError, match="magic"):
        StandardMerkleTree.from_bytes(b"XXXX" + bytes(data[4:]))
    with pytest.raises(ValueError, match="length"):
        StandardMerkleTree.from_bytes(bytes(data[:-1]))
    bad_index = bytearray(tree.to_bytes())
    bad_index[-4:] = (0).to_bytes(4, "big")  # points at an internal node
    with pytest.raises(ValueError, match="out of range"):
        StandardMerkleTree.from_bytes(bytes(bad_index))


# ----------------------------------------------------------------------------- encodings

ints256 = st.one_of(
    st.integers(INT256_MIN, INT256_MAX),
    st.integers(-(2**64), 2**64),
    st.sampled_from([INT256_MIN, INT256_MAX, -1, 0, 2**63, 2**63 - 1, -(2**63), -(2**63) - 1]),
)
u64s = st.one_of(st.integers(0, UINT64_MAX), st.sampled_from([0, UINT64_MAX]))
codes = st.from_regex(r"[A-Z0-9_]{1,32}", fullmatch=True)
bytes32s = st.binary(min_size=32, max_size=32)


@pytest.mark.unit
@settings(max_examples=300, deadline=None)
@given(bytes32s, u64s, u64s, u64s, u64s, codes, ints256, ints256)
def test_entry_encoding_equals_eth_abi(
    ledger: bytes, epoch: int, seq: int, op: int, account: int, code: str, amount: int, after: int
) -> None:
    leaf = EntryLeaf(ledger, epoch, seq, op, account, code, amount, after)
    expected = abi_encode(list(ENTRY_TYPES), list(leaf.values()))
    assert leaf.encode() == expected
    assert len(expected) == 9 * 32
    assert leaf.hash() == keccak256(keccak256(expected)) == leaf_hash(leaf.values(), ENTRY_TYPES)
    assert hash_entry_leaves([leaf]) == [leaf.hash()]


@pytest.mark.unit
@settings(max_examples=300, deadline=None)
@given(bytes32s, u64s, u64s, u64s, codes, ints256, u64s, bytes32s)
def test_balance_encoding_equals_eth_abi(
    ledger: bytes, epoch: int, seq: int, account: int, code: str, balance: int, count: int,
    entries_hash: bytes,
) -> None:  # fmt: skip
    leaf = BalanceLeaf(ledger, epoch, seq, account, code, balance, count, entries_hash)
    expected = abi_encode(list(BALANCE_TYPES), list(leaf.values()))
    assert len(expected) == 9 * 32
    assert leaf.encode() == expected
    assert leaf.hash() == keccak256(keccak256(expected))
    assert hash_balance_leaves([leaf]) == [leaf.hash()]
    old = BalanceLeafV1(ledger, epoch, seq, account, code, balance)
    expected_v1 = abi_encode(list(BALANCE_TYPES_V1), list(old.values()))
    assert old.encode() == expected_v1
    assert hash_balance_leaves([old]) == [old.hash()] != [leaf.hash()]


@pytest.mark.unit
@settings(max_examples=100, deadline=None)
@given(st.lists(bytes32s, max_size=8), st.integers(0, 8))
def test_fold_entries_is_the_running_keccak_and_splits_anywhere(
    hashes: list[bytes], cut: int
) -> None:
    """h_i = keccak256(h_(i-1) ++ leafHash_i) from zero bytes; folding in two parts (two
    epochs) equals folding at once, and dropping, adding or swapping an entry changes it."""
    h = bytes(32)
    for x in hashes:
        h = keccak256(h + x)
    whole = fold_entries(0, bytes(32), hashes)
    assert whole == (len(hashes), h)
    cut = min(cut, len(hashes))
    assert fold_entries(*fold_entries(0, bytes(32), hashes[:cut]), hashes[cut:]) == whole
    if hashes:
        assert fold_entries(0, bytes(32), hashes[1:])[1] != h
        assert fold_entries(0, bytes(32), [*hashes, hashes[0]])[1] != h
    if len(set(hashes)) > 1:
        assert fold_entries(0, bytes(32), hashes[::-1])[1] != h or hashes == hashes[::-1]


@pytest.mark.unit
def test_bulk_hashing_equals_per_leaf_hashing() -> None:
    mixed = entries(300, seed=11)  # includes amounts wider than 64 bits: the slow fallback
    small = [x for x in mixed if all(-(2**63) <= v < 2**63 for v in (x.amount, x.balance_after))]
    assert len(small) < len(mixed)
    assert hash_entry_leaves(mixed) == [x.hash() for x in mixed]
    assert hash_entry_leaves(small) == [x.hash() for x in small]
    some = balances(300, seed=12)
    assert hash_balance_leaves(some) == [x.hash() for x in some]


@pytest.mark.unit
@settings(max_examples=200, deadline=None)
@given(bytes32s, u64s, bytes32s, bytes32s, bytes32s, u64s, u64s, u64s)
def test_header_hash_is_single_keccak_of_the_abi_encoding(
    ledger: bytes,
    epoch: int,
    prev: bytes,
    entries_root: bytes,
    balances_root: bytes,
    first: int,
    last: int,
    count: int,
) -> None:
    args = (ledger, epoch, prev, entries_root, balances_root, first, last, count)
    encoded = abi_encode(list(HEADER_TYPES), list(args))
    assert header_hash(*args) == keccak256(encoded)
    assert header_hash(*args) != keccak256(keccak256(encoded))


@pytest.mark.unit
def test_asset_codes() -> None:
    assert asset_code_to_bytes32("USD") == b"USD" + bytes(29)
    assert asset_code_to_bytes32("A" * 32) == b"A" * 32
    for code in ASSETS:
        assert asset_code_from_bytes32(asset_code_to_bytes32(code)) == code
    for bad in ("", "usd", "US D", "A" * 33, "ÉUR", "USD\0", "US-D"):
        with pytest.raises(ValueError, match="asset code"):
            asset_code_to_bytes32(bad)
    for bad_word in (bytes(32), b"U\0SD" + bytes(28), b"usd" + bytes(29), b"USD", b"\xff" * 32):
        with pytest.raises(ValueError, match="asset code"):
            asset_code_from_bytes32(bad_word)


ENTRY_OK: dict[str, Any] = {
    "ledger_id": LEDGER,
    "epoch": 1,
    "seq": 1,
    "operation_id": 1,
    "account_id": 1,
    "asset_code": "USD",
    "amount": 1,
    "balance_after": 1,
}


@pytest.mark.unit
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("epoch", -1),
        ("epoch", UINT64_MAX + 1),
        ("seq", 2**70),
        ("operation_id", -5),
        ("account_id", UINT64_MAX + 1),
        ("seq", True),
        ("epoch", 1.0),
        ("amount", INT256_MAX + 1),
        ("amount", INT256_MIN - 1),
        ("balance_after", INT256_MAX + 1),
        ("balance_after", "10"),
        ("ledger_id", bytes(31)),
        ("ledger_id", "0x" + "00" * 32),
        ("asset_code", "usd"),
    ],
)
def test_entry_range_errors(field: str, value: object) -> None:
    EntryLeaf(**ENTRY_OK)  # the baseline is valid
    with pytest.raises(ValueError, match=field.split("_", maxsplit=1)[0]):
        EntryLeaf(**{**ENTRY_OK, field: value})


@pytest.mark.unit
def test_balance_and_header_range_errors() -> None:
    z = bytes(32)
    BalanceLeaf(LEDGER, 0, 0, 0, "USD", INT256_MIN, 0, z)
    BalanceLeaf(LEDGER, UINT64_MAX, UINT64_MAX, UINT64_MAX, "USD", INT256_MAX, UINT64_MAX, z)
    with pytest.raises(ValueError, match="balance"):
        BalanceLeaf(LEDGER, 0, 0, 0, "USD", INT256_MAX + 1, 0, z)
    with pytest.raises(ValueError, match="account_id"):
        BalanceLeaf(LEDGER, 0, 0, -1, "USD", 0, 0, z)
    with pytest.raises(ValueError, match="seq"):
        BalanceLeaf(LEDGER, 0, UINT64_MAX + 1, 0, "USD", 0, 0, z)
    with pytest.raises(ValueError, match="entry_count"):
        BalanceLeaf(LEDGER, 0, 0, 0, "USD", 0, -1, z)
    with pytest.raises(ValueError, match="entries_hash"):
        BalanceLeaf(LEDGER, 0, 0, 0, "USD", 0, 0, z[:31])
    zero = bytes(32)
    header_hash(LEDGER, UINT64_MAX, zero, zero, zero, 0, UINT64_MAX, UINT64_MAX)
    with pytest.raises(ValueError, match="leaf_count"):
        header_hash(LEDGER, 1, zero, zero, zero, 1, 1, UINT64_MAX + 1)
    with pytest.raises(ValueError, match="prev_header"):
        header_hash(LEDGER, 1, zero[:31], zero, zero, 1, 1, 1)
    with pytest.raises(ValueError, match="epoch"):
        header_hash(LEDGER, -1, zero, zero, zero, 1, 1, 1)


@pytest.mark.unit
def test_leaves_are_frozen_values() -> None:
    leaf = EntryLeaf(**ENTRY_OK)
    with pytest.raises(AttributeError):
        leaf.amount = 2  # type: ignore[misc]
    assert leaf == EntryLeaf(**ENTRY_OK)
    assert leaf.TYPES == ENTRY_TYPES
    assert BalanceLeaf.TYPES == BALANCE_TYPES
    assert leaf.values()[0] == 1
    assert BalanceLeaf(LEDGER, 0, 0, 0, "USD", 0, 0, bytes(32)).values()[0] == 2
    assert process_proof(leaf.hash(), []) == leaf.hash()


# ----------------------------------------------------------------------------- two processes


@pytest.mark.unit
@pytest.mark.parametrize("sort", [True, False])
def test_two_process_build_is_byte_identical(monkeypatch: pytest.MonkeyPatch, sort: bool) -> None:
    monkeypatch.setattr(merkle.tree, "PARALLEL_MIN_LEAVES", 0)
    rng = random.Random(11)
    for n in [*range(1, 40), 63, 64, 65, 127, 128, 129, 1000, 1023, 1025, 4097]:
        hashes = [rng.randbytes(32) for _ in range(n)]
        if n > 9:
            hashes[2] = hashes[9]  # equal leaves keep their input order (positions)
        one = StandardMerkleTree.build(hashes, list, sort_leaves=sort, workers=1)
        two = StandardMerkleTree.build(hashes, list, sort_leaves=sort, workers=2)
        again = StandardMerkleTree.from_leaf_hashes(hashes, sort_leaves=sort, workers=2)
        assert list(two.nodes) == list(one.nodes) == list(again.nodes), n
        assert [two.position(i) for i in range(n)] == [one.position(i) for i in range(n)]
        assert two.to_bytes() == one.to_bytes()


@pytest.mark.unit
def test_the_subtrees_the_two_processes_take_cover_every_node_once() -> None:
    for n in [*range(4, 70), 1000, 1025, 100_000, 1_000_000]:
        first, end, shared, tail = merkle.tree._subtrees(n)
        assert sorted(shared + tail) == list(range(end - first)), n
        runs = [
            *(
                r
                for t in shared + tail
                for r in merkle.tree._runs_under(first + t, first + t + 1, 2 * n - 1)
            ),
            *merkle.tree._runs_under(0, 1, first),
        ]
        covered = sorted(i for lo, hi in runs for i in range(lo, hi))
        assert covered == list(range(2 * n - 1)), n
        leaves_in_tail = sum(
            hi - max(lo, n - 1)
            for t in tail
            for lo, hi in merkle.tree._runs_under(first + t, first + t + 1, 2 * n - 1)
            if hi >= n
        )
        assert leaves_in_tail <= merkle.tree._PARENT_TAIL * n, n
        if n >= 100_000:  # a few small subtrees are kept for the parent
            assert tail and leaves_in_tail >= merkle.tree._PARENT_TAIL * n / 2, n


@pytest.mark.unit
def test_internal_runs_cover_every_internal_node_once() -> None:
    for n in [*range(1, 70), 1000, 1025]:
        runs = merkle.tree._runs_under(0, 1, n - 1)
        covered = sorted(i for lo, hi in runs for i in range(lo, hi))
        assert covered == list(range(n - 1)), n


@pytest.mark.unit
def test_a_failed_child_is_redone_in_this_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """A child that cannot deliver (here: wrong-sized hashes there) costs time, not the tree."""
    monkeypatch.setattr(merkle.tree, "PARALLEL_MIN_LEAVES", 0)
    parent = os.getpid()

    def hash_leaves(items: Sequence[bytes]) -> list[bytes]:
        return [keccak256(x) if os.getpid() == parent else b"short" for x in items]

    items = [i.to_bytes(4, "big") for i in range(301)]
    two = StandardMerkleTree.build(items, hash_leaves, workers=2)
    assert two.root == StandardMerkleTree.build(items, hash_leaves, workers=1).root
    with pytest.raises(ValueError, match="one hash per item"):
        StandardMerkleTree.build(items, lambda xs: [keccak256(x) for x in xs][1:], workers=2)


@pytest.mark.unit
@pytest.mark.parametrize("sort", [True, False])
def test_a_child_failing_after_the_exchange_is_redone_here(
    monkeypatch: pytest.MonkeyPatch, sort: bool
) -> None:
    """The child dies while hashing its subtrees: this process hashes the ones it took."""
    monkeypatch.setattr(merkle.tree, "PARALLEL_MIN_LEAVES", 0)
    parent = os.getpid()
    hash_rows = merkle.tree._hash_rows

    def dying_in_child(*args: Any, **kwargs: Any) -> None:
        if os.getpid() != parent:
            os._exit(3)
        hash_rows(*args, **kwargs)

    monkeypatch.setattr(merkle.tree, "_hash_rows", dying_in_child)
    hashes = [keccak256(i.to_bytes(4, "big")) for i in range(3000)]
    two = StandardMerkleTree.build(hashes, list, sort_leaves=sort, workers=2)
    one = StandardMerkleTree.build(hashes, list, sort_leaves=sort, workers=1)
    assert two.to_bytes() == one.to_bytes()


@pytest.mark.unit
def test_a_stuck_child_costs_the_timeout_not_the_tree(monkeypatch: pytest.MonkeyPatch) -> None:
    """A child blocked for good (as on a lock held at fork time) is killed at the deadline and
    its share is hashed here."""
    monkeypatch.setattr(merkle.tree, "PARALLEL_MIN_LEAVES", 0)
    monkeypatch.setattr(merkle.tree, "CHILD_TIMEOUT_S", 0.5)
    parent = os.getpid()

    def hash_leaves(items: Sequence[bytes]) -> list[bytes]:
        if os.getpid() != parent:
            threading.Event().wait()  # never set
        return [keccak256(x) for x in items]

    items = [i.to_bytes(4, "big") for i in range(500)]
    two = StandardMerkleTree.build(items, hash_leaves, workers=2)
    assert two.to_bytes() == StandardMerkleTree.build(items, hash_leaves, workers=1).to_bytes()


@pytest.mark.unit
def test_a_stuck_child_is_killed_and_reaped() -> None:
    """A child that never finishes (as one blocked on a lock held at fork time would) is
    killed at the deadline: the caller gets None and redoes the work; no zombie is left."""

    def stuck() -> bytes:
        threading.Event().wait()  # never set
        return b"\x00" * 32

    job = merkle.tree._Forked(stuck)
    assert not job.wait(timeout_s=0.2)
    with pytest.raises(ChildProcessError):
        os.waitpid(job._pid, os.WNOHANG)  # already reaped
    assert not job.wait()  # and it stays failed


@pytest.mark.unit
def test_a_forked_child_hands_back_its_steps() -> None:
    shared = mmap.mmap(-1, 8)

    def work(ready: Callable[[], None]) -> bool:
        shared[:4] = b"step"
        ready()  # returns once the parent has put its part in
        shared[4:] = bytes(shared[:4]).upper()
        return True

    job = merkle.tree._Forked(work)
    assert job.wait(timeout_s=60)
    assert shared[:4] == b"step"
    shared[:4] = b"next"
    job.go()
    assert job.wait(timeout_s=60)
    assert shared[:] == b"nextNEXT"
    job.close()
    with pytest.raises(ChildProcessError):
        os.waitpid(job._pid, os.WNOHANG)
    failed = merkle.tree._Forked(lambda ready: False)
    assert not failed.wait(timeout_s=60)


@pytest.mark.unit
def test_default_workers() -> None:
    assert 1 <= merkle.tree.default_workers() <= 2


@pytest.mark.unit
def test_packed_hashes_read_as_a_sequence() -> None:
    hashes = [keccak256(bytes([i])) for i in range(7)]
    shared = mmap.mmap(-1, 32 * 9)
    shared[32:-32] = b"".join(hashes)
    for buf, start in ((b"".join(hashes), 0), (shared, 32)):
        packed = merkle.tree._Packed(buf, start, start + 32 * 7)
        assert len(packed) == 7 and list(packed) == hashes and packed.tolist() == hashes
        assert packed[1:6:2] == hashes[1:6:2] and packed[2:5] == hashes[2:5]
        assert packed[5:2] == [] and packed[-3:] == hashes[-3:] and packed[::-1] == hashes[::-1]
        assert [packed[i] for i in range(-7, 7)] == hashes + hashes
        assert packed.tobytes() == b"".join(hashes)
        with pytest.raises(IndexError):
            packed[7]


@pytest.mark.unit
@pytest.mark.parametrize("n", [0, 1, 2, 5, 64, 1000])
def test_leaf_hashes_are_the_input_order_hashes(n: int) -> None:
    leaves = entries(n, seed=n)
    tree = entry_tree(leaves)
    assert tree.leaf_hashes() == [leaf.hash() for leaf in leaves]
    assert tree.leaf_hashes() == [tree.leaf_hash(i) for i in range(n)]
