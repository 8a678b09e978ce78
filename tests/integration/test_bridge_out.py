"""ERC-20 bridge-out, the ledger side (no chain: the outbox row's final status is set directly
here; tests/chain/test_bridge_out.py runs the same against anvil and the real contract)."""

from __future__ import annotations

import uuid

import pytest
from eth_abi.abi import decode as abi_decode

from core.bridges.erc20 import (
    MINT_PURPOSE,
    BridgeOutOrder,
    BridgeOuts,
    BridgeOutState,
    Settlement,
    check_address,
    get_bridge_out,
    list_bridge_outs,
    settle,
    unsettled_mints,
)
from core.bridges.tokens import register_token, set_paused
from core.chain_txs import TxStatus, get_tx_by_ref
from core.directory import Directory
from core.epochs import raw_connection
from core.errors import BridgePaused, InvalidAddress, LedgerError, UnknownBridgeToken
from core.types import AccountKind, Actor, OperationType, Role, SystemAccount
from merkle.tree import keccak256
from tests.conftest import ADMIN, World

pytestmark = pytest.mark.integration

TO = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
SYSTEM = Actor("bridge-test", Role.SYSTEM)


async def user_with(world: World, amount: int) -> tuple[uuid.UUID, int]:
    owner = await world.ledger.accounts.create_user(email=None, actor=ADMIN)
    wallet = await world.ledger.accounts.ensure_wallet(owner, world.asset, actor=ADMIN)
    available = wallet[AccountKind.AVAILABLE]
    if amount:
        await world.ledger.transfer(
            source=world.issuance, destination=available, asset=world.asset, amount=amount,
            type_=OperationType.MINT,
        )  # fmt: skip
    return owner, available


async def balances(world: World, user_account: int) -> tuple[int, int, int]:
    led = world.ledger
    in_flight = await led.accounts.system_account(world.asset, SystemAccount.IN_FLIGHT, actor=ADMIN)
    out = await led.accounts.system_account(world.asset, SystemAccount.BRIDGED_OUT, actor=ADMIN)
    got = await led.queries.balances([user_account, in_flight, out])
    return got[user_account].posted, got[in_flight].posted, got[out].posted


async def mint_row_becomes(
    world: World, ref: str, status: TxStatus, error: str | None = None
) -> None:
    """Stand-in for the outbox reaching its end (the chain test runs the real one)."""
    async with raw_connection(world.ledger.engine) as conn:
        await conn.execute(
            "UPDATE chain_txs SET status = $3, tx_hash = $4, block_number = 7, block_hash = $4, "
            "last_error = $5 WHERE purpose = $1 AND ref = $2",
            MINT_PURPOSE, ref, status, b"\x01" * 32, error,
        )  # fmt: skip


def contract_of(world: World) -> str:
    """A token address of this test's own (nothing is sent to it here)."""
    return "0x" + keccak256(world.asset.encode())[:20].hex()


@pytest.fixture
async def bridge(world: World) -> BridgeOuts:
    await register_token(
        world.ledger, asset=world.asset, chain_id=31337, address=contract_of(world), decimals=6,
        actor=ADMIN,
    )  # fmt: skip
    return BridgeOuts(Directory(world.ledger))


def test_addresses_need_their_eip55_checksum() -> None:
    assert check_address(TO) == TO
    for bad in (TO.lower(), TO.upper().replace("0X", "0x"), TO[:-1], "0x" + "0" * 40, "70997970"):
        with pytest.raises(InvalidAddress):
            check_address(bad)


async def test_bridge_out_debits_into_flight_with_its_mint_then_settles_once(
    world: World, bridge: BridgeOuts
) -> None:
    user, account = await user_with(world, 10_000)  # 100.00 at scale 2
    order = BridgeOutOrder(world.asset, "12.34", TO)
    first = await bridge.bridge_out(user, SYSTEM, order, key="out-1")
    again = await bridge.bridge_out(user, SYSTEM, order, key="out-1")  # a retry: stored result
    assert again.debit_operation == first.debit_operation and again.id == first.id
    assert await balances(world, account) == (10_000 - 1234, 1234, 0)

    ref = keccak256(b"valueos:bridge-out:out-1").hex()
    tx = await get_tx_by_ref(world.ledger.engine, MINT_PURPOSE, ref)
    assert tx is not None and tx.status is TxStatus.BUILT and tx.to_address == contract_of(world)
    assert tx.data[:4] == keccak256(b"mint(address,uint256,bytes32)")[:4]
    to, amount, bridge_id = abi_decode(["address", "uint256", "bytes32"], tx.data[4:])
    assert (to.lower(), amount, bridge_id.hex()) == (TO.lower(), 12_340_000, ref)  # 6 decimals

    view = await get_bridge_out(world.ledger, ref, user=user)
    assert (view.state, view.amount, view.token_amount) == (
        BridgeOutState.IN_FLIGHT,
        1234,
        12_340_000,
    )
    assert await settle(world.ledger, tx, minted=None, actor=SYSTEM) is None  # not final yet

    await mint_row_becomes(world, ref, TxStatus.FINALIZED)
    [done] = [t for t in await unsettled_mints(world.ledger) if t.ref == ref]
    assert await settle(world.ledger, done, minted=None, actor=SYSTEM) is Settlement.FINAL
    assert await settle(world.ledger, done, minted=None, actor=SYSTEM) is Settlement.FINAL  # replay
    assert await balances(world, account) == (10_000 - 1234, 0, 1234)
    assert ref not in [t.ref for t in await unsettled_mints(world.ledger)]
    assert (await get_bridge_out(world.ledger, ref, user=user)).state is BridgeOutState.MINTED
    assert [v.id for v in await list_bridge_outs(world.ledger, user)] == [ref]


async def test_a_mint_proven_impossible_is_refunded_once(world: World, bridge: BridgeOuts) -> None:
    user, account = await user_with(world, 5_000)
    await bridge.bridge_out(user, SYSTEM, BridgeOutOrder(world.asset, "20.00", TO), key="out-2")
    ref = keccak256(b"valueos:bridge-out:out-2").hex()
    await mint_row_becomes(world, ref, TxStatus.FAILED, "reverted in block 7")
    tx = await get_tx_by_ref(world.ledger.engine, MINT_PURPOSE, ref)
    assert tx is not None
    assert await settle(world.ledger, tx, minted=None, actor=SYSTEM) is None  # unproven: wait
    assert await settle(world.ledger, tx, minted=False, actor=SYSTEM) is Settlement.REFUND
    assert await settle(world.ledger, tx, minted=False, actor=SYSTEM) is Settlement.REFUND
    assert await balances(world, account) == (5_000, 0, 0)
    view = await get_bridge_out(world.ledger, ref, user=user)
    assert view.state is BridgeOutState.REFUNDED and view.settle_operation is not None


async def test_refusals_debit_nothing(world: World, bridge: BridgeOuts) -> None:
    user, account = await user_with(world, 1_000)
    cases: list[tuple[BridgeOutOrder, str]] = [
        (BridgeOutOrder(world.asset, "1.00", TO.lower()), "INVALID_ADDRESS"),
        (BridgeOutOrder(world.asset, "1.00", "0x" + "0" * 40), "INVALID_ADDRESS"),
        (BridgeOutOrder(world.asset, "10.01", TO), "INSUFFICIENT_FUNDS"),
        (BridgeOutOrder(world.asset, "0.00", TO), "INVALID_AMOUNT"),
        (BridgeOutOrder(world.asset, "1.001", TO), "INVALID_AMOUNT"),
    ]
    for order, code in cases:
        with pytest.raises(LedgerError) as caught:
            await bridge.bridge_out(user, SYSTEM, order, key=None)
        assert caught.value.code == code, (order, caught.value)
    await set_paused(world.ledger, world.asset, paused=True, reason="incident 7", actor=ADMIN)
    with pytest.raises(BridgePaused, match="incident 7"):
        await bridge.bridge_out(user, SYSTEM, BridgeOutOrder(world.asset, "1.00", TO), key=None)
    with pytest.raises(UnknownBridgeToken):
        await bridge.bridge_out(user, SYSTEM, BridgeOutOrder("NOSUCH", "1.00", TO), key=None)
    assert await balances(world, account) == (1_000, 0, 0)
    async with raw_connection(world.ledger.engine) as conn:
        rows = await conn.fetchval(
            "SELECT count(*) FROM operations WHERE type = 'BRIDGE_OUT' "
            "AND metadata -> 'bridge' ->> 'user' = $1",
            str(user),
        )
    assert rows == 0


async def test_an_amount_the_token_cannot_carry_is_refused(world: World) -> None:
    await register_token(
        world.ledger, asset=world.asset, chain_id=31337, address=contract_of(world), decimals=1,
        actor=ADMIN,
    )  # fmt: skip
    user, account = await user_with(world, 1_000)
    bridge = BridgeOuts(Directory(world.ledger))
    with pytest.raises(LedgerError, match="does not map onto it exactly"):
        await bridge.bridge_out(user, SYSTEM, BridgeOutOrder(world.asset, "1.05", TO), key=None)
    await bridge.bridge_out(user, SYSTEM, BridgeOutOrder(world.asset, "1.10", TO), key=None)
    assert (await balances(world, account))[0] == 1_000 - 110
