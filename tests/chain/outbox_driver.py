"""A worker process for the outbox crash tests: run passes of the outbox until the row of
``--ref`` is FINALIZED, optionally SIGKILLing itself right after one injected point.

    python -m tests.chain.outbox_driver --db URL --rpc URL --ref R [--die-after POINT]

The signer's key comes from ``OUTBOX_TEST_KEY`` (never the command line). Points:

* ``enqueued``:  the intent is stored (BUILT), nothing signed
* ``signed``:    the raw bytes are stored (SIGNED), not sent
* ``sent``:      the node has the bytes, BROADCAST is not stored
* ``broadcast``: BROADCAST is stored
* ``confirmed``: CONFIRMED is stored

The kill wraps the outbox's own collaborators (the store and the client) from outside; the
product code has no test hooks. Exit code 0: FINALIZED; 3: a pass limit was reached.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from typing import Any

from eth_account import Account

from chain.evm.client import EvmClient, connect
from chain.evm.outbox import Outbox
from core import chain_txs
from core.chain_txs import TxStatus
from core.epochs import raw_connection
from core.ledger import Ledger
from tests.conftest import settings_for

PURPOSE = "test"
RECIPIENT = "0x000000000000000000000000000000000000dEaD"
VALUE_WEI = 12345


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


async def run(db: str, rpc: str, ref: str, die_after: str | None) -> int:
    ledger = Ledger.connect(settings_for(db))
    client = EvmClient(connect(rpc), Account.from_key(os.environ["OUTBOX_TEST_KEY"]))
    outbox = Outbox(ledger.engine, client, confirmations=1, bump_after_s=None)

    transition, sign_and_store, broadcast = (
        chain_txs.transition,
        chain_txs.sign_and_store,
        client.broadcast,
    )

    async def transition_then(*args: Any, **kwargs: Any) -> bool:
        moved = await transition(*args, **kwargs)
        if moved and str(args[3]).lower() == die_after:
            die()
        return moved

    async def sign_then(*args: Any, **kwargs: Any) -> int | None:
        nonce = await sign_and_store(*args, **kwargs)
        if nonce is not None and die_after == "signed":
            die()
        return nonce

    async def broadcast_then(raw: bytes) -> None:
        await broadcast(raw)
        if die_after == "sent":
            die()

    chain_txs.transition = transition_then  # type: ignore[assignment]
    chain_txs.sign_and_store = sign_then  # type: ignore[assignment]
    client.broadcast = broadcast_then  # type: ignore[method-assign]
    try:
        async with raw_connection(ledger.engine) as conn:
            await chain_txs.enqueue(
                conn, purpose=PURPOSE, ref=ref, chain_id=await client.chain_id(),
                to_address=RECIPIENT, data=b"", value_wei=VALUE_WEI,
            )  # fmt: skip
        if die_after == "enqueued":
            die()
        for _ in range(50):
            await outbox.run_pass(PURPOSE)
            tx = await chain_txs.get_tx_by_ref(ledger.engine, PURPOSE, ref)
            if tx is not None and tx.status is TxStatus.FINALIZED:
                return 0
            await client.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
        return 3
    finally:
        await client.w3.provider.disconnect()
        await ledger.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--rpc", required=True)
    parser.add_argument("--ref", required=True)
    parser.add_argument("--die-after", default=None)
    ns = parser.parse_args()
    return asyncio.run(run(ns.db, ns.rpc, ns.ref, ns.die_after))


if __name__ == "__main__":
    raise SystemExit(main())
