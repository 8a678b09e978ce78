"""The Stellar bridge's chain flow against a real network (Stellar testnet) -- NOT run in CI
(no network here). What the stand-in cannot prove: the Soroban host's own authorization,
real fees and resource metering, the footprint the host computes, state archival.

    python scripts/stellar_testnet.py [--rpc https://soroban-testnet.stellar.org]

Fresh issuer, channel and holder accounts are funded by friendbot; the issuer's flags and the
SAC are deployed (chain.stellar.deploy); the holder trusts the asset; a mint is built exactly
as the bridge builds it (channel account source, the admin's signed authorization entry,
simulated, signed: chain.stellar.client.StellarClient.build_mint), sent, polled; then the
holder burns part of it and the watcher's getEvents read must show the mint and the burn.
"""

from __future__ import annotations

import argparse
import asyncio

import httpx
from stellar_sdk import Account, Address, Asset, Keypair, Network, TransactionBuilder, scval

from chain.stellar.client import StellarClient
from chain.stellar.deploy import deploy_asset, submit


async def sleep() -> None:
    await asyncio.sleep(3)


async def main(rpc: str, friendbot: str) -> None:
    passphrase = Network.TESTNET_NETWORK_PASSPHRASE
    client = StellarClient(rpc, passphrase)
    await client.check_network()
    issuer, channel, holder = Keypair.random(), Keypair.random(), Keypair.random()
    async with httpx.AsyncClient(timeout=60) as http:
        for kp in (issuer, channel, holder):
            (await http.get(friendbot, params={"addr": kp.public_key})).raise_for_status()
    contract = await deploy_asset(client, issuer, "VOSTEST", sleep)
    print("SAC", contract)
    asset = Asset("VOSTEST", issuer.public_key)
    seq = await client.account_seq(holder.public_key)
    assert seq is not None
    trust = (TransactionBuilder(Account(holder.public_key, seq), passphrase, 100)
             .set_timeout(60).append_change_trust_op(asset).build())  # fmt: skip
    trust.sign(holder)
    await submit(client, trust.to_xdr(), trust.hash(), sleep)
    chan_seq = await client.account_seq(channel.public_key)
    assert chan_seq is not None
    env = await client.build_mint(
        contract=contract, to=holder.public_key, amount=12_3400000, channel=channel,
        seq=chan_seq + 1, admin=issuer, timeout_s=60,
    )  # fmt: skip
    await submit(client, env.xdr, env.hash, sleep)
    print("minted in", (await client.seen(env.hash)).ledger, "tx", env.hash.hex())
    seq = await client.account_seq(holder.public_key)
    assert seq is not None
    burn = (TransactionBuilder(Account(holder.public_key, seq), passphrase, 100).set_timeout(60)
            .append_invoke_contract_function_op(contract, "burn", [
                Address(holder.public_key).to_xdr_sc_val(), scval.to_int128(2_0000000)])
            .build())  # fmt: skip
    prepared = await client.server.prepare_transaction(burn)
    prepared.sign(holder)
    await submit(client, prepared.to_xdr(), prepared.hash(), sleep)
    oldest, _ = await client.retention()
    mint_ledger = (await client.seen(env.hash)).ledger or oldest
    events, _, _ = await client.events([contract], start_ledger=mint_ledger)
    for e in events:
        print(e.kind, e.address, e.amount, e.id)
    kinds = [(e.kind, e.amount) for e in events]
    assert ("mint", 12_3400000) in kinds and ("burn", 2_0000000) in kinds, kinds
    await client.close()
    print("ok: the same flow as against the stand-in")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rpc", default="https://soroban-testnet.stellar.org")
    parser.add_argument("--friendbot", default="https://friendbot.stellar.org")
    ns = parser.parse_args()
    asyncio.run(main(ns.rpc, ns.friendbot))
