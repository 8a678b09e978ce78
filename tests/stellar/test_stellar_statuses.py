"""Every submission status of the Stellar outbox, injected by the stand-in (a test double):
TRY_AGAIN_LATER, a dropped transaction, late inclusion, ERROR, applied-but-FAILED, a mint the
simulation refuses, and expiry (NOT_FOUND past maxTime) -> exactly one mint or one refund."""

from __future__ import annotations

import base64

import pytest

from chain.stellar.outbox import StellarOutbox, envelope_bounds
from chain.stellar.standin import Fault
from core import chain_txs
from core.bridges.erc20 import BridgeOutOrder, BridgeOutState, get_bridge_out
from core.bridges.stellar import MINT_PURPOSE, StellarBridgeOuts, StellarToken
from core.chain_txs import ChainTx, TxStatus
from jobs.stellar_out import stellar_out_pass
from tests.conftest import World
from tests.stellar.net import StellarNet
from tests.stellar.test_stellar_out import FUNDED, USER, balances, funded_user, outbox

pytestmark = pytest.mark.integration

MOVED = 12_34
STROOPS = 123_400_000


async def start(
    world: World, net: StellarNet, bridge: StellarBridgeOuts, key: str
) -> tuple[str, int, str]:
    user, account = await funded_user(world)
    dest = (await net.user()).public_key
    view = await bridge.bridge_out(user, USER, BridgeOutOrder(world.asset, "12.34", dest), key=key)
    return view.id, account, dest


async def row(world: World, ref: str) -> ChainTx:
    found = await chain_txs.get_tx_by_ref(world.ledger.engine, MINT_PURPOSE, ref)
    assert found is not None
    return found


async def state(world: World, ref: str) -> BridgeOutState:
    return (await get_bridge_out(world.ledger, ref, user=None)).state


async def settle(
    world: World, net: StellarNet, box: StellarOutbox, ref: str, *, closes: int = 15
) -> BridgeOutState:
    for _ in range(closes):
        await stellar_out_pass(world.ledger, box)
        if await state(world, ref) is not BridgeOutState.IN_FLIGHT:
            break
        net.standin.close_ledger()
    return await state(world, ref)


async def assert_minted_once(
    world: World, net: StellarNet, ref: str, account: int, dest: str, hashes: set[bytes]
) -> None:
    assert await state(world, ref) is BridgeOutState.MINTED
    assert net.standin.balance(net.contract, dest) == STROOPS
    assert await balances(world, account) == (FUNDED - MOVED, 0, MOVED)
    final = await row(world, ref)
    assert hashes == {final.tx_hash}, "the same envelope, re-sent unchanged"
    assert await world.total() == 0


async def test_try_again_later_resends_the_same_envelope(
    world: World, net: StellarNet, token: StellarToken, bridge: StellarBridgeOuts
) -> None:
    ref, account, dest = await start(world, net, bridge, "tal")
    box = outbox(world, net)
    net.standin.inject(Fault.TRY_AGAIN_LATER, count=2)
    await stellar_out_pass(world.ledger, box)
    first = await row(world, ref)
    assert first.status is TxStatus.SIGNED and "TRY_AGAIN_LATER" in (first.last_error or "")
    assert net.standin.faults == [], "both answers seen: the same envelope was sent again"
    assert await settle(world, net, box, ref) is BridgeOutState.MINTED
    await assert_minted_once(world, net, ref, account, dest, {first.tx_hash})  # type: ignore[arg-type]


@pytest.mark.parametrize("fault", [Fault.DROP, Fault.LATE])
async def test_dropped_or_late_is_polled_and_resent_unchanged(
    world: World, net: StellarNet, token: StellarToken, bridge: StellarBridgeOuts, fault: Fault
) -> None:
    ref, account, dest = await start(world, net, bridge, f"f-{fault}")
    box = outbox(world, net)
    net.standin.inject(fault, ledgers=3)
    await stellar_out_pass(world.ledger, box)
    first = await row(world, ref)
    assert first.status is TxStatus.BROADCAST
    assert net.standin.sent >= 2, "NOT_FOUND before maxTime: polled and sent again"
    assert await settle(world, net, box, ref) is BridgeOutState.MINTED
    await assert_minted_once(world, net, ref, account, dest, {first.tx_hash})  # type: ignore[arg-type]


async def test_error_is_decoded_and_not_a_refund(
    world: World, net: StellarNet, token: StellarToken, bridge: StellarBridgeOuts
) -> None:
    ref, account, dest = await start(world, net, bridge, "err")
    box = outbox(world, net)
    net.standin.inject(Fault.ERROR, code="txINTERNAL_ERROR")
    await stellar_out_pass(world.ledger, box)
    first = await row(world, ref)
    assert first.status is TxStatus.BROADCAST
    assert "txINTERNAL_ERROR" in (first.last_error or "")
    assert await settle(world, net, box, ref) is BridgeOutState.MINTED
    await assert_minted_once(world, net, ref, account, dest, {first.tx_hash})  # type: ignore[arg-type]


async def test_never_applied_expires_only_past_max_time_then_refunds(
    world: World, net: StellarNet, token: StellarToken, bridge: StellarBridgeOuts
) -> None:
    ref, account, dest = await start(world, net, bridge, "exp")
    box = outbox(world, net)
    net.standin.inject(Fault.DROP, count=100)  # every send is swallowed
    for _ in range(3):
        await stellar_out_pass(world.ledger, box)
        net.standin.close_ledger()
    signed = await row(world, ref)
    assert signed.status is TxStatus.BROADCAST, "NOT_FOUND before maxTime is not failure"
    assert await state(world, ref) is BridgeOutState.IN_FLIGHT
    _, max_time = envelope_bounds(signed.raw_tx)  # type: ignore[arg-type]
    net.standin.close_ledger(now=max_time)  # a ledger AT maxTime: still valid
    await stellar_out_pass(world.ledger, box)
    assert await state(world, ref) is BridgeOutState.IN_FLIGHT
    net.standin.close_ledger(now=max_time + 1)  # closed past maxTime, still absent: dead
    await stellar_out_pass(world.ledger, box)
    dead = await row(world, ref)
    assert dead.status is TxStatus.EXPIRED and dead.nonce is None
    assert await state(world, ref) is BridgeOutState.REFUNDED
    assert await balances(world, account) == (FUNDED, 0, 0)
    assert net.standin.balance(net.contract, dest) == 0
    # the envelope can never be applied now
    net.standin.faults.clear()
    resent = await net.client.send(base64.b64encode(dead.raw_tx).decode())  # type: ignore[arg-type]
    assert resent.error == "txTOO_LATE"
    # and the channel's sequence number is free for the next mint
    ref2, _, dest2 = await start(world, net, bridge, "exp-next")
    later = outbox(world, net, timeout_s=600)  # the ledger clock was pushed past maxTime above
    assert await settle(world, net, later, ref2) is BridgeOutState.MINTED
    assert net.standin.balance(net.contract, dest2) == STROOPS
    assert await world.total() == 0


async def test_absent_past_max_time_but_unprovable_is_not_refunded(
    world: World, net: StellarNet, token: StellarToken, bridge: StellarBridgeOuts
) -> None:
    """The channel's sequence number was consumed and the RPC's history no longer covers the
    envelope's validity: absent is not proof. No refund; an alarm for ops."""
    ref, account, _ = await start(world, net, bridge, "amb")
    box = outbox(world, net)
    net.standin.inject(Fault.DROP, count=100)
    await stellar_out_pass(world.ledger, box)
    signed = await row(world, ref)
    _, max_time = envelope_bounds(signed.raw_tx)  # type: ignore[arg-type]
    assert signed.sender is not None
    net.standin.accounts[signed.sender].seq += 1  # consumed (by what, the bridge cannot know)
    net.standin.retention_ledgers = 1  # history forgotten
    net.standin.close_ledger(count=2, now=max_time + 1)
    for _ in range(2):
        await stellar_out_pass(world.ledger, box)
    assert (await row(world, ref)).status is TxStatus.BROADCAST
    assert await state(world, ref) is BridgeOutState.IN_FLIGHT
    assert await balances(world, account) == (FUNDED - MOVED, MOVED, 0)


async def test_applied_but_failed_is_refunded(
    world: World, net: StellarNet, token: StellarToken, bridge: StellarBridgeOuts
) -> None:
    """Simulated fine, then the issuer revoked the trustline before the mint was applied: the
    transaction FAILED in its ledger, nothing was minted -> refund."""
    ref, account, dest = await start(world, net, bridge, "failed")
    box = outbox(world, net)
    await box.advance(await row(world, ref))  # BUILT -> SIGNED (simulated, signed, stored)
    assert (await row(world, ref)).status is TxStatus.SIGNED
    kp = next(u for u in net.users if u.public_key == dest)
    await net.deauthorize(kp)
    assert await settle(world, net, box, ref) is BridgeOutState.REFUNDED
    failed = await row(world, ref)
    assert failed.status is TxStatus.FAILED and failed.block_number is not None
    assert "txFAILED" in (failed.last_error or "")
    assert await balances(world, account) == (FUNDED, 0, 0)
    assert net.standin.balance(net.contract, dest) == 0
    assert await world.total() == 0


async def test_simulation_refusal_after_the_debit_is_refunded_unsigned(
    world: World, net: StellarNet, token: StellarToken, bridge: StellarBridgeOuts
) -> None:
    ref, account, dest = await start(world, net, bridge, "rejected")
    kp = next(u for u in net.users if u.public_key == dest)
    await net.deauthorize(kp)
    assert await settle(world, net, outbox(world, net), ref) is BridgeOutState.REFUNDED
    rejected = await row(world, ref)
    assert rejected.status is TxStatus.REJECTED and rejected.raw_tx is None
    assert "not authorized" in (rejected.last_error or "")
    assert await balances(world, account) == (FUNDED, 0, 0)
