"""Risk loop throughput on the real database: positions evaluated per second per tick, the
set-based pass (``core.risk.loop.RiskLoop.evaluate``: one statement over every open line) next
to a naive loop reading and deciding one position at a time (``core.risk.lines.read_state`` +
``core.risk.math.decide``), measured in the same run on the same rows.

    python -m bench.risk [--sizes 10000,100000] [--naive-sample 2000] [--repeat 3]

Setup (not measured) writes the positions' rows directly with ``generate_series`` into a
throwaway database: users, the four accounts of each line, their balance rows (debt drawn
uniformly from $200 to $1,400 against 1 wETH at $2,000, so about 8% sit over the 65% margin
call) and the lines. The naive loop is timed on ``--naive-sample`` positions and its rate
extrapolated (reading a million positions one by one would take minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from sqlalchemy import text

from core.ledger import Ledger
from core.risk.lines import read_state
from core.risk.math import decide
from tests.conftest import settings_for
from tests.integration.risk_support import make_desk
from tests.support import create_database, drop_database

SETUP = [
    "CREATE TEMP TABLE bench_users AS SELECT g AS n, gen_random_uuid() AS id, "
    "(20000 + (random() * 120000)::bigint) AS debt FROM generate_series(1, :n) g",
    "INSERT INTO users (id) SELECT id FROM bench_users",
    "INSERT INTO accounts (asset, kind, owner_id) SELECT :debt, 'CREDIT', id FROM bench_users",
    "INSERT INTO accounts (asset, kind, owner_id) SELECT :coll, 'COLLATERAL', id FROM bench_users",
    "INSERT INTO accounts (asset, kind, owner_id, metadata) SELECT :debt, 'VAULT', id, "
    '\'{"purpose": "cushion"}\' FROM bench_users',
    "INSERT INTO accounts (asset, kind, owner_id) SELECT :debt, 'AVAILABLE', id FROM bench_users",
    "INSERT INTO balances (account_id, posted, floor) SELECT a.id, CASE a.kind "
    "WHEN 'CREDIT' THEN -u.debt WHEN 'COLLATERAL' THEN 1000000000 ELSE 0 END, "
    "CASE a.kind WHEN 'CREDIT' THEN NULL ELSE 0 END "
    "FROM accounts a JOIN bench_users u ON u.id = a.owner_id",
    "INSERT INTO credit_lines (owner_id, debt_asset, collateral_asset, credit_account_id, "
    "collateral_account_id, cushion_account_id, available_account_id, credit_limit) "
    "SELECT u.id, :debt, :coll, cr.id, co.id, cu.id, av.id, 100000 FROM bench_users u "
    "JOIN accounts cr ON cr.owner_id = u.id AND cr.kind = 'CREDIT' "
    "JOIN accounts co ON co.owner_id = u.id AND co.kind = 'COLLATERAL' "
    "JOIN accounts cu ON cu.owner_id = u.id AND cu.kind = 'VAULT' "
    "JOIN accounts av ON av.owner_id = u.id AND av.kind = 'AVAILABLE'",
    "DROP TABLE bench_users",
]


async def populate(ledger: Ledger, n: int) -> str:
    desk = await make_desk(ledger)
    async with ledger.engine.begin() as conn:
        for statement in SETUP:
            await conn.execute(text(statement), {"n": n, "debt": desk.debt, "coll": desk.coll})
    async with ledger.engine.connect() as conn:
        await conn.execute(text("COMMIT"))
        await conn.execute(text("VACUUM ANALYZE balances, credit_lines, accounts"))
    return desk.coll


async def set_based(ledger: Ledger, asset: str, repeat: int) -> tuple[float, int, int]:
    from core.risk.loop import RiskLoop  # noqa: PLC0415

    loop = RiskLoop(ledger)
    times = []
    total = candidates = 0
    for _ in range(repeat):
        start = time.perf_counter()
        total, ids = await loop.evaluate(asset)
        times.append(time.perf_counter() - start)
        candidates = len(ids)
    return statistics.median(times), total, candidates


async def naive(ledger: Ledger, asset: str, sample: int) -> tuple[float, int, int]:
    async with ledger.engine.connect() as conn:
        ids = list(
            (
                await conn.execute(
                    text(
                        "SELECT id FROM credit_lines WHERE collateral_asset = :a ORDER BY id "
                        "LIMIT :n"
                    ),
                    {"a": asset, "n": sample},
                )
            ).scalars()
        )
        start = time.perf_counter()
        acting = 0
        for line_id in ids:
            state = await read_state(conn, line_id)
            assert state.params is not None  # noqa: S101 - the desk activated parameters
            acting += decide(state.position(), state.params.ladder).kind != "NONE"
        elapsed = time.perf_counter() - start
    return elapsed, len(ids), acting


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--naive-sample", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    url = await create_database()
    ledger = Ledger.connect(settings_for(url, pool_size=4))
    try:
        print(f"{'positions':>10} {'set-based s/tick':>17} {'positions/s':>13} "
              f"{'naive positions/s':>18} {'naive s/tick (extrap.)':>23} {'speed-up':>9} "
              f"{'over margin':>12}")  # fmt: skip
        for n in (int(s) for s in args.sizes.split(",")):
            asset = await populate(ledger, n)
            seconds, total, candidates = await set_based(ledger, asset, args.repeat)
            naive_s, sampled, _ = await naive(ledger, asset, min(args.naive_sample, n))
            naive_rate = sampled / naive_s
            rate = total / seconds
            print(f"{total:>10} {seconds:>17.3f} {rate:>13,.0f} {naive_rate:>18,.0f} "
                  f"{total / naive_rate:>23.1f} {rate / naive_rate:>8.0f}x {candidates:>12}",
                  flush=True)  # fmt: skip
    finally:
        await ledger.close()
        await drop_database(url)


if __name__ == "__main__":
    asyncio.run(main())
