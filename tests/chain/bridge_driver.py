"""A worker process for the bridge-out crash tests: store a bridge-out (if ``--user`` is given),
then run bridge-out passes until it is settled, optionally SIGKILLing itself right after one
injected point.

    python -m tests.chain.bridge_driver --db URL --rpc URL --asset A --key K [--user UUID]
        [--die-after POINT]

With ``--count N`` it stores N bridge-outs (keys ``K/0`` ... ``K/N-1``) of N users (``--user``
names the first; the others are made here), so their mints go in one ``mintBatch``.

The minter's key comes from ``BRIDGE_TEST_KEY``. Points: ``debited`` (the debit and its mint
row are committed, nothing signed), ``batched`` (the carrier row and its members committed),
``signed``, ``sent`` (the node has the bytes, BROADCAST not stored), ``confirmed``,
``finalized`` (the outbox is done, the bridge-out not settled), ``carried`` (the carrier's
members moved with it, not settled). The kill wraps the collaborators from outside; the
product code has no test hooks. Exit 0: every bridge-out settled.
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
from core.types import AccountKind, Actor, OperationType, Role, SystemAccount
from jobs.bridge_out import bridge_out_pass
from merkle.tree import keccak256
from tests.conftest import ADMIN, settings_for

TO = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
AMOUNT = "12.34"
USER_ACTOR = Actor("bridge-test-user", Role.USER)


async def funded(ledger: Ledger, asset: str) -> uuid.UUID:
    """Another user with 100.00 of ``asset`` in AVAILABLE."""
    owner = await ledger.accounts.create_user(email=None, actor=ADMIN)
    wallet = await ledger.accounts.ensure_wallet(owner, asset, actor=ADMIN)
    issuance = await ledger.accounts.system_account(asset, SystemAccount.ISSUANCE, actor=ADMIN)
    await ledger.transfer(
        source=issuance, destination=wallet[AccountKind.AVAILABLE], asset=asset,
        amount=100_00, type_=OperationType.MINT,
    )  # fmt: skip
    return owner


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
    batch, end_carried = chain_txs.batch, chain_txs.end_carried

    async def batch_then(*args: Any, **kwargs: Any) -> int | None:
        carrier = await batch(*args, **kwargs)
        if carrier is not None and ns.die_after == "batched":
            die()
        return carrier

    async def end_carried_then(*args: Any, **kwargs: Any) -> int:
        moved = await end_carried(*args, **kwargs)
        if moved and ns.die_after == "carried":
            die()
        return moved

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
    chain_txs.batch = batch_then  # type: ignore[assignment]
    chain_txs.end_carried = end_carried_then  # type: ignore[assignment]
    chain_txs.sign_and_store = sign_then  # type: ignore[assignment]
    client.broadcast = broadcast_then  # type: ignore[method-assign]
    try:
        keys = [ns.key] if ns.count == 1 else [f"{ns.key}/{i}" for i in range(ns.count)]
        if ns.user:
            bridge = BridgeOuts(Directory(ledger))
            for i, key in enumerate(keys):
                user = uuid.UUID(ns.user) if i == 0 else await funded(ledger, ns.asset)
                order = BridgeOutOrder(ns.asset, AMOUNT, TO)
                await bridge.bridge_out(user, USER_ACTOR, order, key=key)
            if ns.die_after == "debited":
                die()
        refs = [keccak256(b"valueos:bridge-out:" + key.encode()).hex() for key in keys]
        for _ in range(50):
            await bridge_out_pass(ledger, outbox, minted)
            views = [await get_bridge_out(ledger, ref, user=None) for ref in refs]
            if all(v.state is not BridgeOutState.IN_FLIGHT for v in views):
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
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--die-after", default=None)
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
