"""A worker process for the Stellar bridge crash tests: store a bridge-out (if ``--user`` is
given), then run Stellar bridge-out passes until it is settled, closing a ledger of the
stand-in (a test double, ``standin_closeLedger``) after each pass; optionally SIGKILLing itself
right after one injected point.

    python -m tests.stellar.stellar_driver --db URL --rpc URL --passphrase P --asset A
        --key K --to G... [--user UUID] [--die-after POINT]

Keys come from the environment: ``STELLAR_TEST_ADMIN`` (the issuer's secret seed) and
``STELLAR_TEST_CHANNELS`` (comma-separated secret seeds). Points: ``debited`` (the debit and its
mint row committed), ``signed`` (the envelope stored, nothing sent), ``sent`` (the RPC has the
envelope, BROADCAST not stored), ``broadcast`` (BROADCAST stored), ``finalized`` (the outbox is
done, the bridge-out not settled). The kill wraps the collaborators from outside; the product
code has no test hooks. Exit 0: the bridge-out is settled.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import uuid
from typing import Any

import httpx
from stellar_sdk import Keypair

from chain.stellar.client import StellarClient
from chain.stellar.outbox import StellarOutbox
from core import chain_txs
from core.bridges.erc20 import BridgeOutOrder, BridgeOutState, bridge_id_of, get_bridge_out
from core.bridges.stellar import StellarBridgeOuts
from core.directory import Directory
from core.ledger import Ledger
from core.types import Actor, Role
from jobs.stellar_out import stellar_out_pass
from tests.conftest import settings_for

USER_ACTOR = Actor("stellar-crash-user", Role.USER)
AMOUNT = "12.34"


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


async def close_ledger(rpc: str) -> None:
    async with httpx.AsyncClient() as http:
        await http.post(rpc, json={"jsonrpc": "2.0", "id": 1, "method": "standin_closeLedger"})


async def run(ns: argparse.Namespace) -> int:
    from chain.stellar.client import Destinations

    ledger = Ledger.connect(settings_for(ns.db))
    client = StellarClient(ns.rpc, ns.passphrase)
    admin = Keypair.from_secret(os.environ["STELLAR_TEST_ADMIN"])
    channels = [Keypair.from_secret(s) for s in os.environ["STELLAR_TEST_CHANNELS"].split(",")]
    box = StellarOutbox(ledger.engine, client, admin, channels, timeout_s=120)
    transition, lease, send = chain_txs.transition, chain_txs.lease_and_sign, client.send

    async def transition_then(*args: Any, **kwargs: Any) -> bool:
        moved = await transition(*args, **kwargs)
        if moved and args[2] != args[3] and str(args[3]).lower() == ns.die_after:
            die()
        return moved

    async def lease_then(*args: Any, **kwargs: Any) -> Any:
        leased = await lease(*args, **kwargs)
        if leased is not None and ns.die_after == "signed":
            die()
        return leased

    async def send_then(envelope: str) -> Any:
        sent = await send(envelope)
        if ns.die_after == "sent":
            die()
        return sent

    chain_txs.transition = transition_then  # type: ignore[assignment]
    chain_txs.lease_and_sign = lease_then  # type: ignore[assignment]
    client.send = send_then  # type: ignore[method-assign]
    try:
        if ns.user:
            bridge = StellarBridgeOuts(Directory(ledger), Destinations(client))
            order = BridgeOutOrder(ns.asset, AMOUNT, ns.to)
            await bridge.bridge_out(uuid.UUID(ns.user), USER_ACTOR, order, key=ns.key)
            if ns.die_after == "debited":
                die()
        ref = bridge_id_of(ns.key).hex()
        for _ in range(40):
            await stellar_out_pass(ledger, box)
            if (await get_bridge_out(ledger, ref, user=None)).state is not BridgeOutState.IN_FLIGHT:
                return 0
            await close_ledger(ns.rpc)
        return 3
    finally:
        await client.close()
        await ledger.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    for name in ("--db", "--rpc", "--passphrase", "--asset", "--key", "--to"):
        parser.add_argument(name, required=True)
    parser.add_argument("--user", default=None)
    parser.add_argument("--die-after", default=None)
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
