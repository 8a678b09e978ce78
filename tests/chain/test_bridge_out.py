"""ERC-20 bridge-out end to end on a real anvil with the real BridgeToken: the debit and its
mint stored together, the outbox sending it, the settlement; a reverted mint refunded; and a
real worker process SIGKILLed after each step of a bridge-out -> exactly one mint, one
settlement, value conserved."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from prometheus_client import REGISTRY
from web3 import Web3
from web3.contract import Contract

from api.controllers.bridges import out_read
from api.services import Services
from api.settings import ApiSettings
from chain.evm.anchor import AnchorClient
from chain.evm.bridge_token import deploy_bridge_token
from chain.evm.client import connect
from core.bridges.erc20 import (
    BridgeOutOrder,
    BridgeOuts,
    BridgeOutState,
    get_bridge_out,
    mint_calldata,
)
from core.bridges.status import bridge_status
from core.bridges.tokens import get_token, register_token
from core.chain_txs import TxStatus
from core.directory import Directory
from core.epochs import raw_connection
from core.errors import BridgePaused
from core.ledger import Ledger
from core.types import AccountKind, OperationType, SystemAccount
from jobs.anchor import AnchorJob
from jobs.wiring import bridge_in_job, bridge_out_job, bridge_supply_job
from merkle.tree import keccak256
from tests.chain.bridge_driver import AMOUNT, TO, USER_ACTOR
from tests.chain.conftest import LEDGER_ID, await_automine, rpc
from tests.conftest import ADMIN, World, make_world

pytestmark = pytest.mark.chain

ROOT = Path(__file__).resolve().parents[2]
FUNDED = 100_00  # 100.00 at scale 2
MOVED = 12_34
TOKEN_UNITS = 12_340_000  # 6 decimals


@pytest.fixture
async def world(ledger: Ledger, token: str) -> World:
    found = await make_world(ledger)
    await register_token(
        ledger, asset=found.asset, chain_id=31337, address=token, decimals=6, actor=ADMIN
    )
    return found


async def funded_user(world: World) -> tuple[uuid.UUID, int]:
    owner = await world.ledger.accounts.create_user(email=None, actor=ADMIN)
    wallet = await world.ledger.accounts.ensure_wallet(owner, world.asset, actor=ADMIN)
    await world.ledger.transfer(
        source=world.issuance, destination=wallet[AccountKind.AVAILABLE], asset=world.asset,
        amount=FUNDED, type_=OperationType.MINT,
    )  # fmt: skip
    return owner, wallet[AccountKind.AVAILABLE]


async def ledger_side(world: World, account: int) -> tuple[int, int, int]:
    led = world.ledger
    flight = await led.accounts.system_account(world.asset, SystemAccount.IN_FLIGHT, actor=ADMIN)
    out = await led.accounts.system_account(world.asset, SystemAccount.BRIDGED_OUT, actor=ADMIN)
    got = await led.queries.balances([account, flight, out])
    return got[account].posted, got[flight].posted, got[out].posted


def minted_events(w3: Web3, token: str, bridge_id: bytes) -> int:
    topic = "0x" + keccak256(b"Minted(bytes32,address,uint256)").hex()
    logs = w3.eth.get_logs(
        {"address": token, "fromBlock": 0, "topics": [topic, "0x" + bridge_id.hex()]}
    )
    return len(logs)


def token_paused(w3: Web3, token: str) -> bool:
    selector = keccak256(b"paused()")[:4]
    return int.from_bytes(w3.eth.call({"to": token, "data": "0x" + selector.hex()}), "big") == 1


def total_supply(w3: Web3, token: str) -> int:
    selector = keccak256(b"totalSupply()")[:4]
    return int.from_bytes(w3.eth.call({"to": token, "data": "0x" + selector.hex()}), "big")


async def run_passes(
    ledger: Ledger, anvil: str, minter: LocalAccount, ref: str, w3: Web3, anchor_address: str
) -> BridgeOutState:
    """The worker's bridge-out job as ``valueos worker`` wires it (on the anchoring chain's
    connection and settings), run until the bridge-out is settled."""
    client = AnchorClient(await_automine(connect(anvil)), anchor_address, minter)
    body = bridge_out_job(
        ledger, AnchorJob(ledger.engine, client, LEDGER_ID, confirmations=1), minter
    )
    try:
        for _ in range(10):
            await body()
            state = (await get_bridge_out(ledger, ref, user=None)).state
            if state is not BridgeOutState.IN_FLIGHT:
                return state
            rpc(w3, "evm_mine")
        return state
    finally:
        await client.w3.provider.disconnect()


async def test_a_bridge_out_mints_once_and_settles(
    world: World, anvil: str, w3: Web3, minter: LocalAccount, token: str, ledger_anchor: Contract
) -> None:
    user, account = await funded_user(world)
    bridge = BridgeOuts(Directory(world.ledger))
    view = await bridge.bridge_out(
        user, USER_ACTOR, BridgeOutOrder(world.asset, AMOUNT, TO), key="k1"
    )
    assert await ledger_side(world, account) == (FUNDED - MOVED, MOVED, 0)
    assert (
        await run_passes(world.ledger, anvil, minter, view.id, w3, ledger_anchor.address)
        is BridgeOutState.MINTED
    )
    assert await ledger_side(world, account) == (FUNDED - MOVED, 0, MOVED)
    balance_of = keccak256(b"balanceOf(address)")[:4] + bytes(12) + bytes.fromhex(TO[2:])
    assert (
        int.from_bytes(w3.eth.call({"to": token, "data": "0x" + balance_of.hex()}), "big")
        == TOKEN_UNITS
    )
    assert total_supply(w3, token) == TOKEN_UNITS  # == BRIDGED_OUT, in token units
    assert minted_events(w3, token, bytes.fromhex(view.id)) == 1

    # the API with ETH_RPC_URL shows the mint's confirmations
    services = Services(world.ledger, ApiSettings("k" * 64, None, eth_rpc_url=anvil))
    try:
        final = await get_bridge_out(world.ledger, view.id, user=None)
        rpc(w3, "anvil_mine", 2)
        read = await out_read(services, final, await services.chain_head())
        assert final.block_number is not None
        assert read.confirmations == w3.eth.block_number - final.block_number + 1 >= 3
    finally:
        await services.close()


async def test_a_refused_mint_is_refunded(
    world: World,
    anvil: str,
    w3: Web3,
    minter: LocalAccount,
    admin: LocalAccount,
    token: str,
    ledger_anchor: Contract,
) -> None:
    user, account = await funded_user(world)
    bridge = BridgeOuts(Directory(world.ledger))
    view = await bridge.bridge_out(
        user, USER_ACTOR, BridgeOutOrder(world.asset, AMOUNT, TO), key="k2"
    )
    pause = keccak256(b"pause()")[:4]
    tx = w3.eth.send_transaction({"from": admin.address, "to": token, "data": "0x" + pause.hex()})
    assert w3.eth.wait_for_transaction_receipt(tx)["status"] == 1
    assert (
        await run_passes(world.ledger, anvil, minter, view.id, w3, ledger_anchor.address)
        is BridgeOutState.REFUNDED
    )
    assert await ledger_side(world, account) == (FUNDED, 0, 0)
    assert total_supply(w3, token) == 0


def drive(
    db: str,
    anvil: str,
    key: str,
    asset: str,
    ref_key: str,
    user: str | None,
    die: str | None,
    count: int = 1,
) -> int:
    command = [sys.executable, "-m", "tests.chain.bridge_driver", "--db", db, "--rpc", anvil,
               "--asset", asset, "--key", ref_key, "--count", str(count)]  # fmt: skip
    command += (["--user", user] if user else []) + (["--die-after", die] if die else [])
    env = {**os.environ, "BRIDGE_TEST_KEY": key, "PYTHONPATH": str(ROOT)}
    return subprocess.run(command, env=env, cwd=ROOT, timeout=120, check=False).returncode  # noqa: S603


async def kill_then_finish(
    db_url: str, anvil: str, minter: LocalAccount, user: uuid.UUID, point: str, args: dict[str, Any]
) -> None:
    """A worker that stores the bridge-out(s) dies after ``point``; a fresh one finishes."""
    key = "0x" + bytes(minter.key).hex()
    killed = await asyncio.to_thread(drive, db_url, anvil, key, user=str(user), die=point, **args)
    assert killed == -signal.SIGKILL, f"the worker was to die after {point}"
    assert await asyncio.to_thread(drive, db_url, anvil, key, user=None, die=None, **args) == 0


@pytest.mark.slow
@pytest.mark.parametrize("point", ["debited", "signed", "sent", "confirmed", "finalized"])
async def test_a_worker_killed_after_any_step_mints_once_and_settles_once(
    point: str, db_url: str, world: World, anvil: str, w3: Web3, minter: LocalAccount, token: str
) -> None:
    user, account = await funded_user(world)
    args: dict[str, Any] = {"asset": world.asset, "ref_key": f"crash-{point}"}
    await kill_then_finish(db_url, anvil, minter, user, point, args)

    ref = keccak256(f"valueos:bridge-out:crash-{point}".encode()).hex()
    view = await get_bridge_out(world.ledger, ref, user=None)
    assert view.state is BridgeOutState.MINTED and view.settle_operation is not None
    assert minted_events(w3, token, bytes.fromhex(ref)) == 1, "exactly one mint"
    assert total_supply(w3, token) == TOKEN_UNITS
    assert await ledger_side(world, account) == (FUNDED - MOVED, 0, MOVED)  # conserved


async def test_the_supply_invariant_holds_and_an_unbacked_mint_pauses_the_asset(
    world: World,
    anvil: str,
    w3: Web3,
    minter: LocalAccount,
    admin: LocalAccount,
    token: str,
    ledger_anchor: Contract,
) -> None:
    user, _ = await funded_user(world)
    view = await BridgeOuts(Directory(world.ledger)).bridge_out(
        user, USER_ACTOR, BridgeOutOrder(world.asset, AMOUNT, TO), key="supply"
    )
    assert await run_passes(world.ledger, anvil, minter, view.id, w3, ledger_anchor.address) is (
        BridgeOutState.MINTED
    )
    # the worker's anchoring signer is the token's PAUSER (as valueos deploy-token makes it)
    client = AnchorClient(await_automine(connect(anvil)), ledger_anchor.address, admin)
    anchor = AnchorJob(world.ledger.engine, client, LEDGER_ID, confirmations=1)
    read_redemptions = bridge_in_job(world.ledger, anchor, page_blocks=1000, start_block=0)
    check_supply = bridge_supply_job(world.ledger, anchor, start_block=0)
    broken = ("valueos_bridge_supply_broken_total", {"asset": world.asset})
    try:
        await read_redemptions()  # the cursor reaches the final block: the check can look
        [held] = await check_supply()  # type: ignore[misc]
        assert held.holds and held.on_chain == held.bounds.low == held.bounds.high == TOKEN_UNITS
        assert not token_paused(w3, token)

        # the minter's key mints behind the ledger's back
        data = mint_calldata(TO, 1, b"\x99" * 32)
        sent = w3.eth.send_transaction(
            {"from": minter.address, "to": token, "data": "0x" + data.hex()}
        )
        assert w3.eth.wait_for_transaction_receipt(sent)["status"] == 1
        rpc(w3, "evm_mine")
        before = REGISTRY.get_sample_value(*broken) or 0.0
        await read_redemptions()
        [failed] = await check_supply()  # type: ignore[misc]
        assert not failed.holds and failed.on_chain == TOKEN_UNITS + 1
        assert REGISTRY.get_sample_value(*broken) == before + 1
        paused = await get_token(world.ledger, world.asset)
        assert paused.paused and "supply invariant broken" in (paused.pause_reason or "")
        assert token_paused(w3, token), "the token itself is paused, by its PAUSER"
        await check_supply()  # broken again: the pause is requested once
        async with raw_connection(world.ledger.engine) as conn:
            pauses = await conn.fetchval(
                "SELECT count(*) FROM chain_txs WHERE purpose = 'token_pause'"
            )
        assert pauses == 1
        [status] = [s for s in await bridge_status(world.ledger) if s.asset == world.asset]
        assert status.paused and status.outs == {"MINTED": 1} and status.ins == {}
        with pytest.raises(BridgePaused):
            await BridgeOuts(Directory(world.ledger)).bridge_out(
                user, USER_ACTOR, BridgeOutOrder(world.asset, "1.00", TO), key="after"
            )
    finally:
        await client.w3.provider.disconnect()


async def bridge_outs(world: World, n: int, prefix: str) -> list[str]:
    refs = []
    for i in range(n):
        user, _ = await funded_user(world)
        view = await BridgeOuts(Directory(world.ledger)).bridge_out(
            user, USER_ACTOR, BridgeOutOrder(world.asset, AMOUNT, TO), key=f"{prefix}-{i}"
        )
        refs.append(view.id)
    return refs


def minted_in(w3: Web3, token: str) -> dict[str, str]:
    """bridge id -> the transaction that minted it."""
    topic = "0x" + keccak256(b"Minted(bytes32,address,uint256)").hex()
    logs = w3.eth.get_logs({"address": token, "fromBlock": 0, "topics": [topic]})
    found: dict[str, str] = {}
    for log in logs:
        bridge_id = bytes(log["topics"][1]).hex()
        assert bridge_id not in found, "minted twice"
        found[bridge_id] = bytes(log["transactionHash"]).hex()
    return found


async def test_waiting_mints_go_in_one_batch_transaction(
    world: World, anvil: str, w3: Web3, minter: LocalAccount, token: str, ledger_anchor: Contract
) -> None:
    refs = await bridge_outs(world, 5, "batched")
    for ref in refs:
        state = await run_passes(world.ledger, anvil, minter, ref, w3, ledger_anchor.address)
        assert state is BridgeOutState.MINTED
    minted = minted_in(w3, token)
    assert set(minted) == set(refs) and len(set(minted.values())) == 1  # one mintBatch
    assert total_supply(w3, token) == 5 * TOKEN_UNITS


async def test_a_failed_batch_sends_its_mints_alone_and_each_mints_once(
    world: World, anvil: str, w3: Web3, minter: LocalAccount, token: str, ledger_anchor: Contract
) -> None:
    refs = await bridge_outs(world, 4, "clash")
    # one id already minted (the same minter, earlier): mintBatch reverts BridgeIdUsed
    data = mint_calldata(TO, TOKEN_UNITS, bytes.fromhex(refs[2]))
    sent = w3.eth.send_transaction({"from": minter.address, "to": token, "data": "0x" + data.hex()})
    assert w3.eth.wait_for_transaction_receipt(sent)["status"] == 1
    for ref in refs:
        state = await run_passes(world.ledger, anvil, minter, ref, w3, ledger_anchor.address)
        assert state is BridgeOutState.MINTED  # the clashing one counts as minted
    minted = minted_in(w3, token)
    assert set(minted) == set(refs)  # each exactly once (minted_in refuses a second)
    assert len(set(minted.values())) == 4  # alone: the batch never went through
    async with raw_connection(world.ledger.engine) as conn:
        carriers = await conn.fetch(
            "SELECT status FROM chain_txs WHERE purpose = 'erc20_mint_batch'"
        )
    assert [r["status"] for r in carriers] == ["REJECTED"]


@pytest.mark.slow
@pytest.mark.parametrize("point", ["batched", "signed", "sent", "finalized", "carried"])
async def test_a_worker_killed_mid_batch_mints_each_once_and_settles_each_once(
    point: str, db_url: str, world: World, anvil: str, w3: Web3, minter: LocalAccount, token: str
) -> None:
    user, account = await funded_user(world)
    args: dict[str, Any] = {"asset": world.asset, "ref_key": f"batch-{point}", "count": 3}
    await kill_then_finish(db_url, anvil, minter, user, point, args)

    refs = [keccak256(f"valueos:bridge-out:batch-{point}/{i}".encode()).hex() for i in range(3)]
    for ref in refs:
        view = await get_bridge_out(world.ledger, ref, user=None)
        assert view.state is BridgeOutState.MINTED and view.settle_operation is not None
    minted = minted_in(w3, token)  # refuses an id minted twice
    assert set(minted) == set(refs) and len(set(minted.values())) == 1  # one mintBatch
    assert total_supply(w3, token) == 3 * TOKEN_UNITS
    assert (await ledger_side(world, account))[1:] == (0, 3 * MOVED)  # in flight, bridged out


async def test_a_mint_above_the_token_cap_is_refunded(
    ledger: Ledger, anvil: str, w3: Web3, minter: LocalAccount, admin: LocalAccount,
    ledger_anchor: Contract,
) -> None:  # fmt: skip
    """The token's per-transfer cap refuses the mint before it is signed: refunded, unminted."""
    deployer = connect(anvil)
    try:
        capped = await deploy_bridge_token(
            deployer, admin, name="Capped", symbol="CAP", decimals=6, admin=admin.address,
            minter=minter.address, pauser=admin.address, per_transfer_cap=TOKEN_UNITS - 1,
            window_cap=10**16, window_seconds=3600,
        )  # fmt: skip
    finally:
        await deployer.provider.disconnect()
    found = await make_world(ledger)
    await register_token(
        ledger, asset=found.asset, chain_id=31337, address=capped, decimals=6, actor=ADMIN
    )
    user, account = await funded_user(found)
    view = await BridgeOuts(Directory(ledger)).bridge_out(
        user, USER_ACTOR, BridgeOutOrder(found.asset, AMOUNT, TO), key="capped"
    )
    state = await run_passes(ledger, anvil, minter, view.id, w3, ledger_anchor.address)
    assert state is BridgeOutState.REFUNDED
    assert await ledger_side(found, account) == (FUNDED, 0, 0)
    assert total_supply(w3, capped) == 0
    refunded = await get_bridge_out(ledger, view.id, user=None)
    assert refunded.tx_status is TxStatus.REJECTED
