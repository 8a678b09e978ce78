"""Gas per ``anchor`` of LedgerAnchor on anvil, next to the previous contract's in the same run.

    python -m bench.anchor_gas [--epochs N] [--baseline-rev REV] [--seed N]

Starts anvil (``node_modules/.bin/anvil``), deploys today's LedgerAnchor from
``chain/evm/artifacts/LedgerAnchor.json`` and the baseline -- the contract that stored three
words per epoch, header plus both roots: its artifact as last shipped, kept in
``bench/baselines/LedgerAnchor.three-word.json`` (from git revision ``BASELINE_REV``; with
``--baseline-rev REV``, the artifact of that revision from git history) -- and anchors the
same ``--epochs`` epochs of seeded random roots on both, in order. Prints gasUsed per anchor
(first epoch, then min/median/max over the rest) of both contracts; the last line is one
JSON object. Nothing is compiled or downloaded: both contracts come from committed
artifacts.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
from pathlib import Path
from typing import Any

from web3 import Web3
from web3.contract import Contract

from chain.evm.anvil import start_anvil
from chain.evm.artifacts import load_artifact

PROJECT = Path(__file__).resolve().parents[1]
ARTIFACT = "chain/evm/artifacts/LedgerAnchor.json"
#: the merge that last shipped the three-word-per-epoch LedgerAnchor
BASELINE_REV = "0efa72e76119e7db38c5b4ec3655587bd6e072ab"
LEDGER_ID = b"\x5a" * 32
HEADER_TYPES = ["bytes32", "uint64", "bytes32", "bytes32", "bytes32", "uint64", "uint64", "uint64"]


def check(ok: bool, what: str) -> None:
    if not ok:
        raise SystemExit(f"benchmark self-check failed: {what}")


BASELINE_FILE = PROJECT / "bench" / "baselines" / "LedgerAnchor.three-word.json"


def baseline_artifact(rev: str = BASELINE_REV) -> dict[str, Any]:
    """The three-word LedgerAnchor's artifact: the committed copy (a shallow clone has no
    history), or revision ``rev``'s from git history."""
    if rev == BASELINE_REV:
        return dict(json.loads(BASELINE_FILE.read_text()))
    git = shutil.which("git")
    check(git is not None, "git is not installed (the baseline comes from git history)")
    text = subprocess.run(  # noqa: S603 - fixed command; rev is the operator's argument
        [str(git), "show", f"{rev}:{ARTIFACT}"],
        cwd=PROJECT, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return dict(json.loads(text))


def deploy(w3: Web3, abi: list[Any], bytecode: str, *args: Any) -> Contract:
    factory = w3.eth.contract(abi=abi, bytecode=bytecode)
    receipt = w3.eth.wait_for_transaction_receipt(
        factory.constructor(*args).transact({"from": w3.eth.accounts[0]}), timeout=30
    )
    check(receipt["status"] == 1 and receipt["contractAddress"] is not None, "deploy reverted")
    return w3.eth.contract(address=receipt["contractAddress"], abi=abi)


def anchor_all(w3: Web3, contract: Contract, epochs: list[tuple[Any, ...]]) -> list[int]:
    """Anchor every epoch in order; gasUsed of each."""
    gas: list[int] = []
    prev = b"\x00" * 32
    for epoch, entries_root, balances_root, first, last, count in epochs:
        tx = contract.functions.anchor(
            epoch, prev, entries_root, balances_root, first, last, count
        ).transact({"from": w3.eth.accounts[0]})
        receipt = w3.eth.wait_for_transaction_receipt(tx, timeout=30)
        check(receipt["status"] == 1, f"anchor of epoch {epoch} reverted")
        gas.append(int(receipt["gasUsed"]))
        prev = Web3.keccak(
            w3.codec.encode(
                HEADER_TYPES,
                [LEDGER_ID, epoch, prev, entries_root, balances_root, first, last, count],
            )
        )
    return gas


def summary(gas: list[int]) -> dict[str, Any]:
    rest = gas[1:] or gas
    return {
        "first_epoch": gas[0],
        "min": min(rest),
        "median": int(statistics.median(rest)),
        "max": max(rest),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--baseline-rev", default=BASELINE_REV)
    parser.add_argument("--seed", type=int, default=11)
    ns = parser.parse_args()
    if ns.epochs < 2:
        parser.error("--epochs must be at least 2")

    rng = random.Random(ns.seed)
    epochs: list[tuple[Any, ...]] = []
    seq = 0
    for epoch in range(1, ns.epochs + 1):
        n = rng.randint(1, 1_000_000)
        epochs.append((epoch, rng.randbytes(32), rng.randbytes(32), seq + 1, seq + n, n))
        seq += n

    old = baseline_artifact(ns.baseline_rev)
    new = load_artifact("LedgerAnchor")
    with start_anvil() as node:
        w3 = Web3(Web3.HTTPProvider(node.rpc_url, request_kwargs={"timeout": 30}))
        admin = w3.eth.accounts[0]
        baseline = deploy(w3, old["abi"], old["bytecode"], LEDGER_ID, admin)
        ours = deploy(w3, new.abi, new.bytecode, LEDGER_ID, admin, 0, b"\x00" * 32)
        old_gas = anchor_all(w3, baseline, epochs)
        new_gas = anchor_all(w3, ours, epochs)

    result = {
        "epochs": ns.epochs,
        "baseline_rev": ns.baseline_rev,
        "one_slot": summary(new_gas),
        "three_slots_baseline": summary(old_gas),
    }
    for label, s in (("one slot (now)", result["one_slot"]),
                     ("three slots (baseline)", result["three_slots_baseline"])):  # fmt: skip
        print(
            f"{label:>22}: epoch 1 {s['first_epoch']:,} gas; epochs 2..{ns.epochs}: "
            f"min {s['min']:,}, median {s['median']:,}, max {s['max']:,}"
        )
    saved = result["three_slots_baseline"]["median"] - result["one_slot"]["median"]
    print(f"{'saved per anchor':>22}: {saved:,} gas (median)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
