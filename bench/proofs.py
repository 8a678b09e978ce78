"""Proof serving from the stored tree levels vs rebuilding the tree, on one large epoch.

    python -m bench.proofs [--entries N] [--accounts N] [--proofs N] [--rebuilds N]

Fills a fresh database (DATABASE_URL, else the embedded PostgreSQL; dropped afterwards) with
one epoch of about ``--entries`` journal entries (mints, then transfers through the ledger),
seals it and builds + stores its trees (timed), then, in the same run:

* serves ``--proofs`` entry proof bundles and as many balance proof bundles the way the API
  does (:func:`core.proofs.entry_proof_bundle`: a key lookup and one 32-byte slice per stored
  level, the leaf re-read from the ledger and checked);
* rebuilds the entries tree the way a server without stored levels would have to for each
  proof: read every entry of the epoch, hash, sort, build, take the proof (``--rebuilds``
  times, also split into the database read and the tree build).

Every served proof is checked against the rebuilt tree. Human-readable lines first; the last
line is one JSON object (``serve_ms`` median per bundle, ``rebuild_s`` median, ``ratio``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from typing import Any

from core.epochs import compute_roots, load_leaves, raw_connection, seal_open_epoch
from core.ledger import Ledger
from core.proofs import balance_proof_bundle, entry_proof_bundle
from core.types import (
    AccountKind,
    Actor,
    AssetKind,
    Command,
    OperationType,
    PostOperation,
    Role,
    SystemAccount,
    transfer_legs,
)
from merkle.leaves import entry_tree
from merkle.tree import keccak256
from tests.conftest import settings_for
from tests.support import create_database, drop_database

ACTOR = Actor("bench", Role.SYSTEM)
ASSET = "BPRF"
BATCH = 2000
LEDGER_ID = keccak256(b"valueos:bench-proofs")


async def fill(ledger: Ledger, entries: int, accounts: int, rng: random.Random) -> list[int]:
    """Mint to ``accounts`` wallets, then transfer until about ``entries`` entries exist."""
    await ledger.accounts.create_asset(
        code=ASSET, name="bench proofs", scale=2, kind=AssetKind.POINTS, actor=ACTOR
    )
    issuance = await ledger.accounts.system_account(ASSET, SystemAccount.ISSUANCE, actor=ACTOR)
    ids = []
    for _ in range(accounts):
        owner = await ledger.accounts.create_user(email=None, actor=ACTOR)
        wallet = await ledger.accounts.ensure_wallet(owner, ASSET, actor=ACTOR)
        ids.append(wallet[AccountKind.AVAILABLE])
    commands: list[Command] = [
        PostOperation(OperationType.MINT, transfer_legs(issuance, a, ASSET, 10**12), ACTOR)
        for a in ids
    ]
    for _ in range(max(entries - 2 * accounts, 0) // 2):
        a, b = rng.sample(ids, 2)
        commands.append(
            PostOperation(
                OperationType.TRANSFER, transfer_legs(a, b, ASSET, 1 + rng.randrange(99)), ACTOR
            )
        )
    for i in range(0, len(commands), BATCH):
        results = await ledger.post_many(commands[i : i + BATCH])
        failed = [r for r in results if isinstance(r, Exception)]
        if failed:
            raise RuntimeError(f"bench command failed: {failed[0]!r}")
    return ids


def line(label: str, value: str) -> None:
    print(f"{label:<44} {value}")


async def bench_serving(
    ledger: Ledger, epoch: int, picks: list[int], accounts: list[int]
) -> dict[str, Any]:
    """Entry and balance proof bundles as the API serves them (from the stored levels)."""
    serve_ms, bundles = [], []
    for seq in picks:
        t = time.perf_counter()
        bundles.append(await entry_proof_bundle(ledger, seq))
        serve_ms.append(1000 * (time.perf_counter() - t))
    balance_ms = []
    for account in accounts:
        t = time.perf_counter()
        await balance_proof_bundle(ledger, account, epoch)
        balance_ms.append(1000 * (time.perf_counter() - t))
    serve = statistics.median(serve_ms)
    line("entry proof bundle from stored levels", f"{serve:9.3f} ms median ({len(picks)})")
    line("balance proof bundle from stored levels", f"{statistics.median(balance_ms):9.3f} ms")
    return {
        "serve_ms": round(serve, 3),
        "serve_p95_ms": round(statistics.quantiles(serve_ms, n=20)[-1], 3),
        "balance_serve_ms": round(statistics.median(balance_ms), 3),
        "bundles": bundles,
    }


async def bench_rebuild(ledger: Ledger, epoch: int, times: int) -> dict[str, Any]:
    """What serving one proof costs without stored levels: read the epoch, build, prove."""
    rebuild_s, read_s, tree_s = [], [], []
    tree = None
    for _ in range(times):
        t0 = time.perf_counter()
        async with raw_connection(ledger.engine) as conn:
            leaves, _ = await load_leaves(conn, LEDGER_ID, epoch)
        t1 = time.perf_counter()
        tree = entry_tree(leaves)
        tree.proof(len(leaves) // 2)
        t2 = time.perf_counter()
        read_s.append(t1 - t0)
        tree_s.append(t2 - t1)
        rebuild_s.append(t2 - t0)
    rebuild = statistics.median(rebuild_s)
    line("rebuild: read entries + build tree + proof", f"{rebuild:9.3f} s median")
    line("  of which: read the entries", f"{statistics.median(read_s):9.3f} s")
    line("  of which: build the tree", f"{statistics.median(tree_s):9.3f} s")
    return {
        "rebuild_s": round(rebuild, 3),
        "rebuild_read_s": round(statistics.median(read_s), 3),
        "rebuild_tree_s": round(statistics.median(tree_s), 3),
        "tree": tree,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    url = await create_database()
    ledger = Ledger.connect(settings_for(url, pool_size=4))
    try:
        started = time.perf_counter()
        ids = await fill(ledger, args.entries, args.accounts, rng)
        line("fill (ledger post_many)", f"{time.perf_counter() - started:9.2f} s")
        epoch = await seal_open_epoch(ledger.engine)
        if epoch is None:
            raise SystemExit("nothing to seal")
        started = time.perf_counter()
        roots = await compute_roots(ledger.engine, epoch, LEDGER_ID)
        build_store_s = time.perf_counter() - started
        line(
            f"seal build+store ({roots.leaf_count:,} entries)",
            f"{build_store_s:9.2f} s  ({roots.balance_count:,} balances)",
        )
        async with raw_connection(ledger.engine) as conn:
            seqs = [
                r[0]
                for r in await conn.fetch(
                    "SELECT seq FROM ledger_entries WHERE seq > $1 AND seq <= $2 ORDER BY seq",
                    roots.first_seq - 1,
                    roots.last_seq,
                )
            ]
        picks = [rng.choice(seqs) for _ in range(args.proofs)]
        accounts = [rng.choice(ids) for _ in range(args.proofs)]

        served = await bench_serving(ledger, epoch, picks, accounts)
        rebuilt = await bench_rebuild(ledger, epoch, args.rebuilds)
        tree, serve, rebuild = rebuilt.pop("tree"), served["serve_ms"], rebuilt["rebuild_s"]
        if tree.root != roots.entries_root:
            raise SystemExit("benchmark self-check failed: the rebuilt root differs")
        index = {seq: i for i, seq in enumerate(seqs)}
        for seq, bundle in zip(picks, served.pop("bundles"), strict=True):
            expected = ["0x" + h.hex() for h in tree.proof(index[seq])]
            if bundle["proof"] != expected:
                raise SystemExit(f"benchmark self-check failed: proof of entry {seq} differs")
        ratio = 1000 * rebuild / serve
        line("ratio rebuild / served bundle", f"{ratio:9.0f} x")
        return {
            "entries": roots.leaf_count,
            "balances": roots.balance_count,
            "build_store_s": round(build_store_s, 3),
            "proofs": len(picks),
            **served,
            **rebuilt,
            "ratio": round(ratio, 1),
        }
    finally:
        await ledger.close()
        await drop_database(url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=200_000)
    parser.add_argument("--accounts", type=int, default=1_000)
    parser.add_argument("--proofs", type=int, default=300)
    parser.add_argument("--rebuilds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if args.proofs < 2 or args.rebuilds < 1:
        parser.error("--proofs must be at least 2 and --rebuilds at least 1")
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
