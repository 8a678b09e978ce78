"""ERC-20 bridge-in, the ledger side (no chain: the events are built here and the canonical
chain is a dict; tests/chain/test_bridge_in.py runs the same against anvil and the contract)."""

from __future__ import annotations

import secrets

import pytest

from chain.evm.bridge_token import Redemption
from core.bridges.redemptions import (
    ChainToken,
    Outcome,
    RedemptionKey,
    credit_final,
    get_redemption,
    record_redemptions,
    to_minor_units,
)
from core.bridges.tokens import register_token, to_token_units
from core.errors import ValidationError
from core.types import AccountStatus, OperationType, SystemAccount
from jobs.bridge_in import BRIDGE_IN_ACTOR
from tests.conftest import ADMIN, World

pytestmark = pytest.mark.integration

CHAIN_ID = 31337
UNIT = 10**4  # 6 decimals, scale 2


class Chain:
    """The canonical block hashes: what ``credit_final`` re-checks against."""

    def __init__(self) -> None:
        self.hashes: dict[int, bytes] = {}

    async def hash_at(self, number: int) -> bytes | None:
        return self.hashes.get(number)

    def event(self, block: int, units: int, ref: int, tx: bytes | None = None) -> Redemption:
        block_hash = self.hashes.setdefault(block, secrets.token_bytes(32))
        return Redemption(
            tx or secrets.token_bytes(32), 0, block, block_hash, "0x" + "ab" * 20, units,
            ref.to_bytes(32, "big"),
        )  # fmt: skip


async def bridged(world: World, amount: int) -> ChainToken:
    """A token for the world's asset, with ``amount`` in BRIDGED_OUT (as final mints leave it)."""
    address = "0x" + secrets.token_hex(20)
    await register_token(
        world.ledger, asset=world.asset, chain_id=CHAIN_ID, address=address, decimals=6,
        actor=ADMIN,
    )  # fmt: skip
    if amount:
        out = await world.ledger.accounts.system_account(
            world.asset, SystemAccount.BRIDGED_OUT, actor=ADMIN
        )
        await world.ledger.transfer(
            source=world.issuance, destination=out, asset=world.asset, amount=amount,
            type_=OperationType.BRIDGE_OUT_FINAL,
        )  # fmt: skip
    return ChainToken(world.asset, address, 6)


async def settle(world: World, token: ChainToken, chain: Chain) -> dict[RedemptionKey, Outcome]:
    return await credit_final(
        world.ledger, CHAIN_ID, token, up_to_block=10**9, canonical=chain.hash_at,
        actor=BRIDGE_IN_ACTOR,
    )  # fmt: skip


async def count(world: World, type_: OperationType) -> int:
    from sqlalchemy import text

    async with world.ledger.engine.connect() as conn:
        found = await conn.scalar(
            text(
                "SELECT count(*) FROM operations o JOIN ledger_entries e ON e.operation_id = o.id "
                "JOIN accounts a ON a.id = e.account_id WHERE o.type = :t "
                "AND o.status = 'COMPLETED' AND e.amount > 0 AND a.asset = :a"
            ),
            {"t": type_.value, "a": world.asset},
        )
    return int(found)


def test_token_units_map_back_onto_minor_units_exactly() -> None:
    for scale, decimals in ((2, 6), (2, 2), (6, 2), (0, 18)):
        for minor in (1, 12_34, 10**9):
            try:
                units = to_token_units(minor, scale, decimals)
            except ValidationError:
                continue
            assert to_minor_units(units, scale, decimals) == (minor, 0)
    assert to_minor_units(12_34 * UNIT + 5, 2, 6) == (12_34, 5)


async def test_a_pass_that_died_after_posting_a_credit_is_not_redecided(world: World) -> None:
    """Credit posted, row not updated (the process died), then the account frozen: the next
    pass adopts the posted credit instead of parking the amount in suspense as well."""
    token, chain = await bridged(world, 100_00), Chain()
    user = await world.funded(0)
    (event,) = page = [chain.event(5, 3 * UNIT, user)]
    assert await record_redemptions(world.ledger, CHAIN_ID, token.address, page) == 1

    class Died(BaseException):
        pass

    post = world.ledger.post

    async def post_then_die(command):  # type: ignore[no-untyped-def]
        await post(command)
        raise Died

    world.ledger.post = post_then_die  # type: ignore[method-assign]
    try:
        with pytest.raises(Died):
            await settle(world, token, chain)
    finally:
        del world.ledger.post
    key = RedemptionKey(CHAIN_ID, event.tx_hash, 0)
    assert (await get_redemption(world.ledger, key)).outcome is None
    await world.ledger.accounts.set_status(user, AccountStatus.FROZEN, actor=ADMIN, reason="aml")
    assert await settle(world, token, chain) == {key: Outcome.CREDITED}
    view = await get_redemption(world.ledger, key)
    assert view.credit_operation is not None and view.suspense_operation is None
    assert await count(world, OperationType.BRIDGE_IN) == 1
    assert await count(world, OperationType.BRIDGE_IN_SUSPENSE) == 0
    assert (await world.ledger.queries.balances([user]))[user].posted == 3


async def test_an_event_reincluded_in_another_block_is_pending_there(world: World) -> None:
    token, chain = await bridged(world, 100_00), Chain()
    user = await world.funded(0)
    first = chain.event(5, 2 * UNIT, user)
    await record_redemptions(world.ledger, CHAIN_ID, token.address, [first])
    chain.hashes[5] = secrets.token_bytes(32)  # block 5 replaced; the same log lands in 6
    again = chain.event(6, 2 * UNIT, user, tx=first.tx_hash)
    assert await record_redemptions(world.ledger, CHAIN_ID, token.address, [again]) == 0
    key = RedemptionKey(CHAIN_ID, first.tx_hash, 0)
    assert (await get_redemption(world.ledger, key)).block_number == 6
    assert await settle(world, token, chain) == {key: Outcome.CREDITED}
    # settled: a later read of it in yet another block changes nothing
    chain.hashes[6] = secrets.token_bytes(32)
    await record_redemptions(world.ledger, CHAIN_ID, token.address, [chain.event(7, 2 * UNIT, user, tx=first.tx_hash)])  # fmt: skip
    view = await get_redemption(world.ledger, key)
    assert view.block_number == 6 and view.outcome is Outcome.CREDITED
    assert await settle(world, token, chain) == {}
    assert (await world.ledger.queries.balances([user]))[user].posted == 2


async def test_a_credit_bridged_out_cannot_cover_waits_pending(world: World) -> None:
    """BRIDGED_OUT short (the supply invariant broken): nothing posted, no key spent; once it
    holds the amount, the redemption is credited."""
    token, chain = await bridged(world, 0), Chain()
    user = await world.funded(0)
    (event,) = page = [chain.event(5, 4 * UNIT, user)]
    await record_redemptions(world.ledger, CHAIN_ID, token.address, page)
    assert await settle(world, token, chain) == {}
    key = RedemptionKey(CHAIN_ID, event.tx_hash, 0)
    assert (await get_redemption(world.ledger, key)).outcome is None
    out = await world.ledger.accounts.system_account(
        world.asset, SystemAccount.BRIDGED_OUT, actor=ADMIN
    )
    await world.ledger.transfer(
        source=world.issuance, destination=out, asset=world.asset, amount=4,
        type_=OperationType.BRIDGE_OUT_FINAL,
    )  # fmt: skip
    assert await settle(world, token, chain) == {key: Outcome.CREDITED}
    assert (await world.ledger.queries.balances([user]))[user].posted == 4


async def test_a_node_behind_the_event_proves_nothing_the_event_waits(world: World) -> None:
    """Only another hash at the event's height drops it; no block there (a lagging node) does
    not."""
    token, chain = await bridged(world, 100_00), Chain()
    user = await world.funded(0)
    (event,) = page = [chain.event(5, 1 * UNIT, user)]
    await record_redemptions(world.ledger, CHAIN_ID, token.address, page)
    del chain.hashes[5]
    assert await settle(world, token, chain) == {}
    key = RedemptionKey(CHAIN_ID, event.tx_hash, 0)
    assert (await get_redemption(world.ledger, key)).outcome is None
    chain.hashes[5] = event.block_hash
    assert await settle(world, token, chain) == {key: Outcome.CREDITED}
