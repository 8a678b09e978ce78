"""The lines of several collateral assets read through their multi rows (migration 0025): every
posting keeps a line's row in step, two transactions racing on one line leave it computed from
the latest balances, and the indexed selection (the ratio filter, then the exact check) returns
exactly the lines the scan of every such line returns, over random positions, price moves away
from the reference, rebases and stop-losses."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from alembic import command
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from core.db import alembic_config, migrate_async
from core.ledger import Ledger
from core.risk import params as risk_params
from core.risk.lines import Line
from core.risk.loop import MULTI_CANDIDATES, MULTI_INDEXED
from core.risk.triggers import multi_drift, rebase_multi
from tests.conftest import settings_for
from tests.integration.risk_support import (
    ADMIN,
    BTC,
    BTC_PARAMETERS,
    COLL,
    Desk,
    add_asset,
    make_desk,
    place,
    race,
    undo,
    usd,
)
from tests.support import create_database, drop_database

pytestmark = pytest.mark.integration


async def selections(desk: Desk) -> tuple[list[int], list[int]]:
    """(indexed, scan) over the desk's lines (those holding its own asset: other tests share
    the database), in one snapshot."""
    scope = {"asset": desk.coll}
    async with desk.ledger.engine.connect() as plain:
        conn = await plain.execution_options(isolation_level="REPEATABLE READ")
        async with conn.begin():
            indexed = (await conn.execute(text(MULTI_INDEXED), scope)).scalars()
            indexed_ids = sorted(int(i) for i in indexed)
            scan = (await conn.execute(text(MULTI_CANDIDATES), scope)).scalars()
            return indexed_ids, sorted(int(i) for i in scan)


async def in_step(desk: Desk) -> list[int]:
    async with desk.ledger.engine.connect() as conn:
        assert await multi_drift(conn) == []
    indexed, scan = await selections(desk)
    assert indexed == scan
    return scan


async def multi_row(desk: Desk, line: Line) -> Any:
    async with desk.ledger.engine.connect() as conn:
        return (
            await conn.execute(
                text("SELECT * FROM credit_line_multi WHERE line_id = :l"), {"l": line.id}
            )
        ).one()


async def basket(desk: Desk, btc: str, eth: int, wbtc: int) -> Line:
    line = await desk.line(eth)
    await desk.fund(line.owner_id, btc, wbtc)
    await desk.lines.deposit(line.id, wbtc, ADMIN, asset=btc)
    return line


async def test_postings_keep_the_multi_row_and_a_new_version_rebases(ledger: Ledger) -> None:
    desk = await make_desk(ledger)
    btc = await add_asset(desk)
    line = await basket(desk, btc, COLL, BTC // 10)
    assert await rebase_multi(ledger.engine)
    row = await multi_row(desk, line)
    # $2,000 x 65% + $6,000 x 70% at the reference, in cents x bps
    assert (row.open, row.exposure, row.cap_ref, row.holdings) == (True, 0, 5_500_000_000, 2)
    assert row.key == -float("inf")
    await desk.spend(line.id, usd(4_000))
    row = await multi_row(desk, line)
    assert row.exposure == usd(4_000)
    assert row.key == (usd(4_000) + 2) * 10**4 * 10**20 // 5_500_000_000 + 1
    await desk.lines.withdraw(line.id, BTC // 100, ADMIN, asset=btc)
    assert (await multi_row(desk, line)).cap_ref == 5_500_000_000 - 60_000 * 7_000
    assert await in_step(desk) == []
    await desk.price(35_000, asset=btc)  # $2,000 + $3,150 against $4,000: over margin call
    assert await in_step(desk) == [line.id]
    # a new parameter version of wBTC: the basis is no longer current; the tick rebases first
    values: dict[str, Any] = BTC_PARAMETERS | {"asset": btc, "debt_asset": desk.debt}
    draft = risk_params.RiskParameterDraft(**(values | {"margin_call_bps": 6_900}))
    draft_id = await risk_params.create_draft(ledger.engine, draft, ADMIN)
    await risk_params.activate(ledger.engine, draft_id, ADMIN, "test")
    _, ids = await desk.loop.evaluate(desk.coll)
    assert line.id in ids
    async with ledger.engine.connect() as conn:
        basis = (
            await conn.execute(
                text("SELECT b.answer, p.margin_call_bps FROM risk_multi_basis b "
                     "JOIN risk_parameters p ON p.id = b.params_id WHERE b.asset = :a"),
                {"a": btc},
            )
        ).one()  # fmt: skip
    assert (basis.answer, basis.margin_call_bps) == (35_000 * 10**8, 6_900)
    assert await in_step(desk) == [line.id]


async def test_the_key_slack_covers_the_rounding_down_of_each_value(ledger: Ledger) -> None:
    """A line whose rounded-down value loses 0.6 cent at the new price: over its margin call by
    that sliver, while exposure x 10^4 / capacity (the key without its slack) is under the
    price ratio. The indexed selection still returns it."""
    desk = await make_desk(ledger)
    btc = await add_asset(desk)
    line = await basket(desk, btc, 5_000_000, 1)  # 0.005 wETH = $10.00 at $2,000; 1 sat of wBTC
    await desk.spend(line.id, 326)
    assert await rebase_multi(ledger.engine)
    await desk.price(1_003.2)  # ratio 0.5016: the wETH is worth 501.6 cents, rounded to 501
    state = await desk.lines.get(line.id)
    assert state.value == 501 and state.debt == 326
    assert 326 * 10**4 > 501 * 6_500  # over its margin call
    assert 326 * 10**4 * 10**4 < 5016 * (1_000 * 6_500)  # E x 10^4 / C(R) < m = 0.5016
    assert await in_step(desk) == [line.id]


async def test_a_price_far_under_its_reference_makes_the_limits_job_rebase(
    ledger: Ledger,
) -> None:
    desk = await make_desk(ledger)
    btc = await add_asset(desk)
    await basket(desk, btc, COLL, BTC // 10)
    assert await rebase_multi(ledger.engine)
    await desk.price(58_000, asset=btc)  # 3.3% under: still tight enough
    await desk.loop.refresh_moved_prices()
    assert await reference(desk, btc) == 60_000 * 10**8
    await desk.price(50_000, asset=btc)  # 16.7% under
    await desk.loop.refresh_moved_prices()
    assert await reference(desk, btc) == 50_000 * 10**8
    await in_step(desk)


async def reference(desk: Desk, asset: str) -> int:
    async with desk.ledger.engine.connect() as conn:
        return int(
            (
                await conn.execute(
                    text("SELECT answer FROM risk_multi_basis WHERE asset = :a"), {"a": asset}
                )
            ).scalar_one()
        )


async def test_racing_postings_on_one_line_leave_its_multi_row_current(
    ledger: Ledger, database_url: str
) -> None:
    """A spend on the credit account and a move of the further collateral in two transactions:
    the second waits for the first's row lock, then reads the balances anew."""
    desk = await make_desk(ledger)
    btc = await add_asset(desk)
    line = await basket(desk, btc, COLL, BTC // 10)
    further = (await desk.lines.get(line.id)).others[0].account_id
    assert await rebase_multi(ledger.engine)
    spend = (line.credit_account_id, "pending", 70_000)
    withdrawal = (further, "posted", -1_000_000)
    await race(database_url, spend, withdrawal)
    row = await multi_row(desk, line)
    assert row.exposure == 70_000 and row.cap_ref == 5_500_000_000 - 60_000 * 7_000
    async with ledger.engine.connect() as conn:
        assert await multi_drift(conn) == []
    await undo(ledger, spend, withdrawal)  # back to what the entries say
    await in_step(desk)
    assert await ledger.reconcile() == []


# --------------------------------------------------------------------------------------
# The indexed selection against the scan, over random positions and price moves
# --------------------------------------------------------------------------------------

LINES = 6
position = st.tuples(
    st.one_of(st.just(0), st.integers(1, 3 * COLL)),  # the line's own wETH
    st.one_of(st.just(0), st.integers(1, BTC // 5)),  # its wBTC
    st.integers(-usd(200), usd(9_000)),  # posted debt (negative: in credit)
    st.one_of(st.just(0), st.integers(1, usd(600))),  # pending
    st.one_of(st.none(), st.integers(1, 70_000 * 10**8)),  # a stop-loss on the wBTC
)
#: each price as a ratio of its reference (per mille), or exactly a line's own stop
prices = st.tuples(st.integers(300, 1_500), st.integers(300, 1_500), st.booleans())


async def _apply(
    desk: Desk, btc: str, lines: list[tuple[Line, int]], positions: list[Any], move: Any
) -> None:
    async with desk.ledger.engine.begin() as conn:
        for (line, further), (eth, wbtc, debt, pending, stop) in zip(lines, positions, strict=True):
            held = {line.collateral_account_id: eth, further: wbtc}
            await place(conn, line, debt=debt, pending=pending, collateral=held)
            await conn.execute(
                text(
                    "UPDATE credit_line_collateral SET stop_loss_answer = :s "
                    "WHERE line_id = :l AND asset = :a"
                ),
                {"s": stop, "l": line.id, "a": btc},
            )
        eth_ratio, btc_ratio, at_stop = move
        btc_price = btc_ratio * 60_000 * 10**5
        stops = [p[4] for p in positions if p[4] is not None]
        if at_stop and stops:
            btc_price = stops[0]
        for asset, price in ((desk.coll, eth_ratio * 2_000 * 10**5), (btc, btc_price)):
            await conn.execute(
                text("UPDATE risk_assets SET price_answer = :p WHERE asset = :a"),
                {"p": price, "a": asset},
            )


def test_the_indexed_selection_of_lines_of_several_assets_is_the_scan() -> None:
    loop = asyncio.new_event_loop()
    url = loop.run_until_complete(create_database())
    ledger = Ledger.connect(settings_for(url))
    try:
        desk = loop.run_until_complete(make_desk(ledger))
        btc = loop.run_until_complete(add_asset(desk))
        lines = []
        for _ in range(LINES):
            line = loop.run_until_complete(basket(desk, btc, 1, 1))
            further = loop.run_until_complete(desk.lines.get(line.id)).others[0].account_id
            lines.append((line, further))
        assert loop.run_until_complete(rebase_multi(ledger.engine))
        hits = {"some": 0, "none": 0}

        @settings(
            max_examples=120, deadline=None, suppress_health_check=list(HealthCheck),
            database=None,
        )  # fmt: skip
        @given(st.lists(position, min_size=LINES, max_size=LINES), prices, st.booleans())
        def check(positions: list[Any], move: Any, rebase: bool) -> None:
            loop.run_until_complete(_apply(desk, btc, lines, positions, move))
            if rebase:  # sometimes the reference follows the prices
                assert loop.run_until_complete(rebase_multi(ledger.engine))
            scan = loop.run_until_complete(in_step(desk))
            hits["some" if scan else "none"] += 1

        check()
        assert hits["some"] and hits["none"]  # both outcomes were exercised
    finally:
        loop.run_until_complete(ledger.close())
        loop.run_until_complete(drop_database(url))
        loop.close()


async def test_the_migration_goes_down_and_up_and_refuses_to_drop_further_collateral() -> None:
    url = await create_database()
    ledger = Ledger.connect(settings_for(url))
    try:
        desk = await make_desk(ledger)
        single = await desk.line(COLL, spend=usd(500))
        await ledger.engine.dispose()
        await asyncio.to_thread(command.downgrade, alembic_config(url), "0024_commitments_by_epoch")
        await migrate_async(url)
        btc = await add_asset(desk)
        await desk.spend(single.id, usd(100))  # the line of one asset still moves its trigger
        line = await basket(desk, btc, COLL, BTC // 10)
        assert await rebase_multi(ledger.engine)
        assert await in_step(desk) == []
        await ledger.engine.dispose()
        with pytest.raises(Exception, match="withdraw them first"):
            await asyncio.to_thread(
                command.downgrade, alembic_config(url), "0024_commitments_by_epoch"
            )
        assert (await desk.lines.get(line.id)).others[0].quantity == BTC // 10
    finally:
        await ledger.close()
        await drop_database(url)


# --------------------------------------------------------------------------------------
# Ticks along random price paths: value conserved, the books reconciled, every row in step
# --------------------------------------------------------------------------------------


async def _path_case(ledger: Ledger, path: list[tuple[int, int]], seed: int) -> dict[str, int]:
    """A desk of lines of two assets (and one of one asset) ticking along ``path`` (each price
    per mille of its start); returns the actions taken."""
    desk = await make_desk(ledger)
    btc = await add_asset(desk)
    rng = random.Random(seed)
    lines = [await desk.line(COLL, spend=usd(900))]
    for _ in range(4):
        line = await basket(desk, btc, rng.randint(1, 2 * COLL), rng.randint(1, BTC // 10))
        limit = (await desk.lines.get(line.id)).current_limit
        await desk.spend(line.id, rng.randint(limit // 2, limit))
        lines.append(line)
    if rng.random() < 0.5:
        await desk.lines.set_stop_loss(lines[1].id, rng.randint(30_000, 60_000) * 10**8, ADMIN,
                                       asset=btc)  # fmt: skip
    await rebase_multi(ledger.engine)
    actions: dict[str, int] = {}
    for eth_ratio, btc_ratio in path:
        await desk.price(2_000 * eth_ratio / 1_000)
        await desk.price(60_000 * btc_ratio / 1_000, asset=btc)
        report = await desk.loop.tick(desk.coll)
        for kind, n in report.actions.items():
            actions[kind] = actions.get(kind, 0) + n
        assert set((await desk.totals()).values()) == {0}  # per asset, every account summed
        assert await ledger.reconcile() == []
        async with ledger.engine.connect() as conn:
            assert await multi_drift(conn) == []
        for line in lines:
            state = await desk.lines.get(line.id)
            assert state.debt >= 0 and all(h.quantity >= 0 for h in state.holdings())
            assert state.line.credit_limit >= 0
    return actions


def test_ticks_along_random_price_paths_conserve_value() -> None:
    loop = asyncio.new_event_loop()
    url = loop.run_until_complete(create_database())
    ledger = Ledger.connect(settings_for(url))
    seen: dict[str, int] = {}
    try:

        @settings(
            max_examples=12, deadline=None, suppress_health_check=list(HealthCheck),
            database=None,
        )  # fmt: skip
        @given(
            st.lists(st.tuples(st.integers(250, 1_300), st.integers(250, 1_300)), min_size=1,
                     max_size=5),
            st.integers(0, 2**32),
        )  # fmt: skip
        def check(path: list[tuple[int, int]], seed: int) -> None:
            for kind, n in loop.run_until_complete(_path_case(ledger, path, seed)).items():
                seen[kind] = seen.get(kind, 0) + n

        check()
        assert {"PARTIAL", "FULL"} <= set(seen)  # the paths reached the ladder's sales
    finally:
        loop.run_until_complete(ledger.close())
        loop.run_until_complete(drop_database(url))
        loop.close()
