"""ERC-20 bridge-in end to end on a real anvil with the real BridgeToken and a real PostgreSQL:
a holder's ``redeem(amount, ledgerRef)`` credited to the ledger once, only at finality; pages
re-read without a double credit; reorgs below the finality depth; suspense for refs that name
no valid account, resolved once by staff; and a real worker process SIGKILLed mid-pass."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from sqlalchemy import text
from web3 import Web3
from web3.contract import Contract

from chain.evm.anchor import AnchorClient
from chain.evm.bridge_token import BridgeTokenClient
from chain.evm.client import EvmClient, connect
from core.bridges.redemptions import (
    ChainToken,
    Outcome,
    credit_final,
    get_redemption,
    record_redemptions,
    resolve_suspense,
    suspended_redemptions,
)
from core.bridges.tokens import register_token
from core.errors import Forbidden, SuspenseAlreadyResolved
from core.ledger import Ledger
from core.types import AccountKind, AccountStatus, Actor, OperationType, Role, SystemAccount
from jobs.anchor import AnchorJob
from jobs.bridge_in import BRIDGE_IN_ACTOR, BridgeInPass, bridge_in_pass
from jobs.wiring import bridge_in_job
from merkle.tree import keccak256
from tests.chain.conftest import LEDGER_ID, await_automine, rpc
from tests.conftest import ADMIN, World, make_world

pytestmark = pytest.mark.chain

ROOT = Path(__file__).resolve().parents[2]
CHAIN_ID = 31337
UNIT = 10**4  # token units per minor unit: 6 decimals, scale 2
MINTED = 500_00  # 500.00 minted to the holder (and held by BRIDGED_OUT)
STAFF = Actor("ops-1", Role.OPS)


@pytest.fixture
def holder(dev_keys: list[str]) -> LocalAccount:
    account: LocalAccount = Account.from_key(dev_keys[2])
    return account


@pytest.fixture
async def world(
    ledger: Ledger, token: str, w3: Web3, minter: LocalAccount, holder: LocalAccount
) -> World:
    """An asset bridged to ``token``; ``MINTED`` minted on-chain to the holder and moved
    AVAILABLE -> IN_FLIGHT -> BRIDGED_OUT on the ledger, as a final bridge-out leaves it."""
    found = await make_world(ledger)
    await register_token(
        ledger, asset=found.asset, chain_id=CHAIN_ID, address=token, decimals=6, actor=ADMIN
    )
    user = await found.funded(MINTED)
    flight = await ledger.accounts.system_account(found.asset, SystemAccount.IN_FLIGHT, actor=ADMIN)
    out = await ledger.accounts.system_account(found.asset, SystemAccount.BRIDGED_OUT, actor=ADMIN)
    for source, target, type_ in ((user, flight, OperationType.BRIDGE_OUT),
                                  (flight, out, OperationType.BRIDGE_OUT_FINAL)):  # fmt: skip
        await ledger.transfer(
            source=source, destination=target, asset=found.asset, amount=MINTED, type_=type_
        )
    send(w3, minter.address, token, "mint(address,uint256,bytes32)",
         ["address", "uint256", "bytes32"], [holder.address, MINTED * UNIT, bytes(32)])  # fmt: skip
    return found


def send(w3: Web3, sender: str, to: str, signature: str, types: list[str], args: list[Any]) -> str:
    """Send a call from an unlocked dev account; its hash (mined when automine is on)."""
    from eth_abi.abi import encode

    data = keccak256(signature.encode())[:4] + encode(types, args)
    return (
        "0x"
        + bytes(
            w3.eth.send_transaction({"from": sender, "to": to, "data": "0x" + data.hex()})
        ).hex()
    )


def redeem(w3: Web3, holder: LocalAccount, token: str, units: int, ref: int | bytes) -> str:
    ledger_ref = ref if isinstance(ref, bytes) else ref.to_bytes(32, "big")
    return send(w3, holder.address, token, "redeem(uint256,bytes32)", ["uint256", "bytes32"],
                [units, ledger_ref])  # fmt: skip


def total_supply(w3: Web3, token: str) -> int:
    selector = keccak256(b"totalSupply()")[:4]
    return int.from_bytes(w3.eth.call({"to": token, "data": "0x" + selector.hex()}), "big")


async def posted(world: World, *accounts: int) -> list[int]:
    got = await world.ledger.queries.balances(list(accounts))
    return [got[a].posted for a in accounts]


async def system(world: World, code: SystemAccount) -> int:
    return await world.ledger.accounts.system_account(world.asset, code, actor=ADMIN)


async def operations(world: World, type_: OperationType) -> int:
    async with world.ledger.engine.connect() as conn:
        found = await conn.scalar(
            text("SELECT count(*) FROM operations WHERE type = :t AND status = 'COMPLETED'"),
            {"t": type_.value},
        )
    return int(found)


async def conserved(world: World, w3: Web3, token: str) -> None:
    """On-chain supply (minted - redeemed) == what BRIDGED_OUT still holds, in token units."""
    (bridged,) = await posted(world, await system(world, SystemAccount.BRIDGED_OUT))
    assert total_supply(w3, token) == bridged * UNIT
    assert await world.total() == 0


@pytest.fixture
async def chain(anvil: str) -> AsyncIterator[EvmClient]:
    client = EvmClient(await_automine(connect(anvil)), Account.create())
    try:
        yield client
    finally:
        await client.w3.provider.disconnect()


async def run_pass(
    ledger: Ledger, chain: EvmClient, *, confirmations: int, page_blocks: int = 1000
) -> BridgeInPass:
    def reader(address: str) -> BridgeTokenClient:
        return BridgeTokenClient(chain.w3, address, Account.create())

    return await bridge_in_pass(
        ledger, chain, reader, confirmations=confirmations, page_blocks=page_blocks
    )


@pytest.fixture
def manual_mining(w3: Web3) -> Iterator[None]:
    rpc(w3, "evm_setAutomine", False)
    try:
        yield
    finally:
        rpc(w3, "evm_setAutomine", True)


# -- finality ------------------------------------------------------------------------------


async def test_a_redemption_is_credited_once_only_at_finality(
    world: World, w3: Web3, holder: LocalAccount, token: str, anvil: str, ledger_anchor: Contract
) -> None:
    """Through the worker's wiring (the anchoring chain's connection and confirmations)."""
    user = await world.funded(0)
    redeem(w3, holder, token, 12_34 * UNIT, user)
    client = AnchorClient(await_automine(connect(anvil)), ledger_anchor.address, Account.create())
    anchor = AnchorJob(world.ledger.engine, client, LEDGER_ID, confirmations=3)
    body = bridge_in_job(world.ledger, anchor, page_blocks=1000, start_block=0)
    try:
        for _ in range(2):  # the redemption's block has 1, then 2 of the 3 confirmations
            result = await body()
            assert isinstance(result, BridgeInPass)
            assert result.settled == {} and result.recorded == 0
            assert await posted(world, user) == [0], "credited before finality"
            rpc(w3, "evm_mine")
        result = await body()
        assert isinstance(result, BridgeInPass)
        assert list(result.settled.values()) == [Outcome.CREDITED]
        assert await posted(world, user) == [12_34]
        for _ in range(2):
            again = await body()
            assert isinstance(again, BridgeInPass) and again.settled == {}
            rpc(w3, "evm_mine")
    finally:
        await client.w3.provider.disconnect()
    assert await posted(world, user) == [12_34]
    assert await operations(world, OperationType.BRIDGE_IN) == 1
    assert total_supply(w3, token) == (MINTED - 12_34) * UNIT
    await conserved(world, w3, token)


async def test_pages_of_one_block_and_rereads_credit_each_redemption_once(
    world: World, w3: Web3, holder: LocalAccount, token: str, chain: EvmClient, manual_mining: None
) -> None:
    users = [await world.funded(0) for _ in range(3)]
    for i, user in enumerate(users):  # three redemptions in one block
        redeem(w3, holder, token, (i + 1) * UNIT, user)
    rpc(w3, "evm_mine")
    redeem(w3, holder, token, 7 * UNIT, users[0])  # and one in a later block
    rpc(w3, "evm_mine")
    rpc(w3, "evm_mine")

    result = await run_pass(world.ledger, chain, confirmations=1, page_blocks=1)
    assert result.recorded == 4 and len(result.settled) == 4
    assert await posted(world, *users) == [1 + 7, 2, 3]

    # every page read again (cursor back to 0, overlapping ranges): nothing more
    async with world.ledger.engine.begin() as conn:
        await conn.execute(text("UPDATE bridge_cursors SET next_block = 0"))
    again = await run_pass(world.ledger, chain, confirmations=1, page_blocks=2)
    assert again.recorded == 0 and again.settled == {}
    client = BridgeTokenClient(chain.w3, token, Account.create())
    page = await client.redemptions(0, w3.eth.block_number)
    assert len(page) == 4
    assert await record_redemptions(world.ledger, CHAIN_ID, token, page + page) == 0
    assert (await run_pass(world.ledger, chain, confirmations=1)).settled == {}
    assert await posted(world, *users) == [1 + 7, 2, 3]
    assert await operations(world, OperationType.BRIDGE_IN) == 4
    await conserved(world, w3, token)


# -- reorgs --------------------------------------------------------------------------------


async def test_a_redemption_reorged_out_before_finality_is_never_credited(
    world: World, w3: Web3, holder: LocalAccount, token: str, chain: EvmClient
) -> None:
    user = await world.funded(0)
    redeem(w3, holder, token, 5 * UNIT, user)
    rpc(w3, "evm_mine")  # 2 confirmations of 3
    assert (await run_pass(world.ledger, chain, confirmations=3)).settled == {}
    rpc(w3, "anvil_reorg", 2, [])  # both blocks replaced; the redemption is gone
    for _ in range(4):
        rpc(w3, "evm_mine")
    result = await run_pass(world.ledger, chain, confirmations=3)
    assert result.settled == {} and result.recorded == 0
    assert await posted(world, user) == [0]
    assert total_supply(w3, token) == MINTED * UNIT
    await conserved(world, w3, token)


async def test_a_redemption_reincluded_in_another_block_is_credited_once(
    world: World, w3: Web3, holder: LocalAccount, token: str, chain: EvmClient
) -> None:
    user = await world.funded(0)
    data = keccak256(b"redeem(uint256,bytes32)")[:4] + (5 * UNIT).to_bytes(32, "big")
    data += user.to_bytes(32, "big")
    tx = {"from": holder.address, "to": token, "data": "0x" + data.hex(), "gas": 200_000}
    w3.eth.send_transaction(tx)  # type: ignore[arg-type]
    first = w3.eth.block_number
    rpc(w3, "evm_mine")  # 2 confirmations of 3
    assert (await run_pass(world.ledger, chain, confirmations=3)).settled == {}
    # both blocks replaced; the same call included again, one block later than before
    rpc(w3, "anvil_reorg", 2, [[tx, 1]])
    assert w3.eth.get_block(first)["transactions"] == []
    for _ in range(3):
        rpc(w3, "evm_mine")
    result = await run_pass(world.ledger, chain, confirmations=3)
    assert list(result.settled.values()) == [Outcome.CREDITED]
    (key,) = result.settled
    assert (await get_redemption(world.ledger, key)).block_number == first + 1
    assert (await run_pass(world.ledger, chain, confirmations=3)).settled == {}
    assert await posted(world, user) == [5]
    await conserved(world, w3, token)


async def test_a_recorded_redemption_whose_block_is_replaced_is_dropped_not_credited(
    world: World, w3: Web3, holder: LocalAccount, token: str, chain: EvmClient
) -> None:
    """The re-check before crediting: an event recorded from a block that later left the
    canonical chain (a reorg deeper than the finality rule assumed) is dropped."""
    user = await world.funded(0)
    redeem(w3, holder, token, 5 * UNIT, user)
    block = w3.eth.block_number
    client = BridgeTokenClient(chain.w3, token, Account.create())
    assert await record_redemptions(
        world.ledger, CHAIN_ID, token, await client.redemptions(block, block)
    ) == 1  # fmt: skip
    rpc(w3, "anvil_reorg", 1, [])
    rpc(w3, "evm_mine")
    got = await credit_final(
        world.ledger, CHAIN_ID, ChainToken(world.asset, token, 6), up_to_block=block,
        canonical=chain.block_hash, actor=BRIDGE_IN_ACTOR,
    )  # fmt: skip
    assert list(got.values()) == [Outcome.DROPPED]
    assert await posted(world, user) == [0]
    assert await operations(world, OperationType.BRIDGE_IN) == 0
    await conserved(world, w3, token)


# -- suspense ------------------------------------------------------------------------------


async def test_refs_that_name_no_valid_account_go_to_suspense_and_resolve_once(
    world: World, ledger: Ledger, w3: Web3, holder: LocalAccount, token: str, chain: EvmClient
) -> None:
    other = await make_world(ledger)
    wrong_asset = await other.funded(0)
    frozen = await world.funded(0)
    await ledger.accounts.set_status(frozen, AccountStatus.FROZEN, actor=ADMIN, reason="kyc")
    blocked = (await world.user_wallet())[AccountKind.BLOCKED]
    cases = {  # ledgerRef -> (token units, minor units parked)
        10**12: (1 * UNIT, 1),  # no such account
        b"\xff" * 32: (2 * UNIT, 2),  # not an account id at all
        wrong_asset: (3 * UNIT, 3),
        frozen: (4 * UNIT, 4),
        blocked: (5 * UNIT, 5),
    }
    good = await world.funded(0)
    inexact = (6 * UNIT + 1, 6)  # 1 token unit does not map onto a minor unit
    for ref, (units, _) in [*cases.items(), (good, inexact)]:
        redeem(w3, holder, token, units, ref)
    redeem(w3, holder, token, UNIT - 1, good)  # dust: not even one minor unit

    result = await run_pass(world.ledger, chain, confirmations=1)
    assert list(result.settled.values()) == [Outcome.SUSPENDED] * 7
    suspense = await system(world, SystemAccount.SUSPENSE)
    parked = sum(minor for _, minor in cases.values()) + inexact[1]
    assert await posted(world, suspense, good, frozen) == [parked, 0, 0]
    listed = await suspended_redemptions(ledger)
    assert len(listed) == 7 and all(v.reason for v in listed)
    reasons = " | ".join(str(v.reason) for v in listed)
    for part in ("names no ledger account", "not an account id", f"not {world.asset}",
                 "is FROZEN", "not AVAILABLE", "1 token units left over", "less than one minor"):  # fmt: skip
        assert part in reasons
    async with ledger.engine.connect() as conn:
        audited = await conn.scalar(
            text(
                "SELECT count(*) FROM audit_log WHERE action = 'bridge_in.suspended' "
                "AND reason IS NOT NULL"
            )
        )
    assert audited == 7

    target = next(v for v in listed if int.from_bytes(v.ledger_ref, "big") == frozen)
    with pytest.raises(Forbidden):
        await resolve_suspense(ledger, target.key, good, Actor("u", Role.USER), "mine")
    done = await resolve_suspense(ledger, target.key, good, STAFF, "user asked, KYC cleared")
    assert done.resolved_operation is not None
    with pytest.raises(SuspenseAlreadyResolved):
        await resolve_suspense(ledger, target.key, good, STAFF, "again")
    assert await posted(world, suspense, good) == [parked - 4, 4]
    assert len(await suspended_redemptions(ledger)) == 6
    assert await operations(world, OperationType.SUSPENSE_RESOLVED) == 1
    assert (await run_pass(world.ledger, chain, confirmations=1)).settled == {}
    # on-chain supply == BRIDGED_OUT, up to the dust and remainder that map onto no minor unit
    (bridged,) = await posted(world, await system(world, SystemAccount.BRIDGED_OUT))
    assert total_supply(w3, token) == bridged * UNIT - (UNIT - 1) - 1
    assert await world.total() == 0


# -- crash ---------------------------------------------------------------------------------


def drive(db: str, anvil: str, die: str | None) -> int:
    command = [sys.executable, "-m", "tests.chain.bridge_in_driver", "--db", db, "--rpc", anvil]
    command += ["--die-after", die] if die else []
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(command, env=env, cwd=ROOT, timeout=120, check=False).returncode  # noqa: S603


@pytest.mark.slow
@pytest.mark.parametrize("point", ["recorded", "credited", "settled"])
async def test_a_worker_killed_mid_pass_credits_each_burn_once(
    point: str, db_url: str, world: World, w3: Web3, holder: LocalAccount, token: str
) -> None:
    users = [await world.funded(0) for _ in range(3)]
    for i, user in enumerate(users):
        redeem(w3, holder, token, (i + 1) * UNIT, user)
    rpc(w3, "evm_mine")
    killed = await asyncio.to_thread(drive, db_url, w3.provider.endpoint_uri, point)  # type: ignore[attr-defined]
    assert killed == -signal.SIGKILL, f"the worker was to die after {point}"
    assert await asyncio.to_thread(drive, db_url, w3.provider.endpoint_uri, None) == 0  # type: ignore[attr-defined]

    assert await posted(world, *users) == [1, 2, 3]
    assert await operations(world, OperationType.BRIDGE_IN) == 3
    async with world.ledger.engine.connect() as conn:
        outcomes = (await conn.execute(text("SELECT outcome FROM bridge_redemptions"))).all()
    assert [r.outcome for r in outcomes] == ["CREDITED"] * 3
    await conserved(world, w3, token)
