"""Merkle tree speed: merkle.tree on a million entry leaves, next to OpenZeppelin's npm library.

    python -m bench.merkle [--leaves N] [--oz-leaves N] [--proofs N] [--seed N]

Builds the entries tree of ``--leaves`` seeded random ENTRY leaves (the timed build includes
the leaf encoding and hashing, not the creation of the ``EntryLeaf`` objects) as the ledger
does (two processes on a machine with two CPUs or more), then again in one process (same run,
same leaves: the machine's noise hits both), times proofs,
the serialise/reload round trip, then runs ``StandardMerkleTree.of`` of
``@openzeppelin/merkle-tree`` (through ``tests/oracle/oz_merkle.mjs``) on the first
``--oz-leaves`` of the same leaves, checks both roots agree and compares the time per leaf.
Human-readable lines first; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from merkle.leaves import ENTRY_TYPES, EntryLeaf, entry_tree, hash_entry_leaves
from merkle.tree import (
    PARALLEL_MIN_LEAVES,
    StandardMerkleTree,
    default_workers,
    keccak256,
    verify,
)

PROJECT = Path(__file__).resolve().parents[1]
ORACLE = PROJECT / "tests" / "oracle" / "oz_merkle.mjs"
OZ_PACKAGE = PROJECT / "node_modules" / "@openzeppelin" / "merkle-tree"
ASSETS = ("USD", "EUR", "MILES", "POINTS")


def make_leaves(n: int, seed: int) -> list[EntryLeaf]:
    """``n`` entries of one epoch of one ledger, with random (seeded) accounts and amounts."""
    rng = random.Random(seed)
    ledger = keccak256(b"valueos:bench-ledger")
    return [
        EntryLeaf(
            ledger_id=ledger,
            epoch=42,
            seq=1_000_000 + i,
            operation_id=500_000 + i // 2,
            account_id=rng.randrange(1, 100_000),
            asset_code=rng.choice(ASSETS),
            amount=rng.randint(-(10**12), 10**12),
            balance_after=rng.randint(-(10**9), 10**15),
        )
        for i in range(n)
    ]


def timed(label: str, seconds: float, detail: str = "") -> float:
    print(f"{label:<34} {seconds:9.3f} s  {detail}")
    return seconds


def run_openzeppelin(leaves: list[EntryLeaf]) -> dict[str, Any] | None:
    """OpenZeppelin's own build time (measured inside node) and root, or None without node."""
    node = shutil.which("node")
    if node is None or not OZ_PACKAGE.is_dir():
        print("OpenZeppelin: skipped (node or node_modules/@openzeppelin/merkle-tree missing)")
        return None
    spec = {
        "mode": "time",
        "types": list(ENTRY_TYPES),
        "values": [
            [("0x" + v.hex()) if isinstance(v, bytes) else str(v) for v in leaf.values()]
            for leaf in leaves
        ],
    }
    done = subprocess.run(  # noqa: S603 - fixed command, our own script, JSON on stdin
        [node, str(ORACLE)],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        cwd=PROJECT,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def check(ok: bool, what: str) -> None:
    if not ok:
        raise SystemExit(f"benchmark self-check failed: {what}")


def bench_build(leaves: list[EntryLeaf]) -> tuple[StandardMerkleTree, dict[str, Any]]:
    workers = default_workers() if len(leaves) >= PARALLEL_MIN_LEAVES else 1
    before, started = os.times(), time.perf_counter()
    tree = entry_tree(leaves)
    build_s = timed(f"build (encode+hash+sort+tree), {workers} proc", time.perf_counter() - started)
    after = os.times()
    parent_s = after.user + after.system - before.user - before.system
    child_s = sum(after[2:4]) - sum(before[2:4])  # the forked helpers, waited for
    cpu_s = parent_s + child_s
    print(f"  CPU time: this process {parent_s:.3f} s, forked helpers {child_s:.3f} s")
    # the same build in one process, and where its time goes
    started = time.perf_counter()
    single = StandardMerkleTree.build(leaves, hash_entry_leaves, workers=1)
    build_1p_s = timed("build in one process", time.perf_counter() - started)
    started = time.perf_counter()
    hashes = hash_entry_leaves(leaves)
    hash_s = timed("  of which: encode + hash leaves", time.perf_counter() - started)
    started = time.perf_counter()
    again = StandardMerkleTree.build(hashes, list, workers=1)
    tree_s = timed("  of which: sort + internal nodes", time.perf_counter() - started)
    check(again.root == tree.root == single.root, "the builds disagree")
    check(list(single.nodes) == list(tree.nodes), "the parallel build differs")
    print(f"root 0x{tree.root.hex()}")
    return tree, {
        "build_s": round(build_s, 3),
        "workers": workers,
        "build_cpu_s": round(cpu_s, 3),
        "build_cpu_main_s": round(parent_s, 3),
        "build_cpu_helpers_s": round(child_s, 3),
        "build_1proc_s": round(build_1p_s, 3),
        "hash_s": round(hash_s, 3),
        "tree_s": round(tree_s, 3),
        "us_per_leaf": round(1e6 * build_s / max(len(leaves), 1), 3),
    }


def bench_proofs(
    tree: StandardMerkleTree, leaves: list[EntryLeaf], rng: random.Random, count: int
) -> dict[str, Any]:
    sample = [leaves[rng.randrange(len(leaves))] for _ in range(count)] if leaves else []
    started = time.perf_counter()
    proofs = [tree.proof_for_hash(leaf.hash()) for leaf in sample]
    proof_ms = 1000 * (time.perf_counter() - started) / max(len(sample), 1)
    print(f"{'proof of a leaf (hash, find, check)':<34} {proof_ms:9.3f} ms each ({len(sample)})")
    valid = all(verify(tree.root, x.hash(), p) for x, p in zip(sample, proofs, strict=True))
    check(valid, "a proof does not verify")

    started = time.perf_counter()
    data = tree.to_bytes()
    size = f"{len(data) / 2**20:.1f} MiB"
    serialise_s = timed("to_bytes (incl. input-order index)", time.perf_counter() - started, size)
    started = time.perf_counter()
    loaded = StandardMerkleTree.from_bytes(data)
    load_s = timed("from_bytes", time.perf_counter() - started)
    picks = [rng.randrange(len(leaves)) for _ in range(count)] if leaves else []
    started = time.perf_counter()
    loaded_proofs = [loaded.proof(i) for i in picks]
    loaded_ms = 1000 * (time.perf_counter() - started) / max(len(picks), 1)
    print(f"{'proof by index, reloaded tree':<34} {loaded_ms:9.3f} ms each ({len(picks)})")
    check(all(p == tree.proof(i) for i, p in zip(picks, loaded_proofs, strict=True)), "reload")
    return {
        "proof_ms": round(proof_ms, 4),
        "loaded_proof_ms": round(loaded_ms, 4),
        "serialised_bytes": len(data),
        "serialise_s": round(serialise_s, 3),
        "load_s": round(load_s, 3),
    }


def bench_openzeppelin(leaves: list[EntryLeaf], build_s: float, n: int) -> dict[str, Any]:
    none: dict[str, Any] = {"oz_leaves": 0, "oz_build_s": None, "oz_us_per_leaf": None}
    oz = run_openzeppelin(leaves) if leaves else None
    if oz is None:
        return {**none, "speedup_per_leaf": None, "oz_root_matches": None}
    oz_s = oz["ms"] / 1000
    oz_per_leaf = oz_s / len(leaves)
    speedup = oz_per_leaf / (build_s / n)
    timed(f"OpenZeppelin of() on {len(leaves):,} leaves", oz_s, f"{1e6 * oz_per_leaf:.1f} us/leaf")
    print(f"speed-up per leaf: {speedup:.1f}x")
    matches = oz["root"] == "0x" + entry_tree(leaves).root.hex()
    check(matches, "OpenZeppelin's root differs from ours")
    return {
        "oz_leaves": len(leaves),
        "oz_build_s": round(oz_s, 3),
        "oz_us_per_leaf": round(1e6 * oz_per_leaf, 2),
        "speedup_per_leaf": round(speedup, 1),
        "oz_root_matches": matches,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--leaves", type=int, default=1_000_000)
    parser.add_argument("--oz-leaves", type=int, default=20_000)
    parser.add_argument("--proofs", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=2024)
    args = parser.parse_args()
    n = args.leaves

    started = time.perf_counter()
    leaves = make_leaves(n, args.seed)
    timed(f"make {n:,} EntryLeaf objects", time.perf_counter() - started, "(not in the build)")
    tree, built = bench_build(leaves)
    proofs = bench_proofs(tree, leaves, random.Random(args.seed), args.proofs)
    oz = bench_openzeppelin(leaves[: min(args.oz_leaves, n)], built["build_s"], n)
    print(json.dumps({"leaves": n, **built, **proofs, **oz}))


if __name__ == "__main__":
    main()
