"""A worker process for the bridge-in crash tests: run bridge-in passes (confirmations 1, pages
of one block) until nothing is pending and the cursor is past the head, optionally SIGKILLing
itself right after one injected point.

    python -m tests.chain.bridge_in_driver --db URL --rpc URL [--die-after POINT]

Points: ``recorded`` (a page with events is committed, nothing credited), ``credited`` (one
BRIDGE_IN is posted, its redemption row not updated), ``settled`` (the page's redemptions are
settled, the cursor not moved). The kill wraps the collaborators from outside; the product code
has no test hooks. Exit 0: done.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from collections.abc import Sequence
from typing import Any

from eth_account import Account
from sqlalchemy import text

from chain.evm.bridge_token import BridgeTokenClient, Redemption
from chain.evm.client import EvmClient, connect
from core.ledger import Ledger
from core.types import OperationType, PostOperation
from jobs import bridge_in
from tests.conftest import settings_for


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


async def run(ns: argparse.Namespace) -> int:
    ledger = Ledger.connect(settings_for(ns.db))
    reader_key = Account.create()
    chain = EvmClient(connect(ns.rpc), reader_key)
    record, credit_final, post = (
        bridge_in.record_redemptions, bridge_in.credit_final, ledger.post,
    )  # fmt: skip

    async def record_then(
        led: Ledger, chain_id: int, token: str, page: Sequence[Redemption]
    ) -> int:
        new = await record(led, chain_id, token, page)
        if new and ns.die_after == "recorded":
            die()
        return new

    async def post_then(command: PostOperation) -> Any:
        done = await post(command)
        if command.type is OperationType.BRIDGE_IN and ns.die_after == "credited":
            die()
        return done

    async def credit_then(*args: Any, **kwargs: Any) -> Any:
        settled = await credit_final(*args, **kwargs)
        if settled and ns.die_after == "settled":
            die()
        return settled

    bridge_in.record_redemptions = record_then  # type: ignore[assignment]
    bridge_in.credit_final = credit_then  # type: ignore[assignment]
    ledger.post = post_then  # type: ignore[method-assign]
    try:
        for _ in range(50):
            await bridge_in.bridge_in_pass(
                ledger, chain, lambda a: BridgeTokenClient(chain.w3, a, reader_key),
                confirmations=1, page_blocks=1,
            )  # fmt: skip
            async with ledger.engine.connect() as conn:
                pending = await conn.scalar(
                    text("SELECT count(*) FROM bridge_redemptions WHERE outcome IS NULL")
                )
                cursor = await conn.scalar(text("SELECT min(next_block) FROM bridge_cursors"))
            if not pending and cursor is not None and cursor > await chain.head():
                return 0
        return 3
    finally:
        await chain.w3.provider.disconnect()
        await ledger.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    for name in ("--db", "--rpc"):
        parser.add_argument(name, required=True)
    parser.add_argument("--die-after", default=None)
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
