"""The self-audit's cost next to building the same trees, per million entries.

    python -m bench.audit [--entries N] [--epochs K] [--accounts N]

Fills a fresh database (DATABASE_URL, else the embedded PostgreSQL; dropped afterwards) with
about ``--entries`` journal entries through the ledger, sealed into ``--epochs`` epochs (each
hashed and stored by the sealer, which also checks the previous epoch: timed), then, in the
same run:

* the baseline: build the two trees and the header of every epoch from leaves already in
  memory (:func:`core.epochs.build_epoch`, what sealing hashes), i.e. the tree build time of
  the very trees the audit rebuilds;
* the self-audit: :func:`core.integrity.audit` over every epoch (read the rows, check
  ``balance_after`` continuity and zero sums, rebuild both trees from the running balances,
  compare every stored level, keys, positions, roots and headers; no chain).

The audit must find nothing (a self-check). Human-readable lines first; the last line is one
JSON object with seconds and seconds per million entries for both.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from typing import Any

from bench.proofs import fill, line
from core import integrity
from core.epochs import build_epoch, compute_roots, load_leaves, raw_connection, seal_open_epoch
from core.ledger import Ledger
from core.types import Actor, OperationType, PostOperation, Role, transfer_legs
from merkle.tree import EMPTY_ROOT, keccak256
from tests.conftest import settings_for
from tests.support import create_database, drop_database

ACTOR = Actor("bench", Role.SYSTEM)
LEDGER_ID = keccak256(b"valueos:bench-audit")


async def fill_epochs(
    ledger: Ledger, entries: int, epochs: int, accounts: int, rng: random.Random
) -> float:
    """About ``entries`` entries in ``epochs`` sealed epochs; the sealer's seconds (build,
    store and the check of the previous epoch) summed."""
    ids = await fill(ledger, entries // epochs, accounts, rng)
    sealer_s = 0.0
    for epoch in range(1, epochs + 1):
        if epoch > 1:
            commands = [
                PostOperation(
                    OperationType.TRANSFER,
                    transfer_legs(*rng.sample(ids, 2), "BPRF", 1 + rng.randrange(99)),
                    ACTOR,
                )
                for _ in range(entries // epochs // 2)
            ]
            for i in range(0, len(commands), 2000):
                await ledger.post_many(commands[i : i + 2000])
        if await seal_open_epoch(ledger.engine) != epoch:
            raise SystemExit(f"epoch {epoch} was not sealed")
        started = time.perf_counter()
        await compute_roots(ledger.engine, epoch, LEDGER_ID)
        sealer_s += time.perf_counter() - started
    return sealer_s


async def build_baseline(ledger: Ledger, epochs: int) -> tuple[float, int]:
    """Seconds to build every epoch's trees and header from leaves in memory; entries."""
    total, count, prev = 0.0, 0, EMPTY_ROOT
    for epoch in range(1, epochs + 1):
        async with raw_connection(ledger.engine) as conn:
            entries, balances = await load_leaves(conn, LEDGER_ID, epoch)
        started = time.perf_counter()
        built = build_epoch(
            ledger_id=LEDGER_ID, epoch=epoch, prev_header=prev, prev_cut=0, entries=entries,
            balances=balances,
        )  # fmt: skip
        total += time.perf_counter() - started
        count += len(entries)
        prev = built.roots.header
    return total, count


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    url = await create_database()
    ledger = Ledger.connect(settings_for(url, pool_size=4))
    try:
        started = time.perf_counter()
        sealer_s = await fill_epochs(ledger, args.entries, args.epochs, args.accounts, rng)
        line("fill + seal (ledger post_many, sealer)", f"{time.perf_counter() - started:9.2f} s")
        build_s, entries = await build_baseline(ledger, args.epochs)
        started = time.perf_counter()
        report = await integrity.audit(ledger.engine, LEDGER_ID, alarm=False)
        audit_s = time.perf_counter() - started
        if not report.ok or report.entries != entries:
            raise SystemExit(f"benchmark self-check failed: {report}")
        per_m = 1_000_000 / entries
        line("entries / epochs / accounts", f"{entries:,} / {args.epochs} / {args.accounts:,}")
        line(
            "sealer: build + store + check E-1", f"{sealer_s:9.2f} s  ({sealer_s * per_m:.2f} s/M)"
        )
        line("baseline: build the same trees", f"{build_s:9.2f} s  ({build_s * per_m:.2f} s/M)")
        line(
            "self-audit: rows -> trees -> compare", f"{audit_s:9.2f} s  ({audit_s * per_m:.2f} s/M)"
        )
        line("ratio audit / tree build", f"{audit_s / build_s:9.2f} x")
        return {
            "entries": entries,
            "epochs": args.epochs,
            "sealer_s": round(sealer_s, 3),
            "build_s": round(build_s, 3),
            "audit_s": round(audit_s, 3),
            "build_s_per_million": round(build_s * per_m, 3),
            "audit_s_per_million": round(audit_s * per_m, 3),
            "ratio": round(audit_s / build_s, 2),
        }
    finally:
        await ledger.close()
        await drop_database(url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=200_000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--accounts", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
