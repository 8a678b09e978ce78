"""Vaults against the real PostgreSQL: roles, ownership, atomic moves, forensic view."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

import pytest
from sqlalchemy import text

from core import vaults
from core.errors import (
    AlreadyExists,
    Forbidden,
    IdempotencyConflict,
    InsufficientFunds,
    LedgerError,
    UnknownAccount,
    UnknownAsset,
    UnknownUser,
    ValidationError,
    VaultMemberNotFound,
    VaultNotFound,
)
from core.forensics import forensic_ledger
from core.ledger import Ledger
from core.types import AccountKind, Actor, OperationResult, OperationType, Role
from core.vaults import VaultRole
from tests.conftest import ADMIN, World
from tests.support import blocked_backend, raw_connect

pytestmark = pytest.mark.integration


@dataclass
class Person:
    id: uuid.UUID
    wallet: dict[AccountKind, int]

    @property
    def available(self) -> int:
        return self.wallet[AccountKind.AVAILABLE]

    @property
    def actor(self) -> Actor:
        return Actor(str(self.id), Role.USER, "203.0.113.7")


async def person(world: World, amount: int = 0) -> Person:
    led = world.ledger
    uid = await led.accounts.create_user(email=None, actor=ADMIN)
    wallet = await led.accounts.ensure_wallet(uid, world.asset, actor=ADMIN)
    if amount:
        await led.transfer(
            source=world.issuance,
            destination=wallet[AccountKind.AVAILABLE],
            asset=world.asset,
            amount=amount,
            type_=OperationType.MINT,
        )
    return Person(uid, wallet)


async def posted(led: Ledger, account_id: int) -> int:
    return (await led.queries.balance(account_id)).posted


async def audit_actions(led: Ledger, entity_type: str, entity_id: object) -> list[tuple]:
    async with led.engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT action, actor_id, ip, before, after FROM audit_log "
                "WHERE entity_type = :t AND entity_id = :i ORDER BY id"
            ),
            {"t": entity_type, "i": str(entity_id)},
        )
        return [tuple(r) for r in rows]


async def test_create_vault_and_move_atomically(world: World) -> None:
    led = world.ledger
    alice = await person(world, 1_000)
    savings = await vaults.create_vault(
        led, user=alice.id, asset=world.asset, name=" Savings ", actor=alice.actor
    )
    trip = await vaults.create_vault(
        led, user=alice.id, asset=world.asset, name="Trip", actor=alice.actor
    )
    assert (savings.name, savings.role, savings.owner_id, savings.posted) == (
        "Savings",
        VaultRole.OWNER,
        alice.id,
        0,
    )
    account = await led.accounts.get_account(savings.id)
    assert (account.kind, account.owner_id, account.asset) == (
        AccountKind.VAULT,
        alice.id,
        world.asset,
    )

    moved = await vaults.move(
        led,
        user=alice.id,
        source=alice.available,
        destination=savings.id,
        asset=world.asset,
        amount=300,
        actor=alice.actor,
        memo="rainy day",
    )
    # one operation, two legs, balances after each
    assert moved.type is OperationType.INTERNAL_MOVE
    assert [(e.account_id, e.amount, e.balance_after) for e in moved.entries] == [
        (alice.available, -300, 700),
        (savings.id, 300, 300),
    ]
    await vaults.move(
        led,
        user=alice.id,
        source=savings.id,
        destination=trip.id,
        asset=world.asset,
        amount=120,
        actor=alice.actor,
    )
    assert [await posted(led, a) for a in (alice.available, savings.id, trip.id)] == [
        700,
        180,
        120,
    ]
    assert (await vaults.get_vault(led, user=alice.id, vault_id=savings.id)).posted == 180
    listed = await vaults.list_vaults(led, user=alice.id, asset=world.asset)
    assert [v.id for v in listed] == [savings.id, trip.id]
    view = await led.queries.operation(moved.operation_id)
    assert view.metadata == {"moved_by": str(alice.id), "memo": "rainy day"}
    assert view.actor_id == str(alice.id)
    assert await world.total() == 0
    # audited with the actor and the IP
    actions = await audit_actions(led, "vault", savings.id)
    assert actions[0][:3] == ("vault.created", str(alice.id), "203.0.113.7")
    assert actions[0][4]["name"] == "Savings"


async def test_vault_creation_rejections(world: World) -> None:
    led = world.ledger
    alice = await person(world)
    await vaults.create_vault(led, user=alice.id, asset=world.asset, name="A", actor=ADMIN)
    with pytest.raises(AlreadyExists):
        await vaults.create_vault(led, user=alice.id, asset=world.asset, name="A", actor=ADMIN)
    with pytest.raises(ValidationError):
        await vaults.create_vault(led, user=alice.id, asset=world.asset, name="  ", actor=ADMIN)
    with pytest.raises(UnknownAsset):
        await vaults.create_vault(led, user=alice.id, asset="NOPE", name="B", actor=ADMIN)
    with pytest.raises(UnknownUser):
        await vaults.create_vault(led, user=uuid.uuid4(), asset=world.asset, name="B", actor=ADMIN)
    # another user may use the same name
    bob = await person(world)
    await vaults.create_vault(led, user=bob.id, asset=world.asset, name="A", actor=ADMIN)
    assert len(await vaults.list_vaults(led, user=alice.id)) == 1


@pytest.fixture
async def shared(world: World) -> tuple[World, dict[str, Person], int]:
    """A vault of ``owner`` holding 500, with a contributor, a viewer; and an outsider."""
    led = world.ledger
    people = {name: await person(world, 1_000) for name in ("owner", "contributor", "viewer")}
    people["outsider"] = await person(world, 1_000)
    owner = people["owner"]
    vault = await vaults.create_vault(
        led, user=owner.id, asset=world.asset, name="Family", actor=owner.actor
    )
    for name, role in (("contributor", VaultRole.CONTRIBUTOR), ("viewer", VaultRole.VIEWER)):
        await vaults.set_member(
            led, user=owner.id, vault_id=vault.id, member=people[name].id, role=role,
            actor=owner.actor,
        )  # fmt: skip
    await vaults.move(
        led, user=owner.id, source=owner.available, destination=vault.id, asset=world.asset,
        amount=500, actor=owner.actor,
    )  # fmt: skip
    return world, people, vault.id


# what each role may do: read, move funds in, move funds out, manage members
ROLE_TABLE = {
    "owner": (True, True, True, True),
    "contributor": (True, True, True, False),
    "viewer": (True, False, False, False),
    "outsider": (False, False, False, False),
}


@pytest.mark.parametrize("who", list(ROLE_TABLE))
async def test_role_permissions(shared: tuple[World, dict[str, Person], int], who: str) -> None:
    world, people, vault_id = shared
    led = world.ledger
    me = people[who]
    can_read, can_in, can_out, can_manage = ROLE_TABLE[who]

    async def outcome(call) -> str:
        try:
            await call
        except LedgerError as err:
            return err.code
        return "OK"

    read_codes = {
        await outcome(vaults.get_vault(led, user=me.id, vault_id=vault_id)),
        await outcome(vaults.vault_history(led, user=me.id, vault_id=vault_id)),
        await outcome(vaults.list_members(led, user=me.id, vault_id=vault_id)),
    }
    assert read_codes == ({"OK"} if can_read else {"VAULT_NOT_FOUND"})
    # a non-member gets exactly what a vault that does not exist gets
    hidden = "VAULT_NOT_FOUND" if not can_read else "FORBIDDEN"
    denied_move = "UNKNOWN_ACCOUNT" if not can_read else "FORBIDDEN"

    move_in = await outcome(
        vaults.move(led, user=me.id, source=me.available, destination=vault_id,
                    asset=world.asset, amount=10, actor=me.actor)
    )  # fmt: skip
    assert move_in == ("OK" if can_in else denied_move)
    move_out = await outcome(
        vaults.move(led, user=me.id, source=vault_id, destination=me.available,
                    asset=world.asset, amount=25, actor=me.actor)
    )  # fmt: skip
    assert move_out == ("OK" if can_out else denied_move)
    newcomer = await person(world)
    manage = await outcome(
        vaults.set_member(led, user=me.id, vault_id=vault_id, member=newcomer.id,
                          role=VaultRole.VIEWER, actor=me.actor)
    )  # fmt: skip
    assert manage == ("OK" if can_manage else hidden)

    # balances moved exactly as allowed, nothing else
    assert await posted(led, vault_id) == 500 + (10 if can_in else 0) - (25 if can_out else 0)
    assert await posted(led, me.available) == 1_000 - 500 * (who == "owner") - (
        10 if can_in else 0
    ) + (25 if can_out else 0)
    members = {m.user_id for m in await vaults.list_members(led, user=people["owner"].id,
                                                            vault_id=vault_id)}  # fmt: skip
    assert (newcomer.id in members) is can_manage
    assert await world.total() == 0


async def test_cannot_move_or_read_others_funds_by_guessing_ids(world: World) -> None:
    led = world.ledger
    alice = await person(world, 1_000)
    mallory = await person(world, 10)
    vault = await vaults.create_vault(
        led, user=alice.id, asset=world.asset, name="Private", actor=alice.actor
    )
    await vaults.move(
        led, user=alice.id, source=alice.available, destination=vault.id, asset=world.asset,
        amount=400, actor=alice.actor,
    )  # fmt: skip
    missing = 10**12

    async def refused(source: int, destination: int) -> LedgerError:
        with pytest.raises(LedgerError) as caught:
            await vaults.move(led, user=mallory.id, source=source, destination=destination,
                              asset=world.asset, amount=1, actor=mallory.actor)  # fmt: skip
        return caught.value

    # somebody else's compartment or vault answers exactly like an id that does not exist
    for source, destination in (
        (alice.available, mallory.available),
        (vault.id, mallory.available),
        (mallory.available, vault.id),
        (mallory.available, alice.available),
        (missing, mallory.available),
    ):
        err = await refused(source, destination)
        assert isinstance(err, UnknownAccount)
        guessed = source if source != mallory.available else destination
        assert err.message == f"account {guessed} does not exist"
    # own compartments that users cannot move directly
    err = await refused(mallory.wallet[AccountKind.BLOCKED], mallory.available)
    assert isinstance(err, Forbidden)
    with pytest.raises(ValidationError):
        await vaults.move(led, user=mallory.id, source=mallory.available,
                          destination=mallory.available, asset=world.asset, amount=1,
                          actor=mallory.actor)  # fmt: skip
    for call in (
        vaults.get_vault(led, user=mallory.id, vault_id=vault.id),
        vaults.vault_history(led, user=mallory.id, vault_id=vault.id),
        vaults.list_members(led, user=mallory.id, vault_id=vault.id),
        vaults.remove_member(led, user=mallory.id, vault_id=vault.id, member=alice.id,
                             actor=mallory.actor),
    ):  # fmt: skip
        with pytest.raises(VaultNotFound) as caught:
            await call
        assert caught.value.message == f"vault {vault.id} does not exist"
    with pytest.raises(VaultNotFound):
        await vaults.get_vault(led, user=mallory.id, vault_id=missing)
    assert await vaults.list_vaults(led, user=mallory.id) == []
    # the forensic view shows mallory only her own entries, even when she names alice's
    page = await forensic_ledger(led, user=mallory.id, limit=100)
    assert {e.account_id for e in page.entries} == {mallory.available}
    assert (await forensic_ledger(led, user=mallory.id, account_id=vault.id)).entries == []
    assert await posted(led, vault.id) == 400
    assert await posted(led, alice.available) == 600


async def test_member_management_rules_and_audit(world: World) -> None:
    led = world.ledger
    owner, co, member = await person(world, 100), await person(world), await person(world, 50)
    vault = await vaults.create_vault(
        led, user=owner.id, asset=world.asset, name="Club", actor=owner.actor
    )
    vid = vault.id
    # the creator can be neither demoted nor removed, even by a co-owner
    await vaults.set_member(
        led, user=owner.id, vault_id=vid, member=co.id, role=VaultRole.OWNER, actor=owner.actor
    )
    with pytest.raises(Forbidden):
        await vaults.set_member(
            led, user=co.id, vault_id=vid, member=owner.id, role=VaultRole.VIEWER, actor=co.actor
        )
    with pytest.raises(Forbidden):
        await vaults.remove_member(led, user=co.id, vault_id=vid, member=owner.id, actor=co.actor)
    with pytest.raises(Forbidden):
        await vaults.remove_member(
            led, user=owner.id, vault_id=vid, member=owner.id, actor=owner.actor
        )
    # a co-owner manages members
    added = await vaults.set_member(
        led, user=co.id, vault_id=vid, member=member.id, role=VaultRole.CONTRIBUTOR,
        actor=co.actor,
    )  # fmt: skip
    assert added.role is VaultRole.CONTRIBUTOR
    with pytest.raises(Forbidden):  # a contributor does not manage members
        await vaults.remove_member(led, user=member.id, vault_id=vid, member=co.id,
                                   actor=member.actor)  # fmt: skip
    await vaults.move(led, user=member.id, source=member.available, destination=vid,
                      asset=world.asset, amount=50, actor=member.actor)  # fmt: skip
    # demoted to viewer: reads, cannot move any more
    await vaults.set_member(
        led, user=owner.id, vault_id=vid, member=member.id, role=VaultRole.VIEWER,
        actor=owner.actor,
    )  # fmt: skip
    assert (await vaults.get_vault(led, user=member.id, vault_id=vid)).role is VaultRole.VIEWER
    with pytest.raises(Forbidden):
        await vaults.move(led, user=member.id, source=vid, destination=member.available,
                          asset=world.asset, amount=1, actor=member.actor)  # fmt: skip
    # a member may leave; afterwards the vault is invisible to them
    await vaults.remove_member(led, user=member.id, vault_id=vid, member=member.id,
                               actor=member.actor)  # fmt: skip
    with pytest.raises(VaultNotFound):
        await vaults.get_vault(led, user=member.id, vault_id=vid)
    with pytest.raises(VaultMemberNotFound):
        await vaults.remove_member(
            led, user=owner.id, vault_id=vid, member=member.id, actor=owner.actor
        )
    with pytest.raises(UnknownUser):
        await vaults.set_member(
            led, user=owner.id, vault_id=vid, member=uuid.uuid4(), role=VaultRole.VIEWER,
            actor=owner.actor,
        )  # fmt: skip
    assert await posted(led, vid) == 50
    actions = await audit_actions(led, "vault", vid)
    assert [a[0] for a in actions] == [
        "vault.created",
        "vault.member_added",
        "vault.member_added",
        "vault.member_role",
        "vault.member_removed",
    ]
    role_change = actions[3]
    assert role_change[3] == {"member": str(member.id), "role": "CONTRIBUTOR"}
    assert role_change[4] == {"member": str(member.id), "role": "VIEWER"}
    assert actions[4][1] == str(member.id)


async def test_move_idempotency_is_scoped_per_user(world: World) -> None:
    led = world.ledger
    alice, bob = await person(world, 100), await person(world, 100)
    va = await vaults.create_vault(led, user=alice.id, asset=world.asset, name="V", actor=ADMIN)
    vb = await vaults.create_vault(led, user=bob.id, asset=world.asset, name="V", actor=ADMIN)

    async def move(who: Person, vault_id: int, amount: int):
        return await vaults.move(led, user=who.id, source=who.available, destination=vault_id,
                                 asset=world.asset, amount=amount, actor=who.actor,
                                 idempotency_key="k1")  # fmt: skip

    first = await move(alice, va.id, 30)
    again = await move(alice, va.id, 30)
    assert again.replayed and again.operation_id == first.operation_id
    with pytest.raises(IdempotencyConflict):
        await move(alice, va.id, 31)
    other = await move(bob, vb.id, 30)  # bob's "k1" is his own
    assert not other.replayed and other.operation_id != first.operation_id
    assert [await posted(led, a) for a in (alice.available, va.id, vb.id)] == [70, 30, 30]
    with pytest.raises(InsufficientFunds):
        await vaults.move(led, user=alice.id, source=va.id, destination=alice.available,
                          asset=world.asset, amount=31, actor=alice.actor)  # fmt: skip
    assert await posted(led, va.id) == 30


async def test_concurrent_withdrawals_from_a_shared_vault_never_overdraw(world: World) -> None:
    led = world.ledger
    owner, contributor = await person(world, 100), await person(world)
    vault = await vaults.create_vault(
        led, user=owner.id, asset=world.asset, name="Pot", actor=owner.actor
    )
    await vaults.set_member(led, user=owner.id, vault_id=vault.id, member=contributor.id,
                            role=VaultRole.CONTRIBUTOR, actor=owner.actor)  # fmt: skip
    await vaults.move(led, user=owner.id, source=owner.available, destination=vault.id,
                      asset=world.asset, amount=100, actor=owner.actor)  # fmt: skip

    async def withdraw(i: int) -> bool:
        who = owner if i % 2 else contributor
        try:
            await vaults.move(led, user=who.id, source=vault.id, destination=who.available,
                              asset=world.asset, amount=10, actor=who.actor)  # fmt: skip
        except InsufficientFunds:
            return False
        return True

    results = await asyncio.gather(*(withdraw(i) for i in range(25)))
    assert sum(results) == 10
    assert await posted(led, vault.id) == 0
    assert await posted(led, owner.available) + await posted(led, contributor.available) == 100
    assert await world.total() == 0


async def test_forensic_view_pages_through_every_visible_entry(world: World) -> None:
    led = world.ledger
    alice, bob = await person(world, 1_000), await person(world, 1_000)
    mine = await vaults.create_vault(led, user=alice.id, asset=world.asset, name="M", actor=ADMIN)
    bobs = await vaults.create_vault(led, user=bob.id, asset=world.asset, name="B", actor=ADMIN)
    await vaults.set_member(led, user=bob.id, vault_id=bobs.id, member=alice.id,
                            role=VaultRole.VIEWER, actor=bob.actor)  # fmt: skip
    for amount in (10, 20, 30):
        await vaults.move(led, user=alice.id, source=alice.available, destination=mine.id,
                          asset=world.asset, amount=amount, actor=alice.actor)  # fmt: skip
        await vaults.move(led, user=bob.id, source=bob.available, destination=bobs.id,
                          asset=world.asset, amount=amount, actor=bob.actor)  # fmt: skip
    await led.transfer(source=bob.available, destination=alice.available, asset=world.asset,
                       amount=5)  # fmt: skip

    visible = {alice.available, mine.id, bobs.id}
    async with led.engine.connect() as conn:
        expected = [
            tuple(r)
            for r in await conn.execute(
                text(
                    "SELECT seq, account_id, amount, balance_after FROM ledger_entries "
                    "WHERE account_id = ANY(:ids) ORDER BY seq DESC"
                ),
                {"ids": sorted(visible)},
            )
        ]
    assert len(expected) == 1 + 3 * 2 + 3 + 1  # mint, alice's moves, bob's vault, transfer

    seen = []
    cursor = None
    pages = 0
    while True:
        page = await forensic_ledger(led, user=alice.id, before_seq=cursor, limit=3)
        seen.extend(page.entries)
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert pages == 4
    assert [(e.seq, e.account_id, e.amount, e.balance_after) for e in seen] == expected
    by_seq = {e.seq: e for e in seen}
    move_into_bobs = next(e for e in seen if e.account_id == bobs.id)
    assert move_into_bobs.operation_type is OperationType.INTERNAL_MOVE
    assert move_into_bobs.counterparties == (bob.available,)
    assert move_into_bobs.vault_name == "B"
    incoming = next(e for e in seen if e.operation_type is OperationType.TRANSFER)
    assert (incoming.account_id, incoming.amount, incoming.counterparties) == (
        alice.available,
        5,
        (bob.available,),
    )
    assert by_seq[expected[-1][0]].operation_type is OperationType.MINT
    # filters
    only_vault = await forensic_ledger(led, user=alice.id, account_id=mine.id)
    assert [e.amount for e in only_vault.entries] == [30, 20, 10]
    assert (await forensic_ledger(led, user=alice.id, asset="OTHER")).entries == []
    with pytest.raises(ValidationError):
        await forensic_ledger(led, user=alice.id, limit=0)
    # once alice leaves bob's vault, its entries leave her view
    await vaults.remove_member(led, user=alice.id, vault_id=bobs.id, member=alice.id,
                               actor=alice.actor)  # fmt: skip
    after = await forensic_ledger(led, user=alice.id, limit=100)
    assert {e.account_id for e in after.entries} == {alice.available, mine.id}


# -- membership changes racing moves ---------------------------------------------------------
#
# A move must be linearizable with the member changes of its vault: it commits while its
# mover holds a role that may move funds, or fails like a non-member's (nothing moved).
# Observable order: the audit log's ids come from one sequence. A member change draws its
# id after its write to ``vault_members`` and before its COMMIT; a posting draws the id
# of its ``operation.posted`` record before its COMMIT. So a posting that committed
# before a removal did has the smaller id, and every committed move of a member must
# come, by audit id, inside one of their membership windows.


async def member_windows(led: Ledger, vault_id: int, member: uuid.UUID) -> list[tuple[int, bool]]:
    """(audit id, may move afterwards) of every change of ``member``'s role in the vault."""
    changes = []
    for audit_id, action, before, after in await audit_rows(led, vault_id):
        if action in {"vault.member_added", "vault.member_role"} and after["member"] == str(member):
            changes.append((audit_id, VaultRole(after["role"]) in vaults.MOVER_ROLES))
        elif action == "vault.member_removed" and before["member"] == str(member):
            changes.append((audit_id, False))
    return changes


async def audit_rows(led: Ledger, vault_id: int) -> list[tuple]:
    async with led.engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT id, action, before, after FROM audit_log "
                "WHERE entity_type = 'vault' AND entity_id = :v ORDER BY id"
            ),
            {"v": str(vault_id)},
        )
        return [tuple(r) for r in rows]


async def committed_moves(led: Ledger, mover: uuid.UUID) -> dict[int, int]:
    """operation id -> audit id of every INTERNAL_MOVE ``mover`` committed."""
    async with led.engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT id, audit_id FROM operations WHERE type = 'INTERNAL_MOVE' "
                "AND status = 'COMPLETED' AND metadata->>'moved_by' = :u"
            ),
            {"u": str(mover)},
        )
        return {r.id: r.audit_id for r in rows}


async def net_by_account(led: Ledger, operation_ids: list[int]) -> dict[int, int]:
    async with led.engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT e.account_id, sum(e.amount) AS net FROM operations o "
                "JOIN ledger_entries e ON e.seq BETWEEN o.first_seq AND o.last_seq "
                "AND e.operation_id = o.id WHERE o.id = ANY(:ids) GROUP BY e.account_id"
            ),
            {"ids": operation_ids},
        )
        return {r.account_id: int(r.net) for r in rows}


async def assert_none_late(led: Ledger, vault_id: int, mover: uuid.UUID) -> None:
    """Every committed move of ``mover`` comes (by audit id) after a change that let them
    move and before the next change."""
    windows = await member_windows(led, vault_id, mover)
    late = []
    for operation_id, audit_id in sorted((await committed_moves(led, mover)).items()):
        earlier = [may for change_id, may in windows if change_id < audit_id]
        if not (earlier and earlier[-1]):
            late.append((operation_id, audit_id))
    assert late == [], (
        f"moves committed after {mover} lost the right to move (operation, audit id): "
        f"{late}; membership changes (audit id, may move): {windows}"
    )


async def assert_moves_linearizable(
    world: World,
    vault_id: int,
    mover: Person,
    outcomes: list[tuple[object, type[LedgerError]]],
    balances_before: dict[int, int],
) -> None:
    """From the database: every committed move of ``mover`` lies inside one of their
    membership windows; each call either committed (and returned that operation) or
    failed with the member error (and moved nothing); value is conserved."""
    led = world.ledger
    await assert_none_late(led, vault_id, mover.id)
    moves = await committed_moves(led, mover.id)
    returned = set()
    for outcome, member_error in outcomes:
        if isinstance(outcome, OperationResult):
            returned.add(outcome.operation_id)
        else:
            # exactly what a non-member (UNKNOWN_ACCOUNT) or a viewer (FORBIDDEN) gets
            assert type(outcome) is member_error, outcome
            assert isinstance(outcome, LedgerError)
            assert outcome.details["account_id"] == vault_id
    assert returned == set(moves), "a failed move committed, or a committed one was not seen"
    # funds moved by exactly the committed operations, and nothing was created or lost
    net = await net_by_account(led, sorted(moves))
    for account_id, before in balances_before.items():
        assert await posted(led, account_id) == before + net.get(account_id, 0)
    assert sum(net.values()) == 0
    assert await world.total() == 0


async def move_once(
    world: World, who: Person, vault_id: int, i: int
) -> OperationResult | LedgerError:
    """Move 1-3 units into (even ``i``) or out of (odd) the vault; the error if refused."""
    into = i % 2 == 0
    try:
        return await vaults.move(
            world.ledger, user=who.id, source=who.available if into else vault_id,
            destination=vault_id if into else who.available, asset=world.asset,
            amount=1 + i % 3, actor=who.actor,
        )  # fmt: skip
    except LedgerError as err:
        return err


async def test_a_removal_waits_for_the_moves_in_flight(
    shared: tuple[World, dict[str, Person], int], database_url: str
) -> None:
    """Forced interleaving: the contributor's moves have passed the membership check and
    their batch is blocked (the vault's balance row is held by another connection) when
    the owner removes the contributor. The removal must wait for those moves; before the
    fix it committed at once and the moves committed after it."""
    world, people, vault_id = shared
    led = world.ledger
    owner, contributor = people["owner"], people["contributor"]
    accounts = (vault_id, contributor.available)
    before = {a: await posted(led, a) for a in accounts}
    blocker = await raw_connect(database_url)
    try:
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute("SELECT 1 FROM balances WHERE account_id = $1 FOR UPDATE", vault_id)
        moves = [asyncio.create_task(move_once(world, contributor, vault_id, i)) for i in range(6)]
        # the batch carrying (some of) the moves waits for the vault's balance row
        assert await blocked_backend(database_url, moves[0], "%valueos_lock_balances%")
        removal = asyncio.create_task(
            vaults.remove_member(led, user=owner.id, vault_id=vault_id,
                                 member=contributor.id, actor=owner.actor)
        )  # fmt: skip
        # fixed: the removal waits for the moves in flight (on the membership's advisory
        # lock, before its DELETE); before the fix it committed at once
        await blocked_backend(database_url, removal, "%pg_advisory_xact_lock(%")
        await tx.rollback()
        outcomes = await asyncio.gather(*moves)
        await removal
    finally:
        await blocker.close()
    assert any(isinstance(o, OperationResult) for o in outcomes)
    await assert_moves_linearizable(
        world, vault_id, contributor, [(o, UnknownAccount) for o in outcomes], before
    )


async def test_a_cancelled_move_holds_the_membership_until_its_posting_ends(
    shared: tuple[World, dict[str, Person], int], database_url: str
) -> None:
    """The batcher commits a posting whose caller was cancelled: the cancelled move must
    still keep a removal waiting until its posting has ended."""
    world, people, vault_id = shared
    led = world.ledger
    owner, contributor = people["owner"], people["contributor"]
    blocker = await raw_connect(database_url)
    try:
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute("SELECT 1 FROM balances WHERE account_id = $1 FOR UPDATE", vault_id)
        moving = asyncio.create_task(move_once(world, contributor, vault_id, 0))
        assert await blocked_backend(database_url, moving, "%valueos_lock_balances%")
        moving.cancel()
        removal = asyncio.create_task(
            vaults.remove_member(led, user=owner.id, vault_id=vault_id,
                                 member=contributor.id, actor=owner.actor)
        )  # fmt: skip
        await blocked_backend(database_url, removal, "%pg_advisory_xact_lock(%")
        await tx.rollback()
        with pytest.raises(asyncio.CancelledError):
            await moving
        await removal
    finally:
        await blocker.close()
    # the posting committed (its caller was gone), and before the removal
    assert len(await committed_moves(led, contributor.id)) == 1
    await assert_none_late(led, vault_id, contributor.id)
    assert await posted(led, vault_id) == 500 + 1
    assert await world.total() == 0


async def test_a_move_whose_check_connection_dies_after_posting_keeps_its_result(
    shared: tuple[World, dict[str, Person], int], database_url: str
) -> None:
    """The connection holding the membership is killed while the posting waits: the
    posting still commits, and the caller gets its result, not the connection's error."""
    world, people, vault_id = shared
    contributor = people["contributor"]
    blocker = await raw_connect(database_url)
    try:
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute("SELECT 1 FROM balances WHERE account_id = $1 FOR UPDATE", vault_id)
        moving = asyncio.create_task(move_once(world, contributor, vault_id, 0))
        assert await blocked_backend(database_url, moving, "%valueos_lock_balances%")
        killed = await blocker.fetchval(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND state = 'idle in transaction' "
            "AND query LIKE '%FOR SHARE'"
        )
        assert killed
        await tx.rollback()
        moved = await moving
    finally:
        await blocker.close()
    assert isinstance(moved, OperationResult)
    assert set(await committed_moves(world.ledger, contributor.id)) == {moved.operation_id}
    assert await posted(world.ledger, vault_id) == 500 + 1


async def test_moves_racing_removals_and_demotions(
    shared: tuple[World, dict[str, Person], int],
) -> None:
    """Many concurrent moves by a contributor while an owner removes them (or demotes them
    to VIEWER), round after round: no move commits once the change has committed."""
    world, people, vault_id = shared
    led = world.ledger
    owner, contributor = people["owner"], people["contributor"]
    accounts = (vault_id, contributor.available)
    before = {a: await posted(led, a) for a in accounts}
    outcomes: list[tuple[object, type[LedgerError]]] = []
    moves_per_round = 30
    for round_ in range(8):
        demote = round_ % 2 == 1
        if round_:  # a contributor again (re-added after a removal, promoted after a demotion)
            await vaults.set_member(led, user=owner.id, vault_id=vault_id, member=contributor.id,
                                    role=VaultRole.CONTRIBUTOR, actor=owner.actor)  # fmt: skip
        revoke = (
            vaults.set_member(led, user=owner.id, vault_id=vault_id, member=contributor.id,
                              role=VaultRole.VIEWER, actor=owner.actor)
            if demote
            else vaults.remove_member(led, user=owner.id, vault_id=vault_id,
                                      member=contributor.id, actor=owner.actor)
        )  # fmt: skip
        # the change starts among the moves, at a different place each round
        at = 4 + round_ * 3
        calls = [move_once(world, contributor, vault_id, i) for i in range(moves_per_round)]
        results = await asyncio.gather(*calls[:at], revoke, *calls[at:])
        del results[at]
        outcomes += [(r, Forbidden if demote else UnknownAccount) for r in results]
    assert any(isinstance(o, OperationResult) for o, _ in outcomes)
    assert any(isinstance(o, LedgerError) for o, _ in outcomes)
    await assert_moves_linearizable(world, vault_id, contributor, outcomes, before)
