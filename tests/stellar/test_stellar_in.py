"""Stellar bridge-in against the stand-in (a test double) and the real database: address
linking by a signed challenge, burns (SAC ``burn`` and payments to the issuer) credited once to
the linked user, unlinked ones parked in suspense and resolved by staff, the watcher's cursor,
paging, dedupe and retention alarms, and the supply invariant."""

from __future__ import annotations

import uuid

import pytest
from stellar_sdk import Keypair

from core.bridges.erc20 import BridgeOutOrder, BridgeOutState
from core.bridges.redemptions import Outcome, resolve_suspense, suspended_redemptions
from core.bridges.stellar import StellarBridgeOuts, StellarToken, get_stellar_token
from core.bridges.stellar_in import link_address, link_challenge, list_links
from core.errors import AddressAlreadyLinked, LinkChallengeInvalid
from core.types import Actor, Role, SystemAccount
from jobs.stellar_in import stellar_in_pass
from jobs.stellar_supply import stellar_supply_pass
from tests.conftest import ADMIN, World
from tests.stellar.net import StellarNet
from tests.stellar.test_stellar_out import USER, funded_user, outbox, run_until_settled

pytestmark = pytest.mark.integration

OPS = Actor("ops-1", Role.OPS)


async def linked(world: World, user: uuid.UUID, kp: Keypair) -> None:
    ch = await link_challenge(world.ledger, user, kp.public_key, USER)
    await link_address(world.ledger, user, ch.id, kp.sign_message(ch.challenge), USER)


async def bridged(
    world: World,
    net: StellarNet,
    bridge: StellarBridgeOuts,
    user: uuid.UUID,
    kp: Keypair,
    amount: str,
    key: str,
) -> None:
    view = await bridge.bridge_out(
        user, USER, BridgeOutOrder(world.asset, amount, kp.public_key), key=key
    )
    assert await run_until_settled(world, net, outbox(world, net), view.id) is BridgeOutState.MINTED


async def posted(world: World, account: int) -> int:
    return (await world.ledger.queries.balances([account]))[account].posted


async def watch(world: World, net: StellarNet, **kw: object):  # type: ignore[no-untyped-def]
    return await stellar_in_pass(
        world.ledger,
        net.client,
        chain_id=(await get_stellar_token(world.ledger, world.asset)).chain_id,
        **kw,
    )  # type: ignore[arg-type]


async def test_link_by_signed_challenge(world: World, net: StellarNet, token: StellarToken) -> None:
    user, _ = await funded_user(world)
    other, _ = await funded_user(world)
    kp = Keypair.random()
    ch = await link_challenge(world.ledger, user, kp.public_key, USER)
    assert kp.public_key in ch.challenge and str(user) in ch.challenge
    with pytest.raises(LinkChallengeInvalid):  # signed by another key: forged
        await link_address(
            world.ledger, user, ch.id, Keypair.random().sign_message(ch.challenge), USER
        )
    with pytest.raises(LinkChallengeInvalid):  # the right key over another text
        await link_address(world.ledger, user, ch.id, kp.sign_message(ch.challenge + "!"), USER)
    with pytest.raises(LinkChallengeInvalid):  # someone else's challenge
        await link_address(world.ledger, other, ch.id, kp.sign_message(ch.challenge), USER)
    assert await list_links(world.ledger, user) == []
    link = await link_address(world.ledger, user, ch.id, kp.sign_message(ch.challenge), USER)
    assert link.address == kp.public_key and link.user == user
    with pytest.raises(LinkChallengeInvalid):  # used once
        await link_address(world.ledger, user, ch.id, kp.sign_message(ch.challenge), USER)
    ch2 = await link_challenge(world.ledger, other, kp.public_key, USER)
    with pytest.raises(AddressAlreadyLinked):
        await link_address(world.ledger, other, ch2.id, kp.sign_message(ch2.challenge), USER)
    assert [lk.address for lk in await list_links(world.ledger, user)] == [kp.public_key]


async def test_burns_credited_once_to_the_linked_user(
    world: World, net: StellarNet, token: StellarToken, bridge: StellarBridgeOuts
) -> None:
    user, account = await funded_user(world)
    kp = await net.user()
    await linked(world, user, kp)
    await bridged(world, net, bridge, user, kp, "40.00", "in-1")
    assert await posted(world, account) == 60_00
    await net.burn(kp, 5 * 10**7)  # 5.00 by SAC burn
    await net.pay_issuer(kp, "2.5")  # 2.50 by a payment to the issuer
    first = await watch(world, net)
    assert sorted(first.settled.values()) == [Outcome.CREDITED, Outcome.CREDITED]
    assert first.mints == 1 and first.recorded == 2
    assert await posted(world, account) == 67_50
    # a restart re-reads: nothing more (event ids, cursor), and the supply invariant holds
    again = await watch(world, net, start_ledger=net.standin.oldest_ledger)
    assert again.recorded == 0 and again.settled == {}
    async with world.ledger.engine.begin() as conn:  # the cursor rewound: re-read everything
        from sqlalchemy import text

        await conn.execute(
            text("UPDATE bridge_cursors SET next_block = :n WHERE token = :t"),
            {"n": net.standin.oldest_ledger, "t": token.contract},
        )
    reread = await watch(world, net)
    assert reread.recorded == 0 and reread.mints == 0 and reread.settled == {}
    assert await posted(world, account) == 67_50
    [check] = await stellar_supply_pass(world.ledger, net.client, chain_id=token.chain_id)
    assert check.holds and check.on_chain == 325_000_000
    assert await world.total() == 0


async def test_unlinked_burn_goes_to_suspense_then_resolved(
    world: World, net: StellarNet, token: StellarToken, bridge: StellarBridgeOuts
) -> None:
    user, account = await funded_user(world)
    kp = await net.user()
    await bridged(world, net, bridge, user, kp, "10.00", "in-2")
    await net.burn(kp, 3 * 10**7)
    done = await watch(world, net)
    assert list(done.settled.values()) == [Outcome.SUSPENDED]
    suspense = await world.ledger.accounts.system_account(
        world.asset, SystemAccount.SUSPENSE, actor=ADMIN
    )
    assert await posted(world, suspense) == 3_00
    [parked] = [
        v for v in await suspended_redemptions(world.ledger, limit=200) if v.token == token.contract
    ]
    assert parked.sender == kp.public_key and "linked to no user" in (parked.reason or "")
    resolved = await resolve_suspense(
        world.ledger, parked.key, account, OPS, "user proved the burn"
    )
    assert resolved.resolved_operation is not None
    assert await posted(world, account) == 93_00
    assert await posted(world, suspense) == 0
    assert await world.total() == 0


async def test_paging_and_retention_alarms(
    world: World, net: StellarNet, token: StellarToken, bridge: StellarBridgeOuts
) -> None:
    user, account = await funded_user(world)
    kp = await net.user()
    await linked(world, user, kp)
    await bridged(world, net, bridge, user, kp, "20.00", "in-3")
    for _ in range(5):
        await net.burn(kp, 10**7)
    done = await watch(world, net, limit=2, page_ledgers=3)
    assert len(done.settled) == 5 and done.ranges > 1
    assert await posted(world, account) == 85_00
    # the watcher stops while the RPC moves on: alarm well before the window is passed
    net.standin.retention_ledgers = 40
    net.standin.close_ledger(count=30)
    lagging = await watch(world, net)
    assert token.asset in lagging.alarms and "lags" in lagging.alarms[token.asset]
    net.standin.close_ledger(count=100)
    async with world.ledger.engine.begin() as conn:
        from sqlalchemy import text

        await conn.execute(
            text("UPDATE bridge_cursors SET next_block = next_block - 60 WHERE token = :t"),
            {"t": token.contract},
        )
    lost = await watch(world, net)
    assert "below the RPC's oldest ledger" in lost.alarms[token.asset]
    assert lost.ranges == 0


async def test_unbacked_mint_pauses_outbound(
    world: World, net: StellarNet, token: StellarToken, bridge: StellarBridgeOuts
) -> None:
    user, _ = await funded_user(world)
    kp = await net.user()
    await bridged(world, net, bridge, user, kp, "1.00", "in-4")
    await watch(world, net)
    [ok] = await stellar_supply_pass(world.ledger, net.client, chain_id=token.chain_id)
    assert ok.holds
    # the issuer's key mints outside the ledger (a payment from the issuer is a mint too)
    await net.classic(net.issuer, lambda b: b.append_payment_op(kp.public_key, net.asset, "7"))
    await watch(world, net)
    [broken] = await stellar_supply_pass(world.ledger, net.client, chain_id=token.chain_id)
    assert not broken.holds
    paused = await get_stellar_token(world.ledger, world.asset)
    assert paused.paused and "supply invariant broken" in (paused.pause_reason or "")
    with pytest.raises(Exception, match="paused"):
        await bridge.bridge_out(
            user, USER, BridgeOutOrder(world.asset, "1.00", kp.public_key), key="in-4b"
        )
