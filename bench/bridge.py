"""ERC-20 bridge-out throughput on a local anvil and PostgreSQL: batched vs one transaction
per mint, measured in the same run.

For each mode, on a fresh asset and token: ``--outs`` users each bridge out once (the debit
and its stored mint, 64 at a time, through ``core.bridges.erc20.BridgeOuts``), then the
worker's bridge-out pass (``jobs.bridge_out.bridge_out_pass``: batching, the outbox, the
settlement) runs until every bridge-out is settled. Printed per mode: debits/s, bridge-outs
finalized/s (from the first pass to the last settlement), mint transactions, gas per bridged
mint; then the ratio batched / one-per-tx.

    python -m bench.bridge [--outs 500] [--batch-max 100]
    python -m bench.bridge --chain stellar [--outs 24] [--channels 8] [--ledger-s 1]

anvil mines each transaction as it arrives (automine); finality is one confirmation.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount

from chain.evm.anvil import start_anvil
from chain.evm.bridge_token import BridgeTokenClient, deploy_bridge_token
from chain.evm.client import EvmClient, connect
from chain.evm.outbox import Outbox
from core.bridges.erc20 import BridgeOutOrder, BridgeOuts
from core.bridges.tokens import register_token
from core.directory import Directory
from core.epochs import raw_connection
from core.ledger import Ledger
from core.types import AccountKind, Actor, OperationType, Role
from jobs.bridge_out import bridge_out_pass
from tests.conftest import ADMIN, make_world, settings_for
from tests.support import create_database, drop_database

USER = Actor("bench-user", Role.USER)
TO = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
CONCURRENCY = 64


async def one_mode(
    ledger: Ledger, rpc: str, admin: LocalAccount, minter: LocalAccount, outs: int, batch_max: int
) -> dict[str, Any]:
    w3 = connect(rpc)
    token = await deploy_bridge_token(
        w3, admin, name="Bench", symbol="BNCH", decimals=2, admin=admin.address,
        minter=minter.address, pauser=admin.address, per_transfer_cap=10**30,
        window_cap=10**30, window_seconds=3600,
    )  # fmt: skip
    world = await make_world(ledger)
    await register_token(
        ledger, asset=world.asset, chain_id=int(await w3.eth.chain_id), address=token, decimals=2,
        actor=ADMIN,
    )  # fmt: skip
    users: list[uuid.UUID] = []
    for _ in range(outs):
        owner = await ledger.accounts.create_user(email=None, actor=ADMIN)
        wallet = await ledger.accounts.ensure_wallet(owner, world.asset, actor=ADMIN)
        await ledger.transfer(
            source=world.issuance, destination=wallet[AccountKind.AVAILABLE], asset=world.asset,
            amount=1_00, type_=OperationType.MINT,
        )  # fmt: skip
        users.append(owner)

    bridge, gate = BridgeOuts(Directory(ledger)), asyncio.Semaphore(CONCURRENCY)

    async def out(i: int) -> None:
        async with gate:
            order = BridgeOutOrder(world.asset, "1.00", TO)
            await bridge.bridge_out(users[i], USER, order, key=f"bench-{world.asset}-{i}")

    start = time.perf_counter()
    await asyncio.gather(*(out(i) for i in range(outs)))
    debit_s = time.perf_counter() - start

    client = EvmClient(w3, minter)
    outbox = Outbox(ledger.engine, client, confirmations=1, bump_after_s=None)

    async def minted(address: str, bridge_id: bytes) -> bool:
        return await BridgeTokenClient(w3, address, minter).is_minted(bridge_id)

    settled, passes = 0, 0
    start = time.perf_counter()
    while settled < outs and passes < 10_000:
        settled += len((await bridge_out_pass(ledger, outbox, minted, batch_max=batch_max)).settled)
        passes += 1
    final_s = time.perf_counter() - start

    async with raw_connection(ledger.engine) as conn:
        hashes = await conn.fetch(
            "SELECT DISTINCT tx_hash FROM chain_txs WHERE lower(to_address) = lower($1) "
            "AND status = 'FINALIZED'",
            token,
        )
    gas = 0
    for row in hashes:
        receipt = await w3.eth.get_transaction_receipt("0x" + bytes(row[0]).hex())  # type: ignore[arg-type]
        gas += int(receipt["gasUsed"])
    await w3.provider.disconnect()
    return {
        "outs": outs, "batch_max": batch_max, "settled": settled, "passes": passes,
        "debits_per_s": round(outs / debit_s, 1), "finalized_per_s": round(settled / final_s, 1),
        "mint_transactions": len(hashes), "gas_per_mint": gas // max(settled, 1),
    }  # fmt: skip


async def run(outs: int, batch_max: int) -> dict[str, Any]:
    node = start_anvil()
    url = await create_database()
    ledger = Ledger.connect(settings_for(url))
    try:
        keys = node.config()["private_keys"]
        admin: LocalAccount = Account.from_key(keys[0])
        minter: LocalAccount = Account.from_key(keys[1])
        batched = await one_mode(ledger, node.rpc_url, admin, minter, outs, batch_max)
        single = await one_mode(ledger, node.rpc_url, admin, minter, outs, 1)
    finally:
        await ledger.close()
        await drop_database(url)
        node.stop()
    ratio = (
        batched["finalized_per_s"] / single["finalized_per_s"] if single["finalized_per_s"] else 0
    )
    return {"batched": batched, "one_per_tx": single, "finalized_ratio": round(ratio, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chain", choices=["erc20", "stellar"], default="erc20")
    parser.add_argument("--outs", type=int, default=None, help="default: 500 (erc20), 24")
    parser.add_argument("--batch-max", type=int, default=100)
    parser.add_argument("--channels", type=int, default=8, help="stellar: channel accounts")
    parser.add_argument("--ledger-s", type=float, default=1.0, help="stellar: ledger close")
    ns = parser.parse_args()
    if ns.chain == "stellar":
        from bench import stellar_bridge  # noqa: PLC0415 - only this chain needs it

        found = asyncio.run(stellar_bridge.run(ns.outs or 24, ns.channels, ns.ledger_s))
        stellar_bridge.report(found)
        print(json.dumps(found))
        return
    ns.outs = ns.outs or 500
    result = asyncio.run(run(ns.outs, ns.batch_max))
    for mode in ("batched", "one_per_tx"):
        r = result[mode]
        print(
            f"{mode:11}: {r['outs']} bridge-outs, debits {r['debits_per_s']}/s, finalized "
            f"{r['finalized_per_s']}/s in {r['passes']} passes, {r['mint_transactions']} mint "
            f"transactions, {r['gas_per_mint']} gas per bridged mint"
        )
    print(f"batched / one-per-tx (finalized/s): {result['finalized_ratio']}x")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
