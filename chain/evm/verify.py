"""``valueos verify BUNDLE.json [--rpc URL]``: an auditor's check of one proof bundle.

Offline (no trust in the operator beyond the bundle's own bytes):
  1. rebuild the leaf from its fields (ENTRY or BALANCE layout, :mod:`merkle.leaves`) and check
     its hash, its ledger id and epoch against the header;
  2. fold the Merkle proof into that leaf and compare with the header's root of that kind;
  3. recompute the header hash from the header fields (which include the previous header:
     the link of the chain) and check the entry's seq lies in [firstSeq, lastSeq].
With ``--rpc URL`` (trust only the chain):
  4. the chain id and the contract's ``ledgerId`` match the bundle;
  5. ``epochs(E)`` on the contract holds exactly this header hash and these two roots, and
     ``epochs(E - 1)`` holds the bundle's previous header (the chain link is on chain too);
  6. the anchor transaction succeeded, was sent to the contract, and emitted
     ``Anchored(E, header, ...)``; and the contract's own ``verifyEntry``/``verifyBalance``
     (OpenZeppelin MerkleProof) accepts the proof.

Exit status 0 when every check passes, 1 with the first failing reason otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from merkle.leaves import BalanceLeaf, EntryLeaf, header_hash
from merkle.tree import EMPTY_ROOT, verify

__all__ = ["VerificationError", "check_offline", "check_onchain", "main"]


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


def _leaf(bundle: dict[str, Any]) -> EntryLeaf | BalanceLeaf:
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
            return BalanceLeaf(
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
        f"{bundle['kind']} leaf is in the {which} root of epoch {epoch} (header 0x{computed.hex()})"
    )


def check_onchain(bundle: dict[str, Any], rpc_url: str) -> str:  # noqa: PLR0912 - a checklist
    """Checks 4-6 against the node at ``rpc_url``; call after :func:`check_offline`."""
    from web3 import Web3  # noqa: PLC0415 - only with --rpc
    from web3.exceptions import TransactionNotFound, Web3Exception  # noqa: PLC0415

    from chain.evm.artifacts import load_artifact  # noqa: PLC0415

    h, a = bundle["header"], bundle.get("anchor") or {}
    epoch = _int(h["epoch"], "epoch")
    if not a.get("contract_address") or not a.get("tx_hash"):
        raise VerificationError(f"epoch {epoch} is not anchored yet (status {a.get('status')})")
    w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": 30}))
    try:
        if w3.eth.chain_id != a.get("chain_id"):
            raise VerificationError(f"the node is chain {w3.eth.chain_id}, not {a.get('chain_id')}")
        address = Web3.to_checksum_address(a["contract_address"])
        contract = w3.eth.contract(address=address, abi=load_artifact("LedgerAnchor").abi)
        if not w3.eth.get_code(address):
            raise VerificationError(f"no contract at {address}")
        if bytes(contract.functions.ledgerId().call()) != _b32(h["ledger_id"], "ledger_id"):
            raise VerificationError("the contract anchors another ledger id")
        stored = [bytes(x) for x in contract.functions.epochs(epoch).call()]
        if stored[0] == EMPTY_ROOT:
            raise VerificationError(f"epoch {epoch} is not anchored on the contract")
        if stored != [
            _b32(h["header_hash"], "header_hash"),
            _b32(h["entries_root"], "entries_root"),
            _b32(h["balances_root"], "balances_root"),
        ]:
            raise VerificationError(f"the contract holds another header/roots for epoch {epoch}")
        if epoch > 1:
            prev = bytes(contract.functions.epochs(epoch - 1).call()[0])
            if prev != _b32(h["prev_header"], "prev_header"):
                raise VerificationError("the contract's previous header differs from the bundle's")
        try:
            receipt = w3.eth.get_transaction_receipt(a["tx_hash"])
        except TransactionNotFound:
            raise VerificationError(f"transaction {a['tx_hash']} is not on this chain") from None
        if receipt["status"] != 1 or receipt["to"] != address:
            raise VerificationError("the anchor transaction failed or went to another contract")
        events = contract.events.Anchored().process_receipt(receipt)
        if not any(
            e["args"]["epoch"] == epoch and bytes(e["args"]["headerHash"]) == stored[0]
            for e in events
        ):
            raise VerificationError("the anchor transaction did not anchor this header")
        leaf, proof = _leaf(bundle), [_b32(p, "proof") for p in bundle["proof"]]
        if isinstance(leaf, EntryLeaf):
            ok = contract.functions.verifyEntry(
                proof, epoch, leaf.seq, leaf.operation_id, leaf.account_id, leaf.asset_word,
                leaf.amount, leaf.balance_after,
            ).call()  # fmt: skip
        else:
            ok = contract.functions.verifyBalance(
                proof, epoch, leaf.seq, leaf.account_id, leaf.asset_word, leaf.balance
            ).call()
        if not ok:
            raise VerificationError("the contract's own proof check rejects the leaf")
    except (Web3Exception, OSError) as exc:
        raise VerificationError(f"RPC failure: {exc}") from None
    return (
        f"anchored on chain {a['chain_id']} at {address} by {a['tx_hash']} "
        f"(block {receipt['blockNumber']})"
    )


def main(command: str, argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=f"valueos {command}", description=__doc__.split("\n")[0])
    parser.add_argument("bundle", type=Path, help="the proof bundle (JSON)")
    parser.add_argument("--rpc", help="also check the contract and the tx on this node")
    ns = parser.parse_args(argv)
    try:
        try:
            bundle = json.loads(ns.bundle.read_text())
        except (OSError, ValueError) as exc:
            raise VerificationError(f"cannot read {ns.bundle}: {exc}") from None
        if not isinstance(bundle, dict):
            raise VerificationError("a bundle is a JSON object")
        lines = [check_offline(bundle)]
        if ns.rpc:
            lines.append(check_onchain(bundle, ns.rpc))
    except VerificationError as exc:
        print(f"INVALID: {exc}", file=sys.stderr)
        return 1
    for line in lines:
        print(f"VALID: {line}")
    return 0
