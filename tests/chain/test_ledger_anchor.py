"""LedgerAnchor on a real anvil node: anchoring rules, custom errors, roles, proofs, gas.

Independent oracles: headers and leaf hashes are computed here with eth_abi + keccak straight
from the agreed formats, and Merkle trees/proofs with OpenZeppelin's own
``@openzeppelin/merkle-tree`` (npm) through a small node call.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from eth_abi import decode, encode
from eth_typing import ChecksumAddress
from eth_utils import keccak
from web3 import Web3
from web3.contract import Contract
from web3.contract.contract import ContractFunction
from web3.exceptions import ContractCustomError

from merkle import leaves as py_leaves

pytestmark = pytest.mark.chain

ROOT = Path(__file__).resolve().parents[2]
ZERO32 = b"\x00" * 32
INT256_MIN = -(2**255)
INT256_MAX = 2**255 - 1
UINT64_MAX = 2**64 - 1

ENTRY_TYPES = [
    "uint8",
    "bytes32",
    "uint64",
    "uint64",
    "uint64",
    "uint64",
    "bytes32",
    "int256",
    "int256",
]
BALANCE_TYPES = [
    "uint8", "bytes32", "uint64", "uint64", "uint64", "bytes32", "int256", "uint64", "bytes32",
]  # fmt: skip
HEADER_TYPES = [
    "bytes32",
    "uint64",
    "bytes32",
    "bytes32",
    "bytes32",
    "uint64",
    "uint64",
    "uint64",
]


# ---------------------------------------------------------------------------------------------
# Reference computations (from the agreed formats, not from the contract)


def leaf_hash(types: Sequence[str], values: Sequence[Any]) -> bytes:
    """OZ StandardMerkleTree leaf: keccak256(bytes.concat(keccak256(abi.encode(values))))."""
    return keccak(keccak(encode(list(types), list(values))))


def header_hash(
    ledger_id: bytes,
    epoch: int,
    prev: bytes,
    entries_root: bytes,
    balances_root: bytes,
    first_seq: int,
    last_seq: int,
    leaf_count: int,
) -> bytes:
    values = [ledger_id, epoch, prev, entries_root, balances_root, first_seq, last_seq, leaf_count]
    return keccak(encode(HEADER_TYPES, values))


@dataclass(frozen=True)
class Entry:
    seq: int
    operation_id: int
    account_id: int
    asset_code: bytes
    amount: int
    balance_after: int

    def leaf(self, ledger_id: bytes, epoch: int) -> list[Any]:
        return [
            1,
            ledger_id,
            epoch,
            self.seq,
            self.operation_id,
            self.account_id,
            self.asset_code,
            self.amount,
            self.balance_after,
        ]

    def args(self, epoch: int) -> list[Any]:
        """verifyEntry's arguments after the proof."""
        return [
            epoch,
            self.seq,
            self.operation_id,
            self.account_id,
            self.asset_code,
            self.amount,
            self.balance_after,
        ]


@dataclass(frozen=True)
class Balance:
    seq: int
    account_id: int
    asset_code: bytes
    balance: int
    entry_count: int
    entries_hash: bytes

    def leaf(self, ledger_id: bytes, epoch: int) -> list[Any]:
        return [2, ledger_id, epoch, self.seq, self.account_id, self.asset_code, self.balance,
                self.entry_count, self.entries_hash]  # fmt: skip

    def args(self, epoch: int) -> list[Any]:
        return [epoch, self.seq, self.account_id, self.asset_code, self.balance,
                self.entry_count, self.entries_hash]  # fmt: skip


def _int256(rng: random.Random) -> int:
    return rng.choice(
        [
            rng.randint(-(10**12), 10**12),
            rng.randint(INT256_MIN, INT256_MAX),
            INT256_MIN,
            INT256_MAX,
            0,
        ]
    )


def random_entries(rng: random.Random, n: int, first_seq: int = 1) -> list[Entry]:
    return [
        Entry(
            seq=first_seq + i,
            operation_id=rng.randint(1, UINT64_MAX),
            account_id=rng.randint(0, UINT64_MAX),
            asset_code=rng.randbytes(32),
            amount=_int256(rng),
            balance_after=_int256(rng),
        )
        for i in range(n)
    ]


def random_balances(rng: random.Random, n: int, first_seq: int = 1) -> list[Balance]:
    return [
        Balance(
            seq=first_seq + i,
            account_id=rng.randint(0, UINT64_MAX),
            asset_code=rng.randbytes(32),
            balance=_int256(rng),
            entry_count=rng.randint(0, UINT64_MAX),
            entries_hash=rng.randbytes(32),
        )
        for i in range(n)
    ]


@dataclass(frozen=True)
class Tree:
    root: bytes
    proofs: list[list[bytes]]  # by original leaf index


_OZ_SCRIPT = """
const { StandardMerkleTree } = require('@openzeppelin/merkle-tree');
let input = '';
process.stdin.on('data', (d) => { input += d; });
process.stdin.on('end', () => {
  const out = JSON.parse(input).map(({ types, values }) => {
    const tree = StandardMerkleTree.of(values, types);
    return {
      root: tree.root,
      leaves: values.map((v) => tree.leafHash(v)),
      proofs: values.map((_, i) => tree.getProof(i)),
    };
  });
  process.stdout.write(JSON.stringify(out));
});
"""


def _js(value: Any) -> Any:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return str(value)


def oz_trees(requests: Sequence[tuple[Sequence[str], Sequence[Sequence[Any]]]]) -> list[Tree]:
    """Build OpenZeppelin StandardMerkleTrees with the npm library (one node process)."""
    node = shutil.which("node")
    if node is None or not (ROOT / "node_modules" / "@openzeppelin" / "merkle-tree").is_dir():
        pytest.fail("node or @openzeppelin/merkle-tree missing: run `npm install`")
    payload = [
        {"types": list(types), "values": [[_js(v) for v in leaf] for leaf in leaves]}
        for types, leaves in requests
    ]
    # Fixed script and a resolved node path; the input goes through stdin.
    done = subprocess.run(  # noqa: S603
        [node, "-e", _OZ_SCRIPT],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    trees = []
    for (types, leaves), out in zip(requests, json.loads(done.stdout), strict=True):
        # The npm tree's leaf hashes must equal ours computed from the agreed format.
        assert [bytes.fromhex(h[2:]) for h in out["leaves"]] == [
            leaf_hash(types, leaf) for leaf in leaves
        ]
        trees.append(
            Tree(
                root=bytes.fromhex(out["root"][2:]),
                proofs=[[bytes.fromhex(p[2:]) for p in proof] for proof in out["proofs"]],
            )
        )
    return trees


# ---------------------------------------------------------------------------------------------
# Chain helpers


def error_selectors(contract: Contract) -> dict[bytes, tuple[str, list[str]]]:
    table = {}
    for item in contract.abi:
        if item["type"] == "error":
            types = [i["type"] for i in item["inputs"]]
            table[keccak(text=f"{item['name']}({','.join(types)})")[:4]] = (item["name"], types)
    return table


def decode_revert(contract: Contract, data: Any) -> tuple[str, tuple[Any, ...]]:
    assert isinstance(data, str), f"no revert data: {data!r}"
    raw = bytes.fromhex(data.removeprefix("0x"))
    name, types = error_selectors(contract)[raw[:4]]
    return name, tuple(decode(types, raw[4:]))


def assert_reverts(
    contract: Contract,
    fn: ContractFunction,
    sender: ChecksumAddress,
    error: str,
    args: tuple[Any, ...],
) -> None:
    """The call reverts with custom error ``error(args)``."""
    with pytest.raises(ContractCustomError) as info:
        fn.call({"from": sender})
    assert decode_revert(contract, info.value.data) == (error, args)


@dataclass(frozen=True)
class Anchored:
    epoch: int
    header: bytes
    entries_root: bytes
    balances_root: bytes
    gas_used: int
    calldata: bytes


class Anchorer:
    """Anchors epochs in order, keeping the header chain like the Python job does."""

    def __init__(self, w3: Web3, contract: Contract, ledger_id: bytes, sender: ChecksumAddress):
        self.w3 = w3
        self.contract = contract
        self.ledger_id = ledger_id
        self.sender = sender
        self.prev = ZERO32
        self.epoch = 0
        self.next_seq = 1
        self.fields: dict[int, tuple[Any, ...]] = {}

    def header(self, epoch: int) -> tuple[Any, ...]:
        """The header fields anchored for ``epoch`` (made-up ones for an unknown epoch)."""
        return self.fields.get(epoch, (epoch, ZERO32, ZERO32, ZERO32, 0, 0, 0))

    def anchor(
        self, entries_root: bytes, balances_root: bytes, leaf_count: int | None = None
    ) -> Anchored:
        epoch = self.epoch + 1
        count = 0 if leaf_count is None else leaf_count
        first, last = self.next_seq, self.next_seq + max(count, 1) - 1
        fn = self.contract.functions.anchor(
            epoch, self.prev, entries_root, balances_root, first, last, count
        )
        tx_hash = fn.transact({"from": self.sender})
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)
        assert receipt["status"] == 1
        header = header_hash(
            self.ledger_id, epoch, self.prev, entries_root, balances_root, first, last, count
        )
        (event,) = self.contract.events.Anchored().process_receipt(receipt)
        assert event["args"]["epoch"] == epoch
        assert event["args"]["headerHash"] == header
        assert event["args"]["entriesRoot"] == entries_root
        assert event["args"]["balancesRoot"] == balances_root
        assert event["args"]["firstSeq"] == first
        assert event["args"]["lastSeq"] == last
        assert event["args"]["leafCount"] == count
        calldata = bytes(self.w3.eth.get_transaction(tx_hash)["input"])
        self.fields[epoch] = (epoch, self.prev, entries_root, balances_root, first, last, count)
        self.prev, self.epoch, self.next_seq = header, epoch, last + 1
        return Anchored(epoch, header, entries_root, balances_root, receipt["gasUsed"], calldata)


def verify_entry(anchorer: Anchorer, proof: list[bytes], epoch: int, *leaf: Any) -> bool:
    """verifyEntry with the header fields ``anchorer`` anchored for ``epoch``."""
    fn = anchorer.contract.functions.verifyEntry(anchorer.header(epoch), proof, *leaf)
    return bool(fn.call())


def verify_balance(anchorer: Anchorer, proof: list[bytes], epoch: int, *leaf: Any) -> bool:
    """verifyBalance with the header fields ``anchorer`` anchored for ``epoch``."""
    fn = anchorer.contract.functions.verifyBalance(anchorer.header(epoch), proof, *leaf)
    return bool(fn.call())


@pytest.fixture
def anchorer(
    w3: Web3, ledger_anchor: Contract, ledger_id: bytes, deployer: ChecksumAddress
) -> Anchorer:
    return Anchorer(w3, ledger_anchor, ledger_id, deployer)


def rand32(rng: random.Random) -> bytes:
    return rng.randbytes(32)


# ---------------------------------------------------------------------------------------------
# Deployment and roles


def test_deployment_sets_ledger_id_and_roles(
    ledger_anchor: Contract, ledger_id: bytes, deployer: ChecksumAddress
) -> None:
    fns = ledger_anchor.functions
    assert fns.ledgerId().call() == ledger_id
    assert fns.ANCHOR_ROLE().call() == keccak(text="ANCHOR_ROLE")
    assert fns.hasRole(fns.DEFAULT_ADMIN_ROLE().call(), deployer).call()
    assert fns.hasRole(fns.ANCHOR_ROLE().call(), deployer).call()
    assert fns.lastEpoch().call() == 0
    assert (fns.genesisEpoch().call(), fns.genesisHeader().call()) == (0, ZERO32)
    assert fns.headerOf(0).call() == ZERO32
    assert fns.headerOf(1).call() == ZERO32


def test_constructor_rejects_zero_admin(
    w3: Web3, ledger_anchor: Contract, deployer: ChecksumAddress, ledger_id: bytes
) -> None:
    factory = w3.eth.contract(abi=ledger_anchor.abi, bytecode=_bytecode())
    with pytest.raises(ContractCustomError) as info:
        factory.constructor(ledger_id, "0x" + "00" * 20, 0, ZERO32).transact({"from": deployer})
    assert decode_revert(ledger_anchor, info.value.data) == ("ZeroAdmin", ())
    # a continued chain names both its genesis epoch and header, a new one neither
    for epoch, header in ((3, ZERO32), (0, b"\x01" * 32)):
        with pytest.raises(ContractCustomError) as info:
            factory.constructor(ledger_id, deployer, epoch, header).transact({"from": deployer})
        assert decode_revert(ledger_anchor, info.value.data) == ("BadGenesis", ())


def _bytecode() -> str:
    from chain.evm.artifacts import load_artifact

    return load_artifact("LedgerAnchor").bytecode


def test_anchor_requires_anchor_role(
    ledger_anchor: Contract, accounts: list[ChecksumAddress]
) -> None:
    outsider = accounts[1]
    fn = ledger_anchor.functions.anchor(1, ZERO32, b"\x01" * 32, b"\x02" * 32, 1, 1, 1)
    role = ledger_anchor.functions.ANCHOR_ROLE().call()
    assert_reverts(
        ledger_anchor, fn, outsider, "AccessControlUnauthorizedAccount", (outsider.lower(), role)
    )


def test_granted_anchor_role_can_anchor_and_revoked_cannot(
    w3: Web3, ledger_anchor: Contract, ledger_id: bytes, accounts: list[ChecksumAddress]
) -> None:
    admin, operator, outsider = accounts[0], accounts[1], accounts[2]
    fns = ledger_anchor.functions
    role = fns.ANCHOR_ROLE().call()
    admin_role = fns.DEFAULT_ADMIN_ROLE().call()

    # Only the admin may grant.
    assert_reverts(
        ledger_anchor,
        fns.grantRole(role, operator),
        outsider,
        "AccessControlUnauthorizedAccount",
        (outsider.lower(), admin_role),
    )
    w3.eth.wait_for_transaction_receipt(fns.grantRole(role, operator).transact({"from": admin}))
    assert fns.hasRole(role, operator).call()
    assert not fns.hasRole(admin_role, operator).call()

    op = Anchorer(w3, ledger_anchor, ledger_id, operator)
    op.anchor(b"\x01" * 32, b"\x02" * 32, 1)
    assert fns.lastEpoch().call() == 1

    w3.eth.wait_for_transaction_receipt(fns.revokeRole(role, operator).transact({"from": admin}))
    fn = fns.anchor(2, op.prev, b"\x03" * 32, b"\x04" * 32, 2, 2, 1)
    assert_reverts(
        ledger_anchor, fn, operator, "AccessControlUnauthorizedAccount", (operator.lower(), role)
    )


# ---------------------------------------------------------------------------------------------
# Anchoring rules


def test_anchor_epochs_in_order(ledger_anchor: Contract, anchorer: Anchorer) -> None:
    rng = random.Random(1)
    fns = ledger_anchor.functions
    done = []
    for leaf_count in (3, 1, 250):
        done.append(anchorer.anchor(rand32(rng), rand32(rng), leaf_count))
        assert fns.lastEpoch().call() == done[-1].epoch
    assert [a.epoch for a in done] == [1, 2, 3]
    prev = ZERO32
    first = 1
    for a, leaf_count in zip(done, (3, 1, 250), strict=True):
        assert fns.headerOf(a.epoch).call() == a.header
        last = first + leaf_count - 1
        # The Python-computed header equals the stored one and the contract's own helper.
        expected = header_hash(
            fns.ledgerId().call(),
            a.epoch,
            prev,
            a.entries_root,
            a.balances_root,
            first,
            last,
            leaf_count,
        )
        assert a.header == expected
        args = (a.epoch, prev, a.entries_root, a.balances_root, first, last, leaf_count)
        assert fns.headerHash(args).call() == expected
        # the contract stores only the header: the views check the fields against it
        assert fns.isAnchored(args).call()
        for i in range(1, len(args)):
            changed = list(args)
            changed[i] = _bump(changed[i])
            assert not fns.isAnchored(tuple(changed)).call(), i
        prev, first = a.header, last + 1
    assert fns.headerOf(4).call() == ZERO32
    assert not fns.isAnchored((4, prev, ZERO32, ZERO32, 0, 0, 0)).call()


def test_anchor_out_of_order_reverts(
    ledger_anchor: Contract, anchorer: Anchorer, deployer: ChecksumAddress
) -> None:
    fns = ledger_anchor.functions
    r1, r2 = b"\x11" * 32, b"\x22" * 32
    for epoch in (0, 2, 7, UINT64_MAX):
        fn = fns.anchor(epoch, ZERO32, r1, r2, 1, 1, 1)
        assert_reverts(ledger_anchor, fn, deployer, "EpochOutOfOrder", (1, epoch))
    first = anchorer.anchor(r1, r2, 1)
    for epoch in (0, 3, 4, UINT64_MAX):
        fn = fns.anchor(epoch, first.header, r1, r2, 2, 2, 1)
        assert_reverts(ledger_anchor, fn, deployer, "EpochOutOfOrder", (2, epoch))
    anchorer.anchor(r1, r2, 1)
    assert fns.lastEpoch().call() == 2


def test_anchor_wrong_prev_header_reverts(
    ledger_anchor: Contract, anchorer: Anchorer, deployer: ChecksumAddress
) -> None:
    fns = ledger_anchor.functions
    r1, r2, bogus = b"\x11" * 32, b"\x22" * 32, b"\x99" * 32
    fn = fns.anchor(1, bogus, r1, r2, 1, 1, 1)
    assert_reverts(ledger_anchor, fn, deployer, "PrevHeaderMismatch", (ZERO32, bogus))
    first = anchorer.anchor(r1, r2, 1)
    for wrong in (ZERO32, bogus, r1):
        fn = fns.anchor(2, wrong, r1, r2, 2, 2, 1)
        assert_reverts(ledger_anchor, fn, deployer, "PrevHeaderMismatch", (first.header, wrong))


def test_reanchoring_an_epoch_reverts_and_changes_nothing(
    w3: Web3, ledger_anchor: Contract, anchorer: Anchorer, deployer: ChecksumAddress
) -> None:
    fns = ledger_anchor.functions
    r1, r2 = b"\x11" * 32, b"\x22" * 32
    first = anchorer.anchor(r1, r2, 1)
    second = anchorer.anchor(b"\x33" * 32, b"\x44" * 32, 1)
    same_again = fns.anchor(1, ZERO32, r1, r2, 1, 1, 1)
    other_root = fns.anchor(1, ZERO32, b"\x55" * 32, r2, 1, 1, 1)
    latest_again = fns.anchor(2, first.header, second.entries_root, second.balances_root, 2, 2, 1)
    for fn in (same_again, other_root):
        assert_reverts(ledger_anchor, fn, deployer, "EpochOutOfOrder", (3, 1))
    assert_reverts(ledger_anchor, latest_again, deployer, "EpochOutOfOrder", (3, 2))

    # Also when actually mined (explicit gas skips web3's estimate): status 0, state unchanged.
    for fn in (same_again, other_root, latest_again):
        receipt = w3.eth.wait_for_transaction_receipt(
            fn.transact({"from": deployer, "gas": 300_000})
        )
        assert receipt["status"] == 0
        assert receipt["logs"] == []
    assert fns.headerOf(1).call() == first.header
    assert fns.headerOf(2).call() == second.header
    assert fns.isAnchored(anchorer.header(1)).call()
    assert fns.isAnchored(anchorer.header(2)).call()
    assert fns.lastEpoch().call() == 2


def test_last_epoch_tracks_many_epochs(ledger_anchor: Contract, anchorer: Anchorer) -> None:
    """lastEpoch() (a search over the anchored prefix) is right across powers of two."""
    rng = random.Random(2)
    for expected in range(1, 18):
        anchorer.anchor(rand32(rng), rand32(rng), 1)
        assert ledger_anchor.functions.lastEpoch().call() == expected


def test_empty_epoch_anchors_and_proves_nothing(
    ledger_anchor: Contract, anchorer: Anchorer
) -> None:
    empty = anchorer.anchor(ZERO32, ZERO32, 0)
    assert ledger_anchor.functions.headerOf(1).call() == empty.header
    assert ledger_anchor.functions.isAnchored(anchorer.header(1)).call()
    entry = random_entries(random.Random(3), 1)[0]
    balance = random_balances(random.Random(3), 1)[0]
    assert not verify_entry(anchorer, [], *entry.args(1))
    assert not verify_balance(anchorer, [], *balance.args(1))


# ---------------------------------------------------------------------------------------------
# Proofs


def test_leaf_helpers_match_reference(ledger_anchor: Contract, ledger_id: bytes) -> None:
    rng = random.Random(4)
    for entry, balance in zip(random_entries(rng, 5), random_balances(rng, 5), strict=True):
        epoch = rng.randint(1, UINT64_MAX)
        expected_entry = leaf_hash(ENTRY_TYPES, entry.leaf(ledger_id, epoch))
        assert ledger_anchor.functions.entryLeaf(*entry.args(epoch)).call() == expected_entry
        expected_balance = leaf_hash(BALANCE_TYPES, balance.leaf(ledger_id, epoch))
        assert ledger_anchor.functions.balanceLeaf(*balance.args(epoch)).call() == expected_balance


def _flip(value: bytes) -> bytes:
    return bytes([value[0] ^ 1]) + value[1:]


def _bump(value: Any) -> Any:
    """Another value of the same ABI type: a flipped bytes32, or an int's low bit toggled."""
    return _flip(value) if isinstance(value, bytes) else value ^ 1


@pytest.mark.parametrize("size", [1, 2, 3, 37])
def test_proofs_verify_and_forgeries_fail(
    ledger_anchor: Contract, anchorer: Anchorer, ledger_id: bytes, size: int
) -> None:
    rng = random.Random(100 + size)
    fns = ledger_anchor.functions
    # Epoch 1 holds unrelated data, so the trees under test live at epoch 2 and a proof checked
    # against another *anchored* epoch is exercised too.
    anchorer.anchor(rand32(rng), rand32(rng), 1)
    epoch = 2
    entries = random_entries(rng, size, first_seq=2)
    balances = random_balances(rng, size, first_seq=2)
    entry_tree, balance_tree = oz_trees(
        [
            (ENTRY_TYPES, [e.leaf(ledger_id, epoch) for e in entries]),
            (BALANCE_TYPES, [b.leaf(ledger_id, epoch) for b in balances]),
        ]
    )
    anchorer.anchor(entry_tree.root, balance_tree.root, 2 * size)

    for i, entry in enumerate(entries):
        proof = entry_tree.proofs[i]
        assert verify_entry(anchorer, proof, *entry.args(epoch)), f"entry {i}"
    for i, balance in enumerate(balances):
        assert verify_balance(anchorer, balance_tree.proofs[i], *balance.args(epoch)), i
    if size == 1:
        assert entry_tree.proofs == [[]]
        assert entry_tree.root == leaf_hash(ENTRY_TYPES, entries[0].leaf(ledger_id, epoch))

    i = rng.randrange(size)
    entry, proof = entries[i], entry_tree.proofs[i]
    balance, bproof = balances[i], balance_tree.proofs[i]
    args = entry.args(epoch)
    # x ^ 1 changes the low bit and stays in range for every uint64/int256 value.
    forged: list[tuple[str, list[bytes], list[Any]]] = [
        ("tampered amount", proof, [*args[:5], entry.amount ^ 1, entry.balance_after]),
        ("tampered balanceAfter", proof, [*args[:6], entry.balance_after ^ 1]),
        ("tampered operationId", proof, [*args[:2], entry.operation_id ^ 1, *args[3:]]),
        ("tampered seq", proof, [epoch, entry.seq ^ 1, *args[2:]]),
        ("other anchored epoch", proof, entry.args(1)),
        ("unknown epoch", proof, entry.args(epoch + 1)),
        ("extra sibling", [*proof, rand32(rng)], args),
    ]
    if proof:
        forged += [
            ("wrong sibling", [_flip(proof[0]), *proof[1:]], args),
            ("truncated proof", proof[:-1], args),
        ]
    if len(proof) > 1:
        forged.append(("reordered proof", proof[::-1], args))
    if size > 1:
        forged.append(("another leaf's proof", entry_tree.proofs[(i + 1) % size], args))
    for label, forged_proof, forged_args in forged:
        assert not verify_entry(anchorer, forged_proof, *forged_args), label

    # The caller passes the header fields: a root of the caller's own making is refused, since
    # the fields must hash to the header the contract stores. Here a one-leaf "tree" whose root
    # is the forged leaf itself, with an empty proof.
    fake = [*args[:5], entry.amount ^ 2, entry.balance_after ^ 2]
    fake_root = leaf_hash(ENTRY_TYPES, [1, ledger_id, *fake])
    header = anchorer.header(epoch)
    forged_header = (header[0], header[1], fake_root, *header[3:])
    assert not fns.verifyEntry(forged_header, [], *fake[1:]).call()
    assert fns.entryLeaf(*fake).call() == fake_root  # the leaf itself is well formed
    for i in range(1, len(header)):
        changed = list(header)
        changed[i] = _bump(changed[i])
        assert not fns.verifyEntry(tuple(changed), proof, *args[1:]).call(), i

    # An entry and its proof presented as a balance (same seq/account/asset, balanceAfter as
    # the balance), and a balance proof presented as an entry.
    as_balance = [epoch, entry.seq, entry.account_id, entry.asset_code, entry.balance_after,
                  entry.operation_id, entry.asset_code]  # fmt: skip
    assert not verify_balance(anchorer, proof, *as_balance)
    as_entry = [epoch, balance.seq, 0, balance.account_id, balance.asset_code, 0, balance.balance]
    assert not verify_entry(anchorer, bproof, *as_entry)
    b_args = balance.args(epoch)
    assert not verify_balance(anchorer, bproof, *b_args[:4], balance.balance ^ 1, *b_args[5:])
    # the entry count or the entries hash changed: an omitted or altered entry
    assert not verify_balance(anchorer, bproof, *b_args[:5], b_args[5] ^ 1, b_args[6])
    assert not verify_balance(anchorer, bproof, *b_args[:6], _flip(b_args[6]))
    if bproof:
        assert not verify_balance(anchorer, bproof[:-1], *balance.args(epoch))
        assert not verify_balance(anchorer, [_flip(bproof[0]), *bproof[1:]], *balance.args(epoch))


def test_leaves_are_bound_to_epoch_and_ledger(
    w3: Web3,
    ledger_anchor: Contract,
    anchorer: Anchorer,
    ledger_id: bytes,
    deploy: Callable[..., Contract],
    deployer: ChecksumAddress,
) -> None:
    """A tree whose leaves carry the wrong epoch or ledger id never verifies."""
    rng = random.Random(7)
    entries = random_entries(rng, 5)
    other_ledger = keccak(text="another ledger")
    right, wrong_epoch, wrong_ledger = oz_trees(
        [
            (ENTRY_TYPES, [e.leaf(ledger_id, 1) for e in entries]),
            (ENTRY_TYPES, [e.leaf(ledger_id, 1) for e in entries]),  # anchored at epoch 2 below
            (ENTRY_TYPES, [e.leaf(other_ledger, 3) for e in entries]),
        ]
    )
    anchorer.anchor(right.root, ZERO32, 5)
    anchorer.anchor(wrong_epoch.root, ZERO32, 5)
    anchorer.anchor(wrong_ledger.root, ZERO32, 5)
    for i, e in enumerate(entries):
        assert verify_entry(anchorer, right.proofs[i], *e.args(1))
        assert not verify_entry(anchorer, wrong_epoch.proofs[i], *e.args(2))
        assert not verify_entry(anchorer, wrong_ledger.proofs[i], *e.args(3))

    # The same tree does verify on a LedgerAnchor of the other ledger, at epoch 3.
    other = deploy("LedgerAnchor", other_ledger, deployer, 0, ZERO32)
    other_anchorer = Anchorer(w3, other, other_ledger, deployer)
    other_anchorer.anchor(ZERO32, ZERO32, 0)
    other_anchorer.anchor(ZERO32, ZERO32, 0)
    other_anchorer.anchor(wrong_ledger.root, ZERO32, 5)
    for i, e in enumerate(entries):
        assert verify_entry(other_anchorer, wrong_ledger.proofs[i], *e.args(3))


@pytest.mark.parametrize("size", [1, 2, 3, 37])
def test_python_side_trees_and_headers_verify_on_chain(
    ledger_anchor: Contract, anchorer: Anchorer, ledger_id: bytes, size: int
) -> None:
    """merkle.leaves/merkle.tree (what the anchoring job uses) agree with the contract and OZ."""
    rng = random.Random(200 + size)
    epoch = 1
    assets = ["USD", "MILES", "X_1"]
    entries = [
        py_leaves.EntryLeaf(
            ledger_id=ledger_id,
            epoch=epoch,
            seq=i + 1,
            operation_id=rng.randint(1, UINT64_MAX),
            account_id=rng.randint(0, UINT64_MAX),
            asset_code=rng.choice(assets),
            amount=_int256(rng),
            balance_after=_int256(rng),
        )
        for i in range(size)
    ]
    balances = [
        py_leaves.BalanceLeaf(
            ledger_id=ledger_id,
            epoch=epoch,
            seq=rng.randint(0, size),
            account_id=rng.randint(0, UINT64_MAX),
            asset_code=rng.choice(assets),
            balance=_int256(rng),
            entry_count=rng.randint(0, UINT64_MAX),
            entries_hash=rng.randbytes(32),
        )
        for _ in range(size)
    ]
    e_tree, b_tree = py_leaves.entry_tree(entries), py_leaves.balance_tree(balances)
    oz_entries, oz_balances = oz_trees(
        [
            (ENTRY_TYPES, [list(x.values()) for x in entries]),
            (BALANCE_TYPES, [list(x.values()) for x in balances]),
        ]
    )
    assert (e_tree.root, b_tree.root) == (oz_entries.root, oz_balances.root)
    assert [e_tree.proof(i) for i in range(size)] == oz_entries.proofs

    anchored = anchorer.anchor(e_tree.root, b_tree.root, size)
    expected = py_leaves.header_hash(ledger_id, 1, ZERO32, e_tree.root, b_tree.root, 1, size, size)
    assert anchored.header == expected
    assert ledger_anchor.functions.headerOf(1).call() == expected

    fns = ledger_anchor.functions
    for i, x in enumerate(entries):
        args = [epoch, x.seq, x.operation_id, x.account_id, x.asset_word, x.amount]
        assert verify_entry(anchorer, e_tree.proof(i), *args, x.balance_after)
        assert fns.entryLeaf(*args, x.balance_after).call() == x.hash()
    for i, y in enumerate(balances):
        args = [epoch, y.seq, y.account_id, y.asset_word, y.balance, y.entry_count,
                y.entries_hash]  # fmt: skip
        assert verify_balance(anchorer, b_tree.proof(i), *args)
        assert fns.balanceLeaf(*args).call() == y.hash()


# ---------------------------------------------------------------------------------------------
# Migration: a new contract continues the header chain of an earlier one


def test_a_new_contract_continues_the_header_chain(
    w3: Web3,
    ledger_anchor: Contract,
    anchorer: Anchorer,
    ledger_id: bytes,
    deploy: Callable[..., Contract],
    deployer: ChecksumAddress,
) -> None:
    rng = random.Random(9)
    entries = random_entries(rng, 3, first_seq=1)
    (tree,) = oz_trees([(ENTRY_TYPES, [e.leaf(ledger_id, 3) for e in entries])])
    anchorer.anchor(rand32(rng), rand32(rng), 1)
    anchorer.anchor(rand32(rng), rand32(rng), 1)
    third = anchorer.anchor(tree.root, ZERO32, 3)

    successor = deploy("LedgerAnchor", ledger_id, deployer, 3, third.header)
    fns = successor.functions
    assert (fns.genesisEpoch().call(), fns.genesisHeader().call()) == (3, third.header)
    assert fns.lastEpoch().call() == 3
    assert fns.headerOf(3).call() == third.header
    assert fns.headerOf(2).call() == ZERO32  # earlier epochs: on the earlier contract
    # the genesis epoch's proofs verify on the successor too (it knows the header)
    on_successor = Anchorer(w3, successor, ledger_id, deployer)
    on_successor.prev, on_successor.epoch, on_successor.next_seq = third.header, 3, 4
    on_successor.fields[3] = anchorer.header(3)
    assert fns.isAnchored(anchorer.header(3)).call()
    for i, e in enumerate(entries):
        assert verify_entry(on_successor, tree.proofs[i], *e.args(3))

    for epoch in (0, 1, 3, 5):
        fn = fns.anchor(epoch, third.header, r := b"\x11" * 32, r, 4, 4, 1)
        assert_reverts(successor, fn, deployer, "EpochOutOfOrder", (4, epoch))
    fn = fns.anchor(4, ZERO32, b"\x11" * 32, b"\x22" * 32, 4, 4, 1)
    assert_reverts(successor, fn, deployer, "PrevHeaderMismatch", (third.header, ZERO32))
    fourth = on_successor.anchor(rand32(rng), rand32(rng), 1)
    assert fourth.epoch == 4
    assert fns.lastEpoch().call() == 4
    assert fns.headerOf(4).call() == fourth.header
    assert fourth.header == header_hash(
        ledger_id, 4, third.header, fourth.entries_root, fourth.balances_root, 4, 4, 1
    )
    for expected in range(5, 12):  # lastEpoch()'s search starts at the genesis
        on_successor.anchor(rand32(rng), rand32(rng), 1)
        assert fns.lastEpoch().call() == expected


# ---------------------------------------------------------------------------------------------
# Gas


def calldata_gas(data: bytes) -> int:
    """Intrinsic gas of the calldata bytes (EIP-2028): 4 per zero byte, 16 per non-zero byte."""
    zeros = data.count(0)
    return 4 * zeros + 16 * (len(data) - zeros)


def test_gas_per_anchor_is_independent_of_epoch_size(anchorer: Anchorer) -> None:
    """Execution gas of anchor() is identical whatever the epoch's leaf count.

    gasUsed = 21,000 + calldata bytes (which vary by a few gas with the byte pattern of the
    arguments: zero bytes are cheaper) + execution. The epoch's size only enters as the value of
    `leafCount`/`lastSeq`, so execution must be the same for every epoch after the first (epoch 1
    has no predecessor header to read).
    """
    rng = random.Random(5)
    sizes = [1, 2, 3, 1_000, 1_000_000, 2**40, 1, 7]
    results = [anchorer.anchor(rand32(rng), rand32(rng), n) for n in sizes]
    execution = [r.gas_used - 21_000 - calldata_gas(r.calldata) for r in results]
    print()
    for r, n, ex in zip(results, sizes, execution, strict=True):
        print(
            f"anchor epoch {r.epoch} ({n} leaves): gasUsed={r.gas_used} "
            f"(calldata {calldata_gas(r.calldata)}, execution {ex})"
        )
    assert len(set(execution[1:])) == 1, execution
    # one storage word per epoch: at most 55,000 gas per anchor (bench/anchor_gas.py prints it
    # next to the previous three-word contract's ~97.7k)
    assert max(r.gas_used for r in results) <= 55_000, [r.gas_used for r in results]
    # Epoch 1 has no previous header to load: it saves at least that cold SLOAD (EIP-2929).
    assert execution[1] - execution[0] >= 2_100
