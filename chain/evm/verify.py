"""``valueos verify BUNDLE.json [--trust FILE] [--rpc URL]``: an auditor's check of one bundle.

What is checked against what, and what each output line means:

``CONSISTENT`` (always; the bundle's own bytes only):
  1. rebuild the leaf from its fields (ENTRY or BALANCE layout, :mod:`merkle.leaves`) and check
     its hash, its ledger id and epoch against the header;
  2. fold the Merkle proof into that leaf and compare with the header's root of that kind;
  3. recompute the header hash from the header fields (which include the previous header:
     the link of the chain) and check the entry's seq lies in [firstSeq, lastSeq].
  A made-up bundle can be consistent: this alone proves nothing about what was anchored.
``PINNED`` (with a trust file, :mod:`chain.evm.trust`: ``--trust FILE`` or
``VALUEOS_TRUST_FILE``):
  4. the header's ledger id, and the chain id and contract the bundle names, are the pinned
     ones.
``VALID`` (with ``--rpc URL``, which requires the trust file; trust only the chain):
  5. the node is the pinned chain, the pinned contract has code and anchors the pinned
     ledger id -- every read goes to the *pinned* contract, never to the one the bundle names;
  6. ``headerOf(E)`` is exactly this header hash, ``isAnchored(header fields)`` accepts the
     bundle's header fields (the two roots included: the contract stores only the header hash),
     and ``headerOf(E - 1)`` is the bundle's previous header;
  7. the anchor transaction succeeded, went to the pinned contract and emitted
     ``Anchored(E, header, entriesRoot, balancesRoot, ...)`` with the bundle's roots; its
     receipt's block number and block hash are the bundle's,
     and that block is the canonical one at that height; a bundle saying FINALIZED is at least
     the pinned ``confirmations`` deep, and any status other than CONFIRMED / FINALIZED is
     refused; the contract's own ``verifyEntry``/``verifyBalance`` accepts the proof.
``NOT CHECKED`` lines name what a run without a trust file or without ``--rpc`` left out.

A HISTORY bundle (``GET /api/v1/proofs/history/{account}``: an account's entries between
epochs A and B and its balance bundles at A and B; ``from`` null = from its first entry) is
checked the same way at both ends (each balance bundle through checks 1-7), and then
(``COMPLETE``): both ends are the bundle's account and asset, the entries ascend by seq after
A's last seq and lie in epochs A+1..B, the last is B's seq, each ``balance_after`` is the
previous plus its amount from A's balance and ends on B's balance, and folding the entries'
ENTRY leaf hashes from A's (entryCount, entriesHash) gives exactly B's: an omitted, added,
reordered or altered entry is rejected.

Exit status 0 when every check run passes, 1 with the first failing reason otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from chain.evm.trust import Trust, TrustError, load_trust
from merkle.leaves import BalanceLeaf, BalanceLeafV1, EntryLeaf, fold_entries, header_hash
from merkle.tree import EMPTY_ROOT, verify

__all__ = [
    "VerificationError",
    "check_history",
    "check_offline",
    "check_onchain",
    "check_pinned",
    "main",
]


class VerificationError(Exception):
    """The bundle does not verify; the message says why."""


def _b32(value: Any, name: str) -> bytes:
    if not isinstance(value, str) or not value.startswith("0x") or len(value) != 66:
        raise VerificationError(f"{name} is not a 0x-prefixed 32-byte hex string")
    try:
        return bytes.fromhex(value[2:])
    except ValueError:
        raise VerificationError(f"{name} is not valid hex") from None


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise VerificationError(f"{name} is not an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value, 10)
        except ValueError:
            pass
    raise VerificationError(f"{name} is not an integer")


def _leaf(bundle: dict[str, Any]) -> EntryLeaf | BalanceLeaf | BalanceLeafV1:
    f = bundle.get("leaf")
    if not isinstance(f, dict):
        raise VerificationError("the bundle has no leaf")
    try:
        if bundle.get("kind") == "entry":
            if f.get("kind") != EntryLeaf.KIND:
                raise VerificationError("the leaf is not an ENTRY leaf (kind 1)")
            return EntryLeaf(
                _b32(f.get("ledger_id"), "leaf.ledger_id"), _int(f.get("epoch"), "epoch"),
                _int(f.get("seq"), "seq"), _int(f.get("operation_id"), "operation_id"),
                _int(f.get("account_id"), "account_id"), str(f.get("asset_code")),
                _int(f.get("amount"), "amount"), _int(f.get("balance_after"), "balance_after"),
            )  # fmt: skip
        if bundle.get("kind") == "balance":
            if f.get("kind") != BalanceLeaf.KIND:
                raise VerificationError("the leaf is not a BALANCE leaf (kind 2)")
            if "entry_count" in f or "entries_hash" in f:
                return BalanceLeaf(
                    _b32(f.get("ledger_id"), "leaf.ledger_id"), _int(f.get("epoch"), "epoch"),
                    _int(f.get("seq"), "seq"), _int(f.get("account_id"), "account_id"),
                    str(f.get("asset_code")), _int(f.get("balance"), "balance"),
                    _int(f.get("entry_count"), "entry_count"),
                    _b32(f.get("entries_hash"), "leaf.entries_hash"),
                )  # fmt: skip
            # leaf format 1: an epoch sealed before balance leaves had a count and a hash
            return BalanceLeafV1(
                _b32(f.get("ledger_id"), "leaf.ledger_id"), _int(f.get("epoch"), "epoch"),
                _int(f.get("seq"), "seq"), _int(f.get("account_id"), "account_id"),
                str(f.get("asset_code")), _int(f.get("balance"), "balance"),
            )  # fmt: skip
    except ValueError as exc:
        raise VerificationError(f"invalid leaf field: {exc}") from None
    raise VerificationError(f"unknown bundle kind {bundle.get('kind')!r}")


def check_offline(bundle: dict[str, Any]) -> str:  # noqa: PLR0912 - a checklist
    """Checks 1-3; returns a one-line summary, raises VerificationError with the reason."""
    if bundle.get("version") != 1:
        raise VerificationError(f"unsupported bundle version {bundle.get('version')!r}")
    leaf = _leaf(bundle)
    h = bundle.get("header")
    if not isinstance(h, dict):
        raise VerificationError("the bundle has no header")
    ledger_id = _b32(h.get("ledger_id"), "header.ledger_id")
    epoch = _int(h.get("epoch"), "header.epoch")
    prev = _b32(h.get("prev_header"), "header.prev_header")
    entries_root = _b32(h.get("entries_root"), "header.entries_root")
    balances_root = _b32(h.get("balances_root"), "header.balances_root")
    first, last = _int(h.get("first_seq"), "first_seq"), _int(h.get("last_seq"), "last_seq")
    count = _int(h.get("leaf_count"), "leaf_count")
    claimed_header = _b32(h.get("header_hash"), "header.header_hash")
    if leaf.ledger_id != ledger_id:
        raise VerificationError("the leaf belongs to another ledger than the header")
    if leaf.epoch != epoch:
        raise VerificationError(f"the leaf is of epoch {leaf.epoch}, the header of {epoch}")
    if epoch == 1 and prev != EMPTY_ROOT:
        raise VerificationError("epoch 1 must chain to the zero header")
    try:
        computed = header_hash(
            ledger_id, epoch, prev, entries_root, balances_root, first, last, count
        )
    except ValueError as exc:
        raise VerificationError(f"invalid header field: {exc}") from None
    if computed != claimed_header:
        raise VerificationError("the header fields do not hash to the header hash")
    leaf_hash = leaf.hash()
    if "leaf_hash" in bundle and _b32(bundle["leaf_hash"], "leaf_hash") != leaf_hash:
        raise VerificationError("the leaf hash does not match the leaf fields")
    raw_proof = bundle.get("proof")
    if not isinstance(raw_proof, list):
        raise VerificationError("the proof is not a list")
    proof = [_b32(p, f"proof[{i}]") for i, p in enumerate(raw_proof)]
    if isinstance(leaf, EntryLeaf):
        if count == 0 or not first <= leaf.seq <= last:
            raise VerificationError(f"seq {leaf.seq} is outside the epoch's [{first}, {last}]")
        root, which = entries_root, "entries"
    else:
        root, which = balances_root, "balances"
    if not verify(root, leaf_hash, proof):
        raise VerificationError(f"the proof does not lead from this leaf to the {which} root")
    return (
        f"{bundle['kind']} leaf is consistent with the {which} root 0x{root.hex()} of epoch "
        f"{epoch} (header 0x{computed.hex()})"
    )


def check_pinned(bundle: dict[str, Any], trust: Trust) -> str:
    """The bundle belongs to the pinned ledger, and names the pinned chain and contract."""
    h, a = bundle["header"], bundle.get("anchor") or {}
    if _b32(h.get("ledger_id"), "header.ledger_id") != trust.ledger_id:
        raise VerificationError(
            f"the bundle is of ledger {h.get('ledger_id')}, the pinned ledger is "
            f"0x{trust.ledger_id.hex()}"
        )
    if a.get("chain_id") is not None and a.get("chain_id") != trust.chain_id:
        raise VerificationError(
            f"the bundle names chain {a.get('chain_id')}, the pinned chain is {trust.chain_id}"
        )
    named = a.get("contract_address")
    if named is not None and str(named).lower() != trust.anchor_contract.lower():
        raise VerificationError(
            f"the bundle names contract {named}, the pinned contract is {trust.anchor_contract}"
        )
    return (
        f"ledger id 0x{trust.ledger_id.hex()} is the pinned one (chain {trust.chain_id}, "
        f"contract {trust.anchor_contract})"
    )


_ANCHORED = ("CONFIRMED", "FINALIZED")


def _header_fields(h: dict[str, Any]) -> tuple[int, bytes, bytes, bytes, int, int, int]:
    """The bundle's header as the contract's ``Header`` struct (its ledger id is the contract's)."""
    return (
        _int(h["epoch"], "header.epoch"),
        _b32(h["prev_header"], "header.prev_header"),
        _b32(h["entries_root"], "header.entries_root"),
        _b32(h["balances_root"], "header.balances_root"),
        _int(h["first_seq"], "header.first_seq"),
        _int(h["last_seq"], "header.last_seq"),
        _int(h["leaf_count"], "header.leaf_count"),
    )


def check_onchain(  # noqa: PLR0912, PLR0915 - a checklist
    bundle: dict[str, Any], rpc_url: str, trust: Trust
) -> str:
    """Checks 4-7 against the node at ``rpc_url`` and the pinned ``trust``; call after
    :func:`check_offline` and :func:`check_pinned`. Every on-chain read goes to the pinned
    contract, never to an address the bundle names."""
    from hexbytes import HexBytes  # noqa: PLC0415 - only with --rpc
    from web3 import Web3  # noqa: PLC0415
    from web3.exceptions import BlockNotFound, TransactionNotFound, Web3Exception  # noqa: PLC0415

    from chain.evm.artifacts import load_artifact  # noqa: PLC0415

    h, a = bundle["header"], bundle.get("anchor") or {}
    epoch = _int(h["epoch"], "epoch")
    if not a.get("tx_hash"):
        raise VerificationError(f"epoch {epoch} is not anchored yet (status {a.get('status')})")
    status = a.get("status")
    if status not in _ANCHORED:
        raise VerificationError(
            f"the bundle's anchor status {status!r} is not an anchored one {_ANCHORED}"
        )
    tx_hash = _b32(a.get("tx_hash"), "anchor.tx_hash")
    claimed_block = _int(a.get("block_number"), "anchor.block_number")
    claimed_hash = _b32(a.get("block_hash"), "anchor.block_hash")
    w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": 30}))
    try:
        if w3.eth.chain_id != trust.chain_id:
            raise VerificationError(
                f"the node is chain {w3.eth.chain_id}, the pinned chain is {trust.chain_id}"
            )
        address = Web3.to_checksum_address(trust.anchor_contract)
        contract = w3.eth.contract(address=address, abi=load_artifact("LedgerAnchor").abi)
        if not w3.eth.get_code(address):
            raise VerificationError(f"no contract at the pinned address {address}")
        if bytes(contract.functions.ledgerId().call()) != trust.ledger_id:
            raise VerificationError("the pinned contract anchors another ledger id")
        header = _header_fields(h)
        stored = bytes(contract.functions.headerOf(epoch).call())
        if stored == EMPTY_ROOT:
            raise VerificationError(f"epoch {epoch} is not anchored on the pinned contract")
        if stored != _b32(h["header_hash"], "header_hash"):
            raise VerificationError(f"the contract holds another header for epoch {epoch}")
        if not contract.functions.isAnchored(header).call():
            raise VerificationError(
                f"the contract refuses the bundle's header fields (roots) for epoch {epoch}"
            )
        if bytes(contract.functions.headerOf(epoch - 1).call()) != header[1]:
            raise VerificationError("the contract's previous header differs from the bundle's")
        try:
            receipt = w3.eth.get_transaction_receipt(HexBytes(tx_hash))
        except TransactionNotFound:
            raise VerificationError(f"transaction {a['tx_hash']} is not on this chain") from None
        if receipt["status"] != 1 or receipt["to"] != address:
            raise VerificationError("the anchor transaction failed or went to another contract")
        if receipt["blockNumber"] != claimed_block:
            raise VerificationError(
                f"the anchor transaction is in block {receipt['blockNumber']}, the bundle says "
                f"{claimed_block}"
            )
        if bytes(receipt["blockHash"]) != claimed_hash:
            raise VerificationError("the anchor transaction's block hash differs from the bundle's")
        try:
            canonical = w3.eth.get_block(claimed_block)
        except BlockNotFound:
            raise VerificationError(f"block {claimed_block} is not on this chain") from None
        if bytes(canonical["hash"]) != claimed_hash:
            raise VerificationError(f"block {claimed_block} on this chain has another hash")
        depth = w3.eth.block_number - claimed_block + 1
        if status == "FINALIZED" and depth < trust.confirmations:
            raise VerificationError(
                f"the bundle says FINALIZED but the anchor is {depth} blocks deep, the pinned "
                f"finality is {trust.confirmations}"
            )
        events = contract.events.Anchored().process_receipt(receipt)
        if not any(
            e["args"]["epoch"] == epoch
            and bytes(e["args"]["headerHash"]) == stored
            and bytes(e["args"]["entriesRoot"]) == header[2]
            and bytes(e["args"]["balancesRoot"]) == header[3]
            for e in events
        ):
            raise VerificationError("the anchor transaction did not anchor this header")
        leaf, proof = _leaf(bundle), [_b32(p, "proof") for p in bundle["proof"]]
        if isinstance(leaf, EntryLeaf):
            ok = contract.functions.verifyEntry(
                header, proof, leaf.seq, leaf.operation_id, leaf.account_id, leaf.asset_word,
                leaf.amount, leaf.balance_after,
            ).call()  # fmt: skip
        elif isinstance(leaf, BalanceLeaf):
            ok = contract.functions.verifyBalance(
                header, proof, leaf.seq, leaf.account_id, leaf.asset_word, leaf.balance,
                leaf.entry_count, leaf.entries_hash,
            ).call()  # fmt: skip
        else:  # format 1: this contract's verifyBalance knows format 2; the root is anchored
            ok = True  # (isAnchored above) and the proof leads to it (check_offline)
        if not ok:
            raise VerificationError("the contract's own proof check rejects the leaf")
    except (Web3Exception, OSError) as exc:
        raise VerificationError(f"RPC failure: {exc}") from None
    return (
        f"epoch {epoch} is anchored with this header on the pinned contract {address} "
        f"(chain {trust.chain_id}) by {a['tx_hash']} in block {claimed_block} "
        f"(0x{claimed_hash.hex()}, {depth} deep); the contract accepts the proof"
    )


def _end(bundle: dict[str, Any], name: str) -> dict[str, Any]:
    end = bundle.get(name)
    if not isinstance(end, dict) or end.get("kind") != "balance":
        raise VerificationError(f"the history's {name!r} is not a balance bundle")
    if not isinstance(end.get("leaf"), dict) or "entry_count" not in end["leaf"]:
        raise VerificationError(
            f"the history's {name!r} balance leaf has no entry count and hash (leaf format 1)"
        )
    return end


def history_ends(bundle: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The balance bundles of a history bundle: ``to``, and ``from`` unless it is null."""
    if bundle.get("version") != 1 or bundle.get("kind") != "history":
        raise VerificationError("not a history bundle (version 1)")
    ends = [("to", _end(bundle, "to"))]
    if bundle.get("from") is not None:
        ends.insert(0, ("from", _end(bundle, "from")))
    return ends


def check_history(bundle: dict[str, Any]) -> str:  # noqa: PLR0912 - a checklist
    """The COMPLETE check of a history bundle whose ends passed :func:`check_offline`: the
    entries fold from ``from``'s (count, hash, balance) to exactly ``to``'s."""
    ends = dict(history_ends(bundle))
    to = _leaf(ends["to"])
    start = _leaf(ends["from"]) if "from" in ends else None
    if not isinstance(to, BalanceLeaf) or not isinstance(start, BalanceLeaf | None):
        raise VerificationError("a history's balance leaves carry an entry count and hash")
    account = _int(bundle.get("account_id"), "account_id")
    asset = bundle.get("asset_code")
    a = _int(bundle.get("from_epoch"), "from_epoch")
    b = _int(bundle.get("to_epoch"), "to_epoch")
    for name, leaf, epoch in (("to", to, b), ("from", start, a)):
        if leaf is None:
            continue
        if (leaf.account_id, leaf.asset_code, leaf.epoch) != (account, asset, epoch):
            raise VerificationError(
                f"the {name!r} balance is of account {leaf.account_id} ({leaf.asset_code}) at "
                f"epoch {leaf.epoch}, the history is of account {account} ({asset}) at {epoch}"
            )
    if start is not None and start.ledger_id != to.ledger_id:
        raise VerificationError("the two ends belong to different ledgers")
    if not 0 <= a < b:
        raise VerificationError(f"from_epoch {a} is not before to_epoch {b}")
    count, folded, balance, seq = (
        (start.entry_count, start.entries_hash, start.balance, start.seq)
        if start is not None
        else (0, EMPTY_ROOT, 0, 0)
    )
    low_epoch = a + 1 if start is not None else 1
    raw = bundle.get("entries")
    if not isinstance(raw, list):
        raise VerificationError("the history's entries are not a list")
    hashes = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise VerificationError(f"entries[{i}] is not an object")
        try:
            e = EntryLeaf(
                to.ledger_id, _int(item.get("epoch"), f"entries[{i}].epoch"),
                _int(item.get("seq"), f"entries[{i}].seq"),
                _int(item.get("operation_id"), f"entries[{i}].operation_id"), account,
                to.asset_code, _int(item.get("amount"), f"entries[{i}].amount"),
                _int(item.get("balance_after"), f"entries[{i}].balance_after"),
            )  # fmt: skip
        except ValueError as exc:
            raise VerificationError(f"entries[{i}]: {exc}") from None
        if e.seq <= seq:
            raise VerificationError(
                f"entry {e.seq} is not after entry {seq}: entries out of order or repeated, "
                "or before the 'from' balance"
            )
        if not low_epoch <= e.epoch <= b:
            raise VerificationError(
                f"entry {e.seq} is of epoch {e.epoch}, outside {low_epoch}..{b}"
            )
        if balance + e.amount != e.balance_after:
            raise VerificationError(
                f"entry {e.seq}: balance_after {e.balance_after} is not {balance} + {e.amount}"
            )
        balance, seq = e.balance_after, e.seq
        hashes.append(e.hash())
    count, folded = fold_entries(count, folded, hashes)
    if count != to.entry_count:
        raise VerificationError(
            f"the history lists {count - (start.entry_count if start else 0)} entries, the "
            f"anchored entry counts say {to.entry_count - (start.entry_count if start else 0)}: "
            "an entry is missing or added"
        )
    if folded != to.entries_hash:
        raise VerificationError(
            "the listed entries do not fold to the anchored entries hash of epoch "
            f"{b}: an entry was altered, replaced or reordered"
        )
    if (balance, seq) != (to.balance, to.seq):
        raise VerificationError(
            f"the entries end at balance {balance} (seq {seq}), the anchored balance of epoch {b} "
            f"is {to.balance} (seq {to.seq})"
        )
    since = f"the end of epoch {a}" if start is not None else "the account's first entry"
    return (
        f"the {len(hashes)} entries of account {account} ({to.asset_code}) from {since} to the "
        f"end of epoch {b} are all of them, in order: they fold to the anchored entry count "
        f"{to.entry_count} and entries hash 0x{to.entries_hash.hex()}, balance {to.balance}"
    )


def _trust(path: Path | None) -> Trust | None:
    if path is None:
        env = os.environ.get("VALUEOS_TRUST_FILE")
        path = Path(env) if env else None
    if path is None:
        return None
    try:
        return load_trust(path)
    except TrustError as exc:
        raise VerificationError(str(exc)) from None


def main(command: str, argv: list[str]) -> int:  # noqa: PLR0912 - one line per check
    parser = argparse.ArgumentParser(prog=f"valueos {command}", description=__doc__.split("\n")[0])
    parser.add_argument("bundle", type=Path, help="the proof bundle (JSON)")
    parser.add_argument(
        "--trust", type=Path, help="the pinned trust file (default: $VALUEOS_TRUST_FILE)"
    )
    parser.add_argument("--rpc", help="also check the anchor on this node (needs a trust file)")
    ns = parser.parse_args(argv)
    lines: list[tuple[str, str]] = []
    try:
        trust = _trust(ns.trust)
        if ns.rpc and trust is None:
            raise VerificationError(
                "--rpc needs the pinned trust (--trust FILE or VALUEOS_TRUST_FILE): a bundle "
                "cannot name the contract it is checked against"
            )
        try:
            bundle = json.loads(ns.bundle.read_text())
        except (OSError, ValueError) as exc:
            raise VerificationError(f"cannot read {ns.bundle}: {exc}") from None
        if not isinstance(bundle, dict):
            raise VerificationError("a bundle is a JSON object")
        history = bundle.get("kind") == "history"
        ends = history_ends(bundle) if history else [("", bundle)]
        for name, end in ends:
            label = f"{name}: " if name else ""
            lines.append(("CONSISTENT", label + check_offline(end)))
        if history:
            lines.append(("COMPLETE", check_history(bundle)))
        for name, end in ends:
            label = f"{name}: " if name else ""
            if trust is not None:
                lines.append(("PINNED", label + check_pinned(end, trust)))
        if trust is None:
            lines.append(("NOT CHECKED", "the ledger identity (no trust file pinned)"))
        if ns.rpc and trust is not None:
            for name, end in ends:
                label = f"{name}: " if name else ""
                lines.append(("VALID", label + check_onchain(end, ns.rpc, trust)))
        else:
            lines.append(
                ("NOT CHECKED", "the root against the chain (no --rpc): the bundle alone could "
                 "be made up")
            )  # fmt: skip
    except VerificationError as exc:
        for prefix, line in lines:
            print(f"{prefix}: {line}")
        print(f"INVALID: {exc}", file=sys.stderr)
        return 1
    for prefix, line in lines:
        print(f"{prefix}: {line}")
    return 0
