"""The credit use cases' rules (core.credits): who may mint, move between compartments and
burn, with which reasons; every refusal writes nothing."""

from __future__ import annotations

import uuid

import pytest

from core.credits import Credits
from core.directory import Directory
from core.errors import LedgerError
from core.types import AccountKind, Actor, Role
from tests.conftest import ADMIN, World

pytestmark = pytest.mark.integration

OPS = Actor("ops-1", Role.OPS)


def user_actor(user: uuid.UUID) -> Actor:
    return Actor(f"user:{user}", Role.USER)


async def refused(code: str, call: object) -> None:
    with pytest.raises(LedgerError) as caught:
        await call  # type: ignore[misc]
    assert caught.value.code == code, caught.value


async def test_mint_move_and_burn_follow_their_rules(world: World) -> None:
    credits = Credits(Directory(world.ledger))
    alice = await world.ledger.accounts.create_user(email=None, actor=ADMIN)
    bob = await world.ledger.accounts.create_user(email=None, actor=ADMIN)
    await credits.mint(
        OPS, user_id=alice, asset=world.asset, amount="10.00", memo="welcome",
        idempotency_key=None,
    )  # fmt: skip
    wallet = await world.ledger.accounts.ensure_wallet(alice, world.asset, actor=ADMIN)
    available, locked = wallet[AccountKind.AVAILABLE], wallet[AccountKind.LOCKED]

    async def posted() -> tuple[int, int]:
        got = await world.ledger.queries.balances([available, locked])
        return got[available].posted, got[locked].posted

    assert await posted() == (1000, 0)
    move = {"asset": world.asset, "amount": "4.00", "reason": None, "idempotency_key": None}
    lock = {"from_kind": AccountKind.AVAILABLE, "to_kind": AccountKind.LOCKED}
    unlock = {"from_kind": AccountKind.LOCKED, "to_kind": AccountKind.AVAILABLE}
    await credits.move(alice, user_actor(alice), owner=None, **lock, **move)  # a user locks
    assert await posted() == (600, 400)

    await refused(
        "VALIDATION_ERROR", credits.move(alice, user_actor(alice), owner=None, **unlock, **move)
    )  # only staff unlock
    await refused(
        "UNKNOWN_USER", credits.move(bob, user_actor(bob), owner=alice, **lock, **move)
    )  # not one's own
    await refused(
        "REASON_REQUIRED", credits.move(uuid.uuid4(), OPS, owner=alice, **unlock, **move)
    )  # staff: with a reason
    await refused(
        "VALIDATION_ERROR",
        credits.move(
            alice,
            user_actor(alice),
            owner=None,
            from_kind=AccountKind.AVAILABLE,
            to_kind=AccountKind.AVAILABLE,
            **move,
        ),
    )  # no such move
    assert await posted() == (600, 400)
    await credits.move(uuid.uuid4(), OPS, owner=alice, **unlock, **move | {"reason": "KYC ok"})
    assert await posted() == (1000, 0)

    burn = {"amount": "1.00", "idempotency_key": None}
    await refused(
        "UNKNOWN_ACCOUNT",
        credits.burn(bob, user_actor(bob), account_id=available, reason=None, **burn),
    )  # not bob's
    await refused(
        "REASON_REQUIRED",
        credits.burn(uuid.uuid4(), OPS, account_id=available, reason=None, **burn),
    )
    await refused(
        "VALIDATION_ERROR",
        credits.burn(uuid.uuid4(), OPS, account_id=locked, reason="fraud", **burn),
    )  # AVAILABLE only
    await credits.burn(alice, user_actor(alice), account_id=available, reason=None, **burn)
    await credits.burn(uuid.uuid4(), OPS, account_id=available, reason="fraud", **burn)
    assert await posted() == (800, 0)
    assert await world.total() == 0
