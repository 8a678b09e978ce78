"""The risk loop survives SIGKILL: a real worker process (``tests.integration.risk_driver``)
runs the risk job against a fresh database and kills itself at an injected point; a second
run finishes. Whatever the point: one ledger operation per decision, one event row per
action (and per operation), one interest charge per line and day with its accrual row, the
margin call delivered to the card app under one event id, value conserved and the reconciler
clean."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from core.ledger import Ledger
from core.risk.lines import refresh_limits
from core.risk.loop import sign
from tests.conftest import settings_for
from tests.integration.risk_driver import POINTS
from tests.integration.risk_support import ADMIN, BTC, COLL, Desk, add_asset, make_desk, usd
from tests.support import create_database, drop_database

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SECRET = "card-app-test-secret"  # noqa: S105 - a test double's key


class CardApp:
    """The card app's webhook receiver (a test double): checks the signature, records the
    notice, answers 200."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        app = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                stamp = self.headers["X-Webhook-Timestamp"]
                good = self.headers["X-Webhook-Signature"] == sign(SECRET, stamp, body)
                if good:
                    app.received.append(json.loads(body))
                self.send_response(200 if good else 401)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/margin-calls"


@pytest.fixture
def card_app() -> Iterator[CardApp]:
    app = CardApp()
    thread = threading.Thread(target=app.server.serve_forever, daemon=True)
    thread.start()
    yield app
    app.server.shutdown()
    app.server.server_close()
    thread.join()


@pytest.fixture
async def fresh() -> AsyncIterator[tuple[str, Ledger]]:
    """A database of its own: the worker's passes see only this test's lines."""
    url = await create_database()
    ledger = Ledger.connect(settings_for(url))
    yield url, ledger
    await ledger.close()
    await drop_database(url)


def drive(db: str, card_app: str, die_at: str | None) -> int:
    """One worker process; its exit code (-9 when it killed itself)."""
    command = [sys.executable, "-m", "tests.integration.risk_driver", "--db", db]
    command += ["--card-app", card_app]
    env = {k: v for k, v in os.environ.items() if k != "RISK_TEST_DIE_AT"}
    env |= {"RISK_TEST_WEBHOOK_SECRET": SECRET, "PYTHONPATH": str(ROOT)}
    if die_at is not None:
        env["RISK_TEST_DIE_AT"] = die_at
    done = subprocess.run(command, env=env, cwd=ROOT, timeout=120, check=False)  # noqa: S603
    return done.returncode


async def actions(desk: Desk) -> tuple[list[Any], list[Any]]:
    """(the loop's operations, the event rows), oldest first."""
    async with desk.ledger.engine.connect() as conn:
        ops = (
            await conn.execute(
                text(
                    "SELECT id, type, (metadata->>'credit_line')::bigint AS line_id, "
                    "metadata->>'action' AS action FROM operations "
                    "WHERE type IN ('LIQUIDATION', 'CUSHION_APPLIED') ORDER BY id"
                )
            )
        ).all()
        events = (
            await conn.execute(
                text(
                    "SELECT id, line_id, kind, operation_id, delivered_at FROM risk_events "
                    "ORDER BY id"
                )
            )
        ).all()
    return list(ops), list(events)


async def interest(desk: Desk) -> tuple[list[tuple[int, str, int]], list[tuple[int, str, int]]]:
    """(line, day, operation) of the INTEREST operations, and of the accrual rows."""
    async with desk.ledger.engine.connect() as conn:
        charged = (
            await conn.execute(
                text(
                    "SELECT (metadata->>'credit_line')::bigint, metadata->>'day', id "
                    "FROM operations WHERE type = 'INTEREST'"
                )
            )
        ).all()
        accrued = (
            await conn.execute(
                text(
                    "SELECT line_id, day::text, operation_id FROM interest_accruals "
                    "WHERE operation_id IS NOT NULL"
                )
            )
        ).all()
    return [tuple(r) for r in charged], [tuple(r) for r in accrued]


@pytest.mark.parametrize("point", POINTS)
async def test_a_risk_worker_killed_at_any_point_acts_exactly_once(
    point: str, fresh: tuple[str, Ledger], card_app: CardApp
) -> None:
    url, ledger = fresh
    desk = await make_desk(ledger)
    # 1 wETH each at $2,000; at $1,300 the first is past partial liquidation (LTV 76.9%),
    # the second over margin call only (69.2%): one sale, one margin call
    sold = await desk.line(COLL, spend=usd(1_000))
    called = await desk.line(COLL, spend=usd(900))
    await desk.price(1_300)

    killed = await asyncio.to_thread(drive, url, card_app.url, point)
    assert killed == -signal.SIGKILL, f"the worker was to die at {point}"
    ops, events = await actions(desk)
    if point in {"before_post", "after_post"}:
        assert ops == [] and events == [], "an uncommitted action leaves nothing"
    if point == "interest":
        assert await interest(desk) == ([], []), "an uncommitted charge leaves nothing"
    if point not in {"before_post", "after_post"}:
        assert [(o.line_id, o.action) for o in ops] == [(sold.id, "PARTIAL")]
        assert (events[0].line_id, events[0].kind, events[0].operation_id) == (
            sold.id, "PARTIAL", ops[0].id,
        )  # fmt: skip

    assert await asyncio.to_thread(drive, url, card_app.url, None) == 0
    ops, events = await actions(desk)
    assert [(o.line_id, o.action) for o in ops] == [(sold.id, "PARTIAL")], "one sale"
    assert sorted((e.line_id, e.kind) for e in events) == sorted(
        [(sold.id, "PARTIAL"), (called.id, "NOTIFY")]
    ), "one event row per action"
    by_kind = {e.kind: e for e in events}
    assert by_kind["PARTIAL"].operation_id == ops[0].id
    assert by_kind["NOTIFY"].operation_id is None and by_kind["NOTIFY"].delivered_at is not None
    # the card app heard the margin call, under one event id (twice if the worker died
    # between its answer and the record of it)
    ids = {n["event_id"] for n in card_app.received}
    assert ids == {f"risk-event-{by_kind['NOTIFY'].id}"}
    assert len(card_app.received) == (2 if point == "webhook" else 1)
    assert {n["line_id"] for n in card_app.received} == {called.id}
    # the day's interest: one charge per line with debt, each with its accrual row
    charged, accrued = await interest(desk)
    assert {line for line, _, _ in charged} == {sold.id, called.id}
    assert len(set(charged)) == len(charged) and sorted(charged) == sorted(accrued)
    after = await desk.lines.get(sold.id)
    assert after.debt < usd(1_000) and after.collateral < COLL
    assert set((await desk.totals()).values()) == {0}
    assert await desk.ledger.reconcile() == []


@pytest.mark.parametrize(
    ("deposit", "further"),
    [(False, False), (True, False), (True, True)],
    ids=["withdrawal", "deposit", "deposit-of-a-further-asset"],
)
async def test_a_collateral_move_and_its_new_limit_commit_together(
    fresh: tuple[str, Ledger], deposit: bool, further: bool
) -> None:
    """A process killed right after the ledger answered a collateral withdrawal (deposit):
    the move and the lower (higher) limit it leaves are both there, or neither is; never the
    collateral gone with the old limit still open for card spends. A deposit of an asset the
    line does not hold yet adds it in the same transaction: the holding, the deposit and the
    limit, or none of them."""
    url, ledger = fresh
    desk = await make_desk(ledger)
    line = await desk.line(2 * COLL, spend=usd(500))
    asset, amount = (await add_asset(desk), BTC // 10) if further else (desk.coll, COLL)
    if deposit:  # the owner has one more lot to deposit
        await desk.fund(line.owner_id, asset, amount)

    async def held() -> int:
        state = await desk.lines.get(line.id)
        found = state.held(asset)
        return -1 if found is None else found.quantity

    before, before_held = await desk.lines.get(line.id), await held()
    command = [sys.executable, "-m", "tests.integration.withdraw_driver", "--db", url]
    command += ["--line", str(line.id), "--amount", str(amount), "--asset", asset]
    command += ["--deposit"] if deposit else []
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    run = subprocess.run
    done = await asyncio.to_thread(run, command, env=env, cwd=ROOT, timeout=120, check=False)
    assert done.returncode == -signal.SIGKILL
    after = await desk.lines.get(line.id)
    if await held() == before_held:  # nothing committed: the retry does it once
        assert after.line.credit_limit == before.line.credit_limit
        assert after.line.multi_collateral == before.line.multi_collateral
        move = desk.lines.deposit if deposit else desk.lines.withdraw
        await move(line.id, amount, ADMIN, "withdraw-driver", asset=asset)
        after = await desk.lines.get(line.id)
    sign = 1 if deposit else -1
    assert await held() == max(before_held, 0) + sign * amount
    assert (after.line.credit_limit - before.line.credit_limit) * sign > 0
    async with ledger.engine.begin() as conn:  # what a refresh sets now: already there
        await refresh_limits(conn, line_ids=[line.id])
    assert (await desk.lines.get(line.id)).line.credit_limit == after.line.credit_limit
    assert set((await desk.totals()).values()) == {0}
    assert await ledger.reconcile() == []
