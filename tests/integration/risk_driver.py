"""A worker process for the risk loop's crash tests: run passes of the worker's risk job
(``jobs.risk.risk_pass``: a tick, the day's interest, margin calls to the card app), SIGKILLing
itself at the point named by ``RISK_TEST_DIE_AT`` the first time it is reached.

    RISK_TEST_DIE_AT=POINT python -m tests.integration.risk_driver --db URL --card-app URL

The card app's HMAC key comes from ``RISK_TEST_WEBHOOK_SECRET``. Points:

* ``before_post``: an action's ledger operation is about to be written
* ``after_post``:  the operation is written, the action's event row is not
* ``after_event``: an action (operation and event row) is done
* ``webhook``:     the card app acknowledged a margin call, the worker has not recorded it
* ``interest``:    a day's interest is posted, its ``interest_accruals`` row is not

The kill wraps the loop's collaborators (the ledger, the loop, the HTTP client) from
outside; the product code has no test hooks. Exit code 0: every pass ran.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from typing import Any

import httpx

from core.ledger import Ledger
from core.risk.loop import RiskLoop
from core.risk.math import ActionKind
from core.types import OperationType, PostOperation
from jobs.risk import RISK_ACTOR, RiskSettings, risk_pass
from tests.conftest import settings_for

ACTIONS = {OperationType.LIQUIDATION, OperationType.CUSHION_APPLIED}
POINTS = ("before_post", "after_post", "after_event", "webhook", "interest")


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


async def run(db: str, card_app: str, passes: int, die_at: str | None) -> int:
    ledger = Ledger.connect(settings_for(db))
    loop = RiskLoop(ledger, RISK_ACTOR)
    post, post_within, act = ledger.post, ledger.post_within, loop.act
    client_post = httpx.AsyncClient.post

    async def post_then(command: PostOperation) -> Any:
        if command.type in ACTIONS and die_at == "before_post":
            die()
        result = await post(command)
        if command.type in ACTIONS and die_at == "after_post":
            die()
        if command.type is OperationType.INTEREST and die_at == "interest":
            die()
        return result

    async def post_within_then(conn: Any, command: PostOperation) -> Any:
        if command.type in ACTIONS and die_at == "before_post":
            die()
        result = await post_within(conn, command)
        if command.type in ACTIONS and die_at == "after_post":
            die()
        if command.type is OperationType.INTEREST and die_at == "interest":
            die()
        return result

    async def act_then(*args: Any, **kwargs: Any) -> ActionKind:
        kind = await act(*args, **kwargs)
        if kind is not ActionKind.NONE and die_at == "after_event":
            die()
        return kind

    async def client_post_then(self: httpx.AsyncClient, *args: Any, **kwargs: Any) -> Any:
        answer = await client_post(self, *args, **kwargs)
        if die_at == "webhook":
            die()
        return answer

    ledger.post = post_then  # type: ignore[method-assign]
    ledger.post_within = post_within_then  # type: ignore[method-assign]
    loop.act = act_then  # type: ignore[method-assign]
    httpx.AsyncClient.post = client_post_then  # type: ignore[method-assign]
    settings = RiskSettings(
        interval_s=1.0, card_webhook_url=card_app,
        card_webhook_secret=os.environ["RISK_TEST_WEBHOOK_SECRET"],
    )  # fmt: skip
    try:
        for _ in range(passes):
            await risk_pass(ledger, loop, settings, None)
        return 0
    finally:
        await ledger.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--card-app", required=True)
    parser.add_argument("--passes", type=int, default=3)
    ns = parser.parse_args()
    die_at = os.environ.get("RISK_TEST_DIE_AT") or None
    if die_at is not None and die_at not in POINTS:
        parser.error(f"RISK_TEST_DIE_AT must be one of {', '.join(POINTS)}")
    return asyncio.run(run(ns.db, ns.card_app, ns.passes, die_at))


if __name__ == "__main__":
    raise SystemExit(main())
