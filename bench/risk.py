"""Risk loop throughput on the real database: positions evaluated per second per tick.

    python -m bench.risk [--sizes 10000,100000,1000000] [--repeat 5] [--naive-sample 2000]
                         [--scan-repeat 1] [--limits] [--hot-path] [--multi-every N]

Three ways over the same rows, measured in the same run:

* **indexed** (``core.risk.loop.RiskLoop.evaluate``, what a tick runs): the margin calls to
  clear, then per asset one range read of the triggers index (``trigger >= price``);
* **full scan** (``core.risk.loop.SCAN_CANDIDATES``): the same predicate evaluated in one
  statement over every open line joined with its two balance rows (the previous pass);
  the bench checks both return the same lines;
* **naive**: a loop reading and deciding one position at a time (``read_state`` + ``decide``),
  timed on ``--naive-sample`` positions and its rate extrapolated.

Also printed: the setup time, the set-based recompute of every line's trigger
(``core.risk.triggers.rebase``: what activating a new parameter version costs the next tick) and,
with ``--limits``, the set-based refresh of every line's limit and floor
(``core.risk.lines.refresh_limits``: what a price move costs the tick before it evaluates).
``--hot-path`` then prices the triggers' upkeep on the ledger's write: the balance update a
posting batch runs (``SET posted, pending, ...`` over 2,000 rows from ``unnest``), on other
accounts and on lines' credit accounts, with the two ``balances`` triggers enabled and
disabled, alternating, in the same run.

``--multi-every N`` gives every N-th line a second collateral asset (0.001 wBTC at $60,000,
under its own parameters): those lines have no trigger row; the tick reads their multi rows
through an index (``core.risk.loop.MULTI_INDEXED``), and the bench prints that read alone
(``multi s``), the scan of every such line (``multi scan s``, ``MULTI_CANDIDATES``), the
rebase of their rows on new reference prices (``multi rebase s``), and the read right after the
second asset fell 20% under its reference (``after -20% s``, with the number of lines it then
checks exactly: the filter's worst moment, until the limits job rebases); it checks the tick
returns exactly the full scan's lines plus that scan's.

Setup writes the positions' rows set-based with ``generate_series`` into a throwaway database,
on the production tables (logged, with their triggers: inserting the lines computes their
triggers): users, the four accounts of each line with precomputed ids, their balance rows
(debt drawn uniformly from $200 to $1,400 against 1 wETH at $2,000, so about 8% sit over the
65% margin call) and the lines; the secondary indexes and foreign keys of those tables are
dropped for the load and built again after it, then the tables are vacuumed and analyzed.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from core.ledger import Ledger
from core.risk import triggers
from core.risk.lines import read_state, refresh_limits
from core.risk.loop import MULTI_CANDIDATES, MULTI_DUE, MULTI_INDEXED, SCAN_CANDIDATES, RiskLoop
from core.risk.math import decide
from tests.conftest import settings_for
from tests.integration.risk_support import add_asset, make_desk
from tests.support import create_database, drop_database, raw_connect

TABLES = (
    "users", "accounts", "balances", "credit_lines", "credit_line_triggers",
    "credit_line_collateral", "credit_line_multi",
)  # fmt: skip

#: ``:a0`` the first account id, ``:l0`` the line id before the first
LOAD = [
    "SELECT setseed(0.15)",
    "CREATE TEMP TABLE bench_users AS SELECT g, ('00000000-0000-4000-8000-' || "
    "lpad(to_hex(:l0 + g), 12, '0'))::uuid AS id, (20000 + (random() * 120000)::bigint) AS debt "
    "FROM generate_series(1, :n) g",
    "INSERT INTO users (id) SELECT id FROM bench_users ORDER BY g",
    "INSERT INTO accounts (id, asset, kind, owner_id, metadata) OVERRIDING SYSTEM VALUE "
    "SELECT :a0 + 4 * (u.g - 1) + k, CASE WHEN k = 1 THEN :coll ELSE :debt END, "
    "(ARRAY['CREDIT', 'COLLATERAL', 'VAULT', 'AVAILABLE'])[k + 1], u.id, "
    "CASE WHEN k = 2 THEN '{\"purpose\": \"cushion\"}'::jsonb ELSE '{}'::jsonb END "
    "FROM bench_users u CROSS JOIN generate_series(0, 3) k ORDER BY u.g, k",
    "SELECT setval(pg_get_serial_sequence('accounts', 'id'), (SELECT max(id) FROM accounts))",
    "INSERT INTO balances (account_id, posted, floor, credit_line_id) "
    "SELECT :a0 + 4 * (u.g - 1) + k, CASE k WHEN 0 THEN -u.debt WHEN 1 THEN 1000000000 "
    "ELSE 0 END, CASE WHEN k = 0 THEN NULL ELSE 0 END, CASE WHEN k < 2 THEN :l0 + u.g END "
    "FROM bench_users u CROSS JOIN generate_series(0, 3) k ORDER BY u.g, k",
    "INSERT INTO credit_lines (id, owner_id, debt_asset, collateral_asset, credit_account_id, "
    "collateral_account_id, cushion_account_id, available_account_id, credit_limit) "
    "OVERRIDING SYSTEM VALUE SELECT :l0 + u.g, u.id, :debt, :coll, :a0 + 4 * (u.g - 1), "
    ":a0 + 4 * (u.g - 1) + 1, :a0 + 4 * (u.g - 1) + 2, :a0 + 4 * (u.g - 1) + 3, 100000 "
    "FROM bench_users u ORDER BY u.g",
    "SELECT setval(pg_get_serial_sequence('credit_lines', 'id'), "
    "(SELECT max(id) FROM credit_lines))",
    "DROP TABLE bench_users",
]


#: ``:every`` the line id step, ``:a1`` the first account id, ``:btc`` the second asset
MULTI_LOAD = [
    "CREATE TEMP TABLE bench_multi AS SELECT id AS line_id, owner_id, "
    "row_number() OVER (ORDER BY id) - 1 AS r FROM credit_lines "
    "WHERE collateral_asset = :coll AND id % :every = 0",
    "INSERT INTO accounts (id, asset, kind, owner_id, metadata) OVERRIDING SYSTEM VALUE "
    "SELECT :a1 + r, :btc, 'COLLATERAL', owner_id, '{}'::jsonb FROM bench_multi ORDER BY r",
    "SELECT setval(pg_get_serial_sequence('accounts', 'id'), (SELECT max(id) FROM accounts))",
    "INSERT INTO balances (account_id, posted, floor) "
    "SELECT :a1 + r, 100000, 0 FROM bench_multi ORDER BY r",
    "INSERT INTO credit_line_collateral (line_id, asset, account_id) "
    "SELECT line_id, :btc, :a1 + r FROM bench_multi ORDER BY r",
    "UPDATE credit_lines SET multi_collateral = true WHERE id IN (SELECT line_id FROM bench_multi)",
    "DROP TABLE bench_multi",
]


async def _scalar(conn: AsyncConnection, sql: str, **args: Any) -> Any:
    return (await conn.execute(text(sql), args)).scalar()


async def populate(ledger: Ledger, n: int, multi_every: int = 0) -> tuple[str, float]:
    """A desk and ``n`` lines on it (every ``multi_every``-th with a second asset); returns its
    collateral asset and the setup seconds."""
    start = time.perf_counter()
    desk = await make_desk(ledger)
    btc = await add_asset(desk) if multi_every else None
    await RiskLoop(ledger).evaluate(desk.coll)  # the asset's trigger basis, before its lines
    async with ledger.engine.begin() as conn:
        indexes = (
            await conn.execute(
                text(
                    "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) "
                    "FROM pg_index i WHERE i.indrelid = ANY(CAST(:t AS regclass[])) AND NOT "
                    "EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)"
                ),
                {"t": list(TABLES)},
            )
        ).all()
        foreign = (
            await conn.execute(
                text(
                    "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) "
                    "FROM pg_constraint WHERE contype = 'f' "
                    "AND conrelid = ANY(CAST(:t AS regclass[]))"
                ),
                {"t": list(TABLES)},
            )
        ).all()
        for table, name, _ in foreign:
            await conn.execute(text(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"'))
        for name, _ in indexes:
            await conn.execute(text(f"DROP INDEX {name}"))
        a0 = await _scalar(conn, "SELECT coalesce(max(id), 0) + 1 FROM accounts")
        l0 = await _scalar(conn, "SELECT coalesce(max(id), 0) FROM credit_lines")
        for statement in LOAD:
            await conn.execute(
                text(statement),
                {"n": n, "debt": desk.debt, "coll": desk.coll, "a0": a0, "l0": l0},
            )
        if btc is not None:
            a1 = await _scalar(conn, "SELECT coalesce(max(id), 0) + 1 FROM accounts")
            for statement in MULTI_LOAD:
                await conn.execute(
                    text(statement),
                    {"coll": desk.coll, "btc": btc, "every": multi_every, "a1": a1},
                )
        for _, definition in indexes:
            await conn.execute(text(definition))
        for table, name, definition in foreign:
            await conn.execute(text(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}'))
    async with ledger.engine.connect() as conn:
        await conn.execute(text("COMMIT"))
        await conn.execute(text(f"VACUUM ANALYZE {', '.join(TABLES)}"))
    if btc is not None:  # the multi rows' reference prices (else the first tick sets them)
        await triggers.rebase_multi(ledger.engine)
    return desk.coll, time.perf_counter() - start


async def indexed(ledger: Ledger, asset: str, repeat: int) -> tuple[list[float], int, list[int]]:
    loop = RiskLoop(ledger)
    times = []
    total, ids = 0, list[int]()
    for _ in range(repeat):
        start = time.perf_counter()
        total, ids = await loop.evaluate(asset)
        times.append(time.perf_counter() - start)
    return times, total, ids


async def full_scan(
    ledger: Ledger, asset: str, repeat: int, statement: str = SCAN_CANDIDATES
) -> tuple[list[float], list[int]]:
    times = []
    ids: list[int] = []
    for _ in range(repeat):
        start = time.perf_counter()
        async with ledger.engine.connect() as conn:
            ids = [int(i) for i in (await conn.execute(text(statement), {"asset": asset}))
                   .scalars()]  # fmt: skip
        times.append(time.perf_counter() - start)
    return times, ids


async def loose(ledger: Ledger, asset: str, repeat: int) -> tuple[float, int]:
    """The multi rows' read right after the second asset fell 20% under its reference (before
    the limits job rebases them): its median seconds and how many lines it checks exactly;
    the price is put back after."""
    async with ledger.engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE risk_assets SET price_answer = price_answer * 4 / 5 "
                "WHERE asset <> :a AND asset IN (SELECT asset FROM risk_multi_basis)"
            ),
            {"a": asset},
        )
    try:
        times, _ = await full_scan(ledger, asset, repeat, MULTI_INDEXED)
        async with ledger.engine.connect() as conn:
            due = await _scalar(conn, f"SELECT count(*) FROM ({MULTI_DUE}) d")
    finally:
        async with ledger.engine.begin() as conn:
            await conn.execute(
                text(
                    "UPDATE risk_assets ra SET price_answer = b.answer FROM risk_multi_basis b "
                    "WHERE b.asset = ra.asset AND ra.asset <> :a"
                ),
                {"a": asset},
            )
    return statistics.median(times), int(due)


async def rebase(ledger: Ledger, asset: str) -> float:
    start = time.perf_counter()
    await triggers.rebase(ledger.engine, asset)
    return time.perf_counter() - start


async def limits(ledger: Ledger, asset: str) -> float:
    start = time.perf_counter()
    async with ledger.engine.begin() as conn:
        await refresh_limits(conn, asset=asset)
    return time.perf_counter() - start


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


_BATCH_UPDATE = (
    "UPDATE balances b SET posted = b.posted + u.delta, pending = b.pending, "
    "last_seq = b.last_seq, updated_at = clock_timestamp() "
    "FROM unnest($1::bigint[], $2::bigint[]) AS u(id, delta) WHERE b.account_id = u.id"
)


async def hot_path(url: str, rounds: int = 5, statements: int = 20, rows: int = 2000) -> None:
    conn = await raw_connect(url)
    try:
        plain = [r[0] for r in await conn.fetch(
            "SELECT b.account_id FROM balances b JOIN accounts a ON a.id = b.account_id "
            "WHERE a.kind = 'AVAILABLE' AND b.credit_line_id IS NULL ORDER BY 1 LIMIT $1", rows
        )]  # fmt: skip
        marked = [r[0] for r in await conn.fetch(
            "SELECT b.account_id FROM balances b JOIN accounts a ON a.id = b.account_id "
            "WHERE a.kind = 'CREDIT' AND b.credit_line_id IS NOT NULL ORDER BY 1 LIMIT $1", rows
        )]  # fmt: skip
        for label, ids in (("other accounts", plain), ("lines' credit accounts", marked)):
            timed: dict[bool, list[float]] = {True: [], False: []}
            for r in range(rounds):
                for enabled in (True, False) if r % 2 else (False, True):
                    verb = "ENABLE" if enabled else "DISABLE"
                    await conn.execute(
                        f"ALTER TABLE balances {verb} TRIGGER balances_risk_note, "
                        f"{verb} TRIGGER balances_risk_noted"
                    )
                    start = time.perf_counter()
                    for i in range(statements):
                        await conn.execute(_BATCH_UPDATE, ids, [1 - 2 * (i % 2)] * len(ids))
                    timed[enabled].append((time.perf_counter() - start) / statements)
            on, off = statistics.median(timed[True]), statistics.median(timed[False])
            print(f"balance update of {len(ids)} rows, {label}: {on * 1000:.2f} ms with the "
                  f"triggers, {off * 1000:.2f} ms without ({on / off:.2f}x)",
                  flush=True)  # fmt: skip
    finally:
        await conn.execute(
            "ALTER TABLE balances ENABLE TRIGGER balances_risk_note, "
            "ENABLE TRIGGER balances_risk_noted"
        )
        await conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--repeat", type=int, default=5, help="indexed ticks per size")
    parser.add_argument("--scan-repeat", type=int, default=1, help="full scans per size")
    parser.add_argument("--naive-sample", type=int, default=2000)
    parser.add_argument("--limits", action="store_true", help="also time refresh_limits")
    parser.add_argument("--hot-path", action="store_true", help="price the triggers' upkeep")
    parser.add_argument("--multi-every", type=int, default=0,
                        help="every N-th line also holds a second collateral asset")  # fmt: skip
    args = parser.parse_args()
    url = await create_database()
    ledger = Ledger.connect(settings_for(url, pool_size=4))
    try:
        print(f"{'positions':>10} {'setup s':>8} {'tick s min':>11} {'tick s med':>11} "
              f"{'positions/s':>13} {'candidates':>11} {'scan s':>8} {'naive pos/s':>12} "
              f"{'naive s (extrap.)':>18} {'x scan':>7} {'x naive':>8} {'rebase s':>9}"
              f"{' limits s' if args.limits else ''}"
              f"{' multi lines multi s multi scan s multi rebase s' if args.multi_every else ''}"
              f"{'  after -20% s  due lines' if args.multi_every else ''}",
              flush=True)  # fmt: skip
        for n in (int(s) for s in args.sizes.split(",")):
            asset, setup_s = await populate(ledger, n, args.multi_every)
            times, total, ids = await indexed(ledger, asset, args.repeat)
            scan_times, scan_ids = await full_scan(ledger, asset, args.scan_repeat)
            multi = ""
            if args.multi_every:
                read_times, _ = await full_scan(ledger, asset, args.repeat, MULTI_INDEXED)
                multi_times, multi_ids = await full_scan(
                    ledger, asset, args.scan_repeat, MULTI_CANDIDATES
                )
                scan_ids = sorted(scan_ids + multi_ids)
                start = time.perf_counter()
                await triggers.rebase_multi(ledger.engine)
                rebase_multi_s = time.perf_counter() - start
                loose_s, loose_due = await loose(ledger, asset, args.repeat)
                multi = (
                    f" {n // args.multi_every:>11} {statistics.median(read_times):>7.3f}"
                    f" {statistics.median(multi_times):>12.3f} {rebase_multi_s:>14.2f}"
                    f" {loose_s:>12.3f} {loose_due:>10}"
                )
            if scan_ids != ids:
                raise SystemExit(f"the indexed pass and the scan disagree at {n} positions")
            naive_s, sampled, _ = await naive(ledger, asset, min(args.naive_sample, n))
            rebase_s = await rebase(ledger, asset)
            limits_s = f" {await limits(ledger, asset):>8.2f}" if args.limits else ""
            median, scan_s = statistics.median(times), statistics.median(scan_times)
            naive_rate = sampled / naive_s
            print(f"{total:>10} {setup_s:>8.1f} {min(times):>11.3f} {median:>11.3f} "
                  f"{total / median:>13,.0f} {len(ids):>11} {scan_s:>8.2f} {naive_rate:>12,.0f} "
                  f"{total / naive_rate:>18,.0f} {scan_s / median:>6.0f}x "
                  f"{total / naive_rate / median:>7,.0f}x {rebase_s:>9.2f}{limits_s}{multi}",
                  flush=True)  # fmt: skip
        if args.hot_path:
            await hot_path(url)
    finally:
        await ledger.close()
        await drop_database(url)


if __name__ == "__main__":
    asyncio.run(main())
