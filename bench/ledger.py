"""Ledger throughput against the real PostgreSQL, next to a raw-SQL baseline.

    python -m bench.ledger [--transfers N] [--accounts N] [--callers N] [--rounds N]

Uses DATABASE_URL when set, else an embedded PostgreSQL; always in a fresh database
that is dropped afterwards. Each of ``--rounds`` rounds measures, back to back, the
baseline (the issue's minimal raw-SQL transfer: two entry inserts and two balance updates
per transfer, batches of 2,000 per transaction), a stronger aggregated variant (one
update per touched account per batch), the ledger's batched ``post_many`` and the same
under a typical policy; the medians over the rounds (ratios taken per round) are
reported, then 32 concurrent single-transfer callers and the hot issuance account.
Prints one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from typing import Any

from core.compliance import issue_attestation
from core.ledger import Ledger
from core.policy.versions import activate_policy, create_policy
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
from tests.conftest import settings_for
from tests.support import create_database, drop_database, raw_connect

ACTOR = Actor("bench", Role.SYSTEM)
BATCH = 2000


async def setup(ledger: Ledger, accounts: int) -> tuple[str, int, list[int]]:
    await ledger.accounts.create_asset(
        code="BENCH", name="bench", scale=2, kind=AssetKind.POINTS, actor=ACTOR
    )
    issuance = await ledger.accounts.system_account("BENCH", SystemAccount.ISSUANCE, actor=ACTOR)
    ids = []
    for _ in range(accounts):
        owner = await ledger.accounts.create_user(email=None, actor=ACTOR)
        ids.append(
            (await ledger.accounts.ensure_wallet(owner, "BENCH", actor=ACTOR))[
                AccountKind.AVAILABLE
            ]
        )
    mints: list[Command] = [
        PostOperation(OperationType.MINT, transfer_legs(issuance, a, "BENCH", 10**12), ACTOR)
        for a in ids
    ]
    await ledger.post_many(mints)
    return "BENCH", issuance, ids


#: a typical policy: KYC claim, daily limits per user, fixed + bps fee
TYPICAL_POLICY: dict[str, Any] = {
    "rules": [
        {
            "id": "kyc",
            "kind": "claims",
            "require": [{"claim": "kyc.level", "op": ">=", "value": 2}],
        },
        {"id": "daily", "kind": "limit", "window": "day", "max_count": 10**9, "max_amount": 10**15},
        {"id": "fee", "kind": "fee", "fixed": 1, "bps": 10},
    ]
}


async def setup_policy(ledger: Ledger, accounts: int) -> list[int]:
    """Asset BPOL under TYPICAL_POLICY for transfers; every owner holds kyc.level = 2."""
    await ledger.accounts.create_asset(
        code="BPOL", name="bench policy", scale=2, kind=AssetKind.POINTS, actor=ACTOR
    )
    issuance = await ledger.accounts.system_account("BPOL", SystemAccount.ISSUANCE, actor=ACTOR)
    admin = Actor("bench-admin", Role.ADMIN)
    ids = []
    for _ in range(accounts):
        owner = await ledger.accounts.create_user(email=None, actor=ACTOR)
        wallet = await ledger.accounts.ensure_wallet(owner, "BPOL", actor=ACTOR)
        ids.append(wallet[AccountKind.AVAILABLE])
        await issue_attestation(
            ledger, actor=admin, subject_id=owner, claim="kyc.level", value=2,
            evidence_hash="00" * 32, reason="bench",
        )  # fmt: skip
    mints: list[Command] = [
        PostOperation(OperationType.MINT, transfer_legs(issuance, a, "BPOL", 10**12), ACTOR)
        for a in ids
    ]
    await ledger.post_many(mints)
    record = await create_policy(
        ledger, asset="BPOL", operation_type=OperationType.TRANSFER,
        document=TYPICAL_POLICY, actor=admin, reason="bench",
    )  # fmt: skip
    await activate_policy(ledger, record.id, actor=admin, reason="bench")
    return ids


def random_transfers(ids: list[int], n: int, rng: random.Random) -> list[tuple[int, int]]:
    out = []
    for _ in range(n):
        a, b = rng.sample(ids, 2)
        out.append((a, b))
    return out


async def bench_batched(
    ledger: Ledger, ids: list[int], n: int, rng: random.Random, asset: str = "BENCH"
) -> float:
    pairs = random_transfers(ids, n, rng)
    commands = [
        PostOperation(OperationType.TRANSFER, transfer_legs(a, b, asset, 1), ACTOR)
        for a, b in pairs
    ]
    start = time.perf_counter()
    for i in range(0, n, BATCH):
        results = await ledger.post_many(commands[i : i + BATCH])
        failed = [r for r in results if isinstance(r, Exception)]
        if failed:
            raise RuntimeError(f"bench transfer failed: {failed[0]!r}")
    return n / (time.perf_counter() - start)


async def bench_callers(ledger: Ledger, n: int, callers: int, pick: Any) -> float:
    per_caller = n // callers

    async def caller() -> None:
        for _ in range(per_caller):
            a, b = pick()
            await ledger.transfer(source=a, destination=b, asset="BENCH", amount=1, actor=ACTOR)

    start = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    return per_caller * callers / (time.perf_counter() - start)


async def _baseline_tables(conn: Any, prefix: str, ids: list[int]) -> None:
    await conn.execute(
        f"CREATE TABLE {prefix}_entries (seq bigserial PRIMARY KEY, "
        "account_id bigint NOT NULL, amount bigint NOT NULL);"
        f"CREATE TABLE {prefix}_balances (account_id bigint PRIMARY KEY, balance bigint NOT NULL);"
    )
    await conn.execute(f"INSERT INTO {prefix}_balances SELECT unnest($1::bigint[]), 0", ids)


#: the minimal transfer: debit one balance, credit the other, record both entries
_BASELINE_TRANSFER = """
WITH debit AS (UPDATE base_balances SET balance = balance - $3 WHERE account_id = $1),
     credit AS (UPDATE base_balances SET balance = balance + $3 WHERE account_id = $2)
INSERT INTO base_entries (account_id, amount) VALUES ($1, -$3), ($2, $3)
"""


async def bench_baseline(url: str, ids: list[int], n: int, rng: random.Random) -> float:
    """The issue's baseline, the minimal raw-SQL transfer: two entry inserts and two balance
    updates per transfer (one statement), in batches of BATCH transfers per transaction
    (``executemany``: the statements of a batch are pipelined, one round trip)."""
    conn = await raw_connect(url)
    try:
        await _baseline_tables(conn, "base", ids)
        pairs = random_transfers(ids, n, rng)
        start = time.perf_counter()
        for i in range(0, n, BATCH):
            async with conn.transaction():
                await conn.executemany(
                    _BASELINE_TRANSFER, [(a, b, 1) for a, b in pairs[i : i + BATCH]]
                )
        return n / (time.perf_counter() - start)
    finally:
        await conn.execute("DROP TABLE IF EXISTS base_entries, base_balances")
        await conn.close()


async def bench_baseline_aggregated(url: str, ids: list[int], n: int, rng: random.Random) -> float:
    """A stronger reference than the issue's baseline: per batch, one multi-row insert of
    the entries and ONE update per touched account (the deltas summed in Python), so with
    500 accounts a batch of 2,000 transfers updates ~500 rows instead of 4,000. The ledger
    itself aggregates the same way, but also writes operations, audit, checks and indexes."""
    conn = await raw_connect(url)
    try:
        await _baseline_tables(conn, "agg", ids)
        pairs = random_transfers(ids, n, rng)
        start = time.perf_counter()
        for i in range(0, n, BATCH):
            chunk = pairs[i : i + BATCH]
            accounts: list[int] = []
            amounts: list[int] = []
            delta: dict[int, int] = {}
            for a, b in chunk:
                accounts += (a, b)
                amounts += (-1, 1)
                delta[a] = delta.get(a, 0) - 1
                delta[b] = delta.get(b, 0) + 1
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO agg_entries (account_id, amount) "
                    "SELECT * FROM unnest($1::bigint[], $2::bigint[])",
                    accounts,
                    amounts,
                )
                keys = sorted(delta)
                await conn.execute(
                    "UPDATE agg_balances b SET balance = b.balance + u.d FROM "
                    "unnest($1::bigint[], $2::bigint[]) AS u(id, d) WHERE b.account_id = u.id",
                    keys,
                    [delta[k] for k in keys],
                )
        return n / (time.perf_counter() - start)
    finally:
        await conn.execute("DROP TABLE IF EXISTS agg_entries, agg_balances")
        await conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--transfers", type=int, default=100_000)
    parser.add_argument("--accounts", type=int, default=1_000)
    parser.add_argument("--callers", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rng = random.Random(7)
    url = await create_database()
    ledger = Ledger.connect(settings_for(url, pool_size=4))
    try:
        _, issuance, ids = await setup(ledger, args.accounts)
        policy_ids = await setup_policy(ledger, args.accounts)
        rounds: list[dict[str, float]] = []
        for number in range(1, args.rounds + 1):
            # one round measures each figure back to back, so a burst of load from
            # elsewhere on the machine hits a round's baseline and ledger alike: the ratios
            # are per round, the medians over the rounds are reported
            r = {
                "baseline": await bench_baseline(url, ids, args.transfers, rng),
                "aggregated": await bench_baseline_aggregated(url, ids, args.transfers, rng),
                "batched": await bench_batched(ledger, ids, args.transfers, rng),
                "policy": await bench_batched(ledger, policy_ids, args.transfers, rng, "BPOL"),
            }
            rounds.append(r)
            print(
                f"round {number}: baseline {r['baseline']:,.0f} (aggregated {r['aggregated']:,.0f})"
                f", ledger {r['batched']:,.0f} ({r['batched'] / r['baseline']:.2f}x), "
                f"with policy {r['policy']:,.0f} transfers/s"
            )

        def median(f: Any) -> float:
            return statistics.median(f(r) for r in rounds)

        baseline = median(lambda r: r["baseline"])
        aggregated = median(lambda r: r["aggregated"])
        batched = median(lambda r: r["batched"])
        with_policy = median(lambda r: r["policy"])
        ratio = median(lambda r: r["batched"] / r["baseline"])
        ratio_aggregated = median(lambda r: r["batched"] / r["aggregated"])
        policy_ratio = median(lambda r: r["policy"] / r["batched"])
        print(f"medians of {len(rounds)} rounds:")
        print(f"baseline raw SQL     : {baseline:10,.0f} transfers/s (2 inserts + 2 updates each)")
        print(f"  aggregated updates : {aggregated:10,.0f} transfers/s (one update per account)")
        print(
            f"ledger batched       : {batched:10,.0f} transfers/s "
            f"({ratio:.2f}x baseline, {ratio_aggregated:.2f}x aggregated)"
        )
        print(
            f"ledger batched+policy: {with_policy:10,.0f} transfers/s "
            f"({policy_ratio:.2f}x without policy; claims + daily limit + fee)"
        )
        n_single = max(args.transfers // 4, args.callers)
        single = await bench_callers(
            ledger, n_single, args.callers, lambda: tuple(rng.sample(ids, 2))
        )
        print(
            f"ledger {args.callers} callers    : {single:10,.0f} transfers/s (group commit, "
            f"{ledger.batcher.commands / max(ledger.batcher.batches, 1):.0f} per batch)"
        )
        hot = await bench_callers(
            ledger, n_single, args.callers, lambda: (issuance, rng.choice(ids))
        )
        print(f"hot issuance account : {hot:10,.0f} transfers/s")
        drifts = await ledger.reconcile()
        print(f"reconciler drifts    : {len(drifts)}")
        print(
            json.dumps(
                {
                    "transfers": args.transfers,
                    "transfers_per_s": round(batched),
                    "policy_transfers_per_s": round(with_policy),
                    "policy_ratio": round(policy_ratio, 3),
                    "single_per_s": round(single),
                    "hot_account_per_s": round(hot),
                    "baseline_per_s": round(baseline),
                    "ratio_to_baseline": round(ratio, 3),
                    "baseline_aggregated_per_s": round(aggregated),
                    "ratio_to_aggregated": round(ratio_aggregated, 3),
                    "rounds": len(rounds),
                    "callers": args.callers,
                    "drifts": len(drifts),
                }
            )
        )
    finally:
        await ledger.close()
        await drop_database(url)


if __name__ == "__main__":
    asyncio.run(main())
