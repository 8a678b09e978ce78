"""Stellar bridge-out throughput through the Soroban RPC stand-in (a test double closing a
ledger every ``--ledger-s``) and PostgreSQL: 1 channel account vs N, measured in the same run.

For each mode, on a fresh asset and SAC: ``--outs`` users each bridge out once (the destination
checked on the network, the debit and its stored mint), then the worker's Stellar bridge-out
pass (``jobs.stellar_out.stellar_out_pass``: channel lease, simulate, sign, store, send, poll,
settle) runs every ``--ledger-s``/4 until every bridge-out is settled. A channel account has one
transaction in flight (the network queues one per source), so with one channel the bridge
mints at most once per ledger. Printed per mode: debits/s, bridge-outs settled/s (from the
first pass to the last settlement); then the ratio N / 1.

    python -m bench.bridge --chain stellar [--outs 24] [--channels 8] [--ledger-s 1.0]
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from stellar_sdk import Keypair

from chain.stellar.client import Destinations, StellarClient
from chain.stellar.outbox import StellarOutbox
from chain.stellar.standin import StandIn, serve_in_thread
from core.bridges.erc20 import BridgeOutOrder
from core.bridges.stellar import StellarBridgeOuts, register_stellar_token
from core.directory import Directory
from core.ledger import Ledger
from core.types import AccountKind, Actor, OperationType, Role
from jobs.stellar_out import stellar_out_pass
from tests.conftest import ADMIN, make_world, settings_for
from tests.stellar.net import StellarNet
from tests.support import create_database, drop_database

USER = Actor("bench-user", Role.USER)
CONCURRENCY = 32


async def one_mode(ledger: Ledger, outs: int, channels: int, ledger_s: float) -> dict[str, Any]:
    world = await make_world(ledger)
    standin = StandIn(f"bench network {uuid.uuid4()} ; a test double")
    served = serve_in_thread(standin, ledger_interval_s=ledger_s)
    issuer, keys = Keypair.random(), [Keypair.random() for _ in range(channels)]
    for kp in (issuer, *keys):
        standin.fund(kp.public_key)
    net = StellarNet(served, StellarClient(served.url, standin.passphrase), issuer, keys,
                     world.asset)  # fmt: skip
    try:
        await net.deploy()
        dest = await net.user()
        await register_stellar_token(
            ledger, asset=world.asset, passphrase=net.passphrase, code=net.code,
            issuer=issuer.public_key, contract=net.contract, actor=ADMIN,
        )  # fmt: skip
        users = []
        for _ in range(outs):
            owner = await ledger.accounts.create_user(email=None, actor=ADMIN)
            wallet = await ledger.accounts.ensure_wallet(owner, world.asset, actor=ADMIN)
            await ledger.transfer(
                source=world.issuance, destination=wallet[AccountKind.AVAILABLE],
                asset=world.asset, amount=1_00, type_=OperationType.MINT,
            )  # fmt: skip
            users.append(owner)
        bridge = StellarBridgeOuts(Directory(ledger), Destinations(net.client))
        gate = asyncio.Semaphore(CONCURRENCY)

        async def out(i: int) -> None:
            async with gate:
                order = BridgeOutOrder(world.asset, "1.00", dest.public_key)
                await bridge.bridge_out(users[i], USER, order, key=f"sbench-{world.asset}-{i}")

        start = time.perf_counter()
        await asyncio.gather(*(out(i) for i in range(outs)))
        debit_s = time.perf_counter() - start
        box = StellarOutbox(ledger.engine, net.client, issuer, keys, timeout_s=300)
        settled, passes = 0, 0
        start = time.perf_counter()
        while settled < outs and passes < 100_000:
            settled += len((await stellar_out_pass(ledger, box)).settled)
            passes += 1
            await asyncio.sleep(ledger_s / 4)
        final_s = time.perf_counter() - start
        minted = standin.balance(net.contract, dest.public_key)
    finally:
        await net.client.close()
        served.stop()
    assert minted == settled * 10**7, "one mint per bridge-out"  # noqa: S101
    return {
        "outs": outs, "channels": channels, "settled": settled, "passes": passes,
        "debits_per_s": round(outs / debit_s, 1), "settled_per_s": round(settled / final_s, 2),
        "ledgers": standin.ledger - standin.first_ledger,
    }  # fmt: skip


async def run(outs: int, channels: int, ledger_s: float) -> dict[str, Any]:
    url = await create_database()
    ledger = Ledger.connect(settings_for(url))
    try:
        one = await one_mode(ledger, outs, 1, ledger_s)
        many = await one_mode(ledger, outs, channels, ledger_s)
    finally:
        await ledger.close()
        await drop_database(url)
    ratio = many["settled_per_s"] / one["settled_per_s"] if one["settled_per_s"] else 0
    return {"one_channel": one, "channels": many, "settled_ratio": round(ratio, 1)}


def report(result: dict[str, Any]) -> None:
    for mode in ("one_channel", "channels"):
        r = result[mode]
        print(
            f"{r['channels']:2} channel(s): {r['outs']} bridge-outs, debits {r['debits_per_s']}/s,"
            f" settled {r['settled_per_s']}/s in {r['passes']} passes over {r['ledgers']} ledgers"
        )
    print(f"{result['channels']['channels']} channels / 1 (settled/s): {result['settled_ratio']}x")
