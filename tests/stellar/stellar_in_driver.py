"""A worker process for the Stellar bridge-in crash tests: run watcher passes (ranges of one
ledger) until the cursor is past the RPC's latest ledger and nothing is pending, optionally
SIGKILLing itself right after one injected point.

    python -m tests.stellar.stellar_in_driver --db URL --rpc URL --passphrase P
        [--die-after POINT]

Points: ``recorded`` (a range's burns are committed, nothing credited), ``credited`` (one
BRIDGE_IN or BRIDGE_IN_SUSPENSE is posted, its redemption row not updated), ``settled`` (the
range's burns are settled, the cursor not moved). The kill wraps the collaborators from
outside; the product code has no test hooks. Exit 0: done.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from typing import Any

from sqlalchemy import text

from chain.stellar.client import StellarClient
from core.bridges.stellar import stellar_chain_id
from core.ledger import Ledger
from core.types import OperationType, PostOperation
from jobs import stellar_in
from tests.conftest import settings_for


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


async def run(ns: argparse.Namespace) -> int:
    ledger = Ledger.connect(settings_for(ns.db))
    client = StellarClient(ns.rpc, ns.passphrase)
    record, credit, post = stellar_in.record_burns, stellar_in.credit_final, ledger.post

    async def record_then(*args: Any, **kwargs: Any) -> int:
        new = await record(*args, **kwargs)
        if new and ns.die_after == "recorded":
            die()
        return new

    async def post_then(command: PostOperation) -> Any:
        done = await post(command)
        kinds = (OperationType.BRIDGE_IN, OperationType.BRIDGE_IN_SUSPENSE)
        if command.type in kinds and ns.die_after == "credited":
            die()
        return done

    async def credit_then(*args: Any, **kwargs: Any) -> Any:
        settled = await credit(*args, **kwargs)
        if settled and ns.die_after == "settled":
            die()
        return settled

    stellar_in.record_burns = record_then  # type: ignore[assignment]
    stellar_in.credit_final = credit_then  # type: ignore[assignment]
    ledger.post = post_then  # type: ignore[method-assign]
    chain_id = stellar_chain_id(ns.passphrase)
    try:
        for _ in range(200):
            done = await stellar_in.stellar_in_pass(ledger, client, chain_id=chain_id,
                                                    page_ledgers=1)  # fmt: skip
            async with ledger.engine.connect() as conn:
                pending = (await conn.execute(text(
                    "SELECT count(*) FROM bridge_redemptions WHERE chain_id = :c "
                    "AND outcome IS NULL"), {"c": chain_id})).scalar_one()  # fmt: skip
            if done.ranges == 0 and pending == 0:
                return 0
        return 3
    finally:
        await client.close()
        await ledger.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    for name in ("--db", "--rpc", "--passphrase"):
        parser.add_argument(name, required=True)
    parser.add_argument("--die-after", default=None)
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
