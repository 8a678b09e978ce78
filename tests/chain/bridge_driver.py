"""A worker process for the bridge-out crash tests: store a bridge-out (if ``--user`` is given),
then run bridge-out passes until it is settled, optionally SIGKILLing itself right after one
injected point.

    python -m tests.chain.bridge_driver --db URL --rpc URL --asset A --key K [--user UUID]
        [--die-after POINT]

The minter's key comes from ``BRIDGE_TEST_KEY``. Points: ``debited`` (the debit and its mint
row are committed, nothing signed), ``signed``, ``sent`` (the node has the bytes, BROADCAST not
stored), ``confirmed``, ``finalized`` (the outbox is done, the bridge-out not settled). The kill
wraps the collaborators from outside; the product code has no test hooks. Exit 0: settled.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import uuid
from typing import Any

from eth_account import Account

from chain.evm.bridge_token import BridgeTokenClient
from chain.evm.client import EvmClient, connect
from chain.evm.outbox import Outbox
from core import chain_txs
from core.bridges.erc20 import BridgeOutOrder, BridgeOuts, BridgeOutState, get_bridge_out
from core.directory import Directory
from core.ledger import Ledger
from core.types import Actor, Role
from jobs.bridge_out import bridge_out_pass
from merkle.tree import keccak256
from tests.conftest import settings_for

TO = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
AMOUNT = "12.34"
USER_ACTOR = Actor("bridge-test-user", Role.USER)


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


async def run(ns: argparse.Namespace) -> int:
    ledger = Ledger.connect(settings_for(ns.db))
    signer = Account.from_key(os.environ["BRIDGE_TEST_KEY"])
    client = EvmClient(connect(ns.rpc), signer)
    outbox = Outbox(ledger.engine, client, confirmations=1, bump_after_s=None)
    transition, sign_and_store, broadcast = (
        chain_txs.transition, chain_txs.sign_and_store, client.broadcast,
    )  # fmt: skip

    async def transition_then(*args: Any, **kwargs: Any) -> bool:
        moved = await transition(*args, **kwargs)
        if moved and str(args[3]).lower() == ns.die_after:
            die()
        return moved

    async def sign_then(*args: Any, **kwargs: Any) -> int | None:
        nonce = await sign_and_store(*args, **kwargs)
        if nonce is not None and ns.die_after == "signed":
            die()
        return nonce

    async def broadcast_then(raw: bytes) -> None:
        await broadcast(raw)
        if ns.die_after == "sent":
            die()

    async def minted(token: str, bridge_id: bytes) -> bool:
        return await BridgeTokenClient(client.w3, token, signer).is_minted(bridge_id)

    chain_txs.transition = transition_then  # type: ignore[assignment]
    chain_txs.sign_and_store = sign_then  # type: ignore[assignment]
    client.broadcast = broadcast_then  # type: ignore[method-assign]
    try:
        if ns.user:
            order = BridgeOutOrder(ns.asset, AMOUNT, TO)
            await BridgeOuts(Directory(ledger)).bridge_out(
                uuid.UUID(ns.user), USER_ACTOR, order, key=ns.key
            )
            if ns.die_after == "debited":
                die()
        ref = keccak256(b"valueos:bridge-out:" + ns.key.encode()).hex()
        for _ in range(50):
            await bridge_out_pass(ledger, outbox, minted)
            if (await get_bridge_out(ledger, ref, user=None)).state is not BridgeOutState.IN_FLIGHT:
                return 0
            await client.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
        return 3
    finally:
        await client.w3.provider.disconnect()
        await ledger.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    for name in ("--db", "--rpc", "--asset", "--key"):
        parser.add_argument(name, required=True)
    parser.add_argument("--user", default=None)
    parser.add_argument("--die-after", default=None)
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
