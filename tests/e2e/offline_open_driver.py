"""A process opening one offline allowance, SIGKILLing itself at an injected point, for the
sweep's crash tests.

    python -m tests.e2e.offline_open_driver --db URL --user UUID --account ID --device ID
        --amount 10.00 --expires-at ISO [--key K] --die {before-hold,after-hold}

* ``before-hold``: the OPENING row is committed, the hold not submitted;
* ``after-hold``: the ledger committed the hold, the row is still OPENING.

The kill wraps the ledger's ``submit`` from outside; the product code has no test hooks.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import uuid
from datetime import datetime

from core.directory import Directory
from core.ledger import Ledger
from core.offline import Allowances, Issuer
from core.types import Actor, Command, CreateHold, Role
from tests.conftest import settings_for


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


async def run(ns: argparse.Namespace) -> int:
    ledger = Ledger.connect(settings_for(ns.db))
    submit = ledger.submit

    async def submit_then(command: Command) -> object:
        if isinstance(command, CreateHold) and ns.die == "before-hold":
            die()
        result = await submit(command)
        if isinstance(command, CreateHold) and ns.die == "after-hold":
            die()
        return result

    ledger.submit = submit_then  # type: ignore[assignment,method-assign]
    allowances = Allowances(Directory(ledger), Issuer(bytes(32)))
    user = uuid.UUID(ns.user)
    await allowances.open(
        user, Actor(f"u:{user}", Role.USER), account_id=ns.account, device_id=ns.device,
        amount=ns.amount, expires_at=datetime.fromisoformat(ns.expires_at),
        idempotency_key=ns.key,
    )  # fmt: skip
    return 3  # not killed: the injected point was never reached


def main() -> int:
    parser = argparse.ArgumentParser()
    for name in ("--db", "--user", "--amount", "--expires-at"):
        parser.add_argument(name, required=True)
    parser.add_argument("--account", type=int, required=True)
    parser.add_argument("--device", type=int, required=True)
    parser.add_argument("--key", default=None)
    parser.add_argument("--die", choices=["before-hold", "after-hold"], required=True)
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
