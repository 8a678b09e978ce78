"""A process depositing or withdrawing collateral on a credit line, SIGKILLed the moment the
ledger has answered the posting (before anything else the deposit or withdrawal does):

    python -m tests.integration.withdraw_driver --db URL --line N --amount UNITS [--deposit]
        [--asset CODE]

The kill wraps the ledger's posting methods from outside; the product code has no test
hooks. Exit code 0: the withdrawal finished (the kill point was never reached).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from typing import Any

from core.ledger import Ledger
from core.risk.lines import CreditLines
from core.types import Actor, OperationType, Role
from tests.conftest import settings_for

ADMIN = Actor("withdraw-driver", Role.ADMIN)


MOVES = (OperationType.COLLATERAL_DEPOSIT, OperationType.COLLATERAL_WITHDRAW)


async def run(db: str, line_id: int, amount: int, deposit: bool, asset: str | None) -> int:
    ledger = Ledger.connect(settings_for(db))
    methods = {name: getattr(ledger, name) for name in ("post", "post_within", "submit_within")}

    def killing(name: str) -> Any:
        async def wrapped(*args: Any, **kwargs: Any) -> Any:
            result = await methods[name](*args, **kwargs)
            if args[-1].type in MOVES:
                os.kill(os.getpid(), signal.SIGKILL)
            return result

        return wrapped

    for name in methods:
        setattr(ledger, name, killing(name))
    try:
        lines = CreditLines(ledger)
        move = lines.deposit if deposit else lines.withdraw
        await move(line_id, amount, ADMIN, "withdraw-driver", asset=asset)
        return 0
    finally:
        await ledger.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--line", type=int, required=True)
    parser.add_argument("--amount", type=int, required=True)
    parser.add_argument("--deposit", action="store_true")
    parser.add_argument("--asset", help="the collateral asset (the line's own by default)")
    ns = parser.parse_args()
    return asyncio.run(run(ns.db, ns.line, ns.amount, ns.deposit, ns.asset))


if __name__ == "__main__":
    raise SystemExit(main())
