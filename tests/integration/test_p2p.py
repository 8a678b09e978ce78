"""P2P requests against the real PostgreSQL: transitions, permissions, exactly-once
settlement under concurrency and after a crash, expiry."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from core import p2p
from core.errors import (
    Forbidden,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidAmount,
    LedgerError,
    P2PRequestExpired,
    P2PRequestNotFound,
    P2PRequestNotPending,
    UnknownAsset,
    UnknownUser,
    ValidationError,
)
from core.forensics import forensic_ledger
from core.ledger import Ledger
from core.p2p import P2PStatus
from core.types import OperationType
from tests.conftest import ADMIN, World
from tests.integration.test_vaults import Person, audit_actions, person, posted
from tests.support import raw_connect, wait_until_blocked

pytestmark = pytest.mark.integration


async def db_now(led: Ledger) -> datetime:
    async with led.engine.connect() as conn:
        return (await conn.execute(text("SELECT clock_timestamp()"))).scalar_one()


async def request(
    world: World, requester: Person, payer: Person, amount: int = 100, **kw
) -> p2p.P2PRequest:
    return await p2p.create_request(
        world.ledger, user=requester.id, payer=payer.id, asset=world.asset, amount=amount,
        actor=requester.actor, **kw,
    )  # fmt: skip


async def settlements_of(led: Ledger, request_id: int) -> int:
    """Operations that pay this request (must never exceed 1)."""
    async with led.engine.connect() as conn:
        return (
            await conn.execute(
                text(
                    "SELECT count(*) FROM operations WHERE type = 'P2P_SETTLEMENT' "
                    "AND status = 'COMPLETED' AND (metadata->>'p2p_request')::bigint = :id"
                ),
                {"id": request_id},
            )
        ).scalar_one()


async def backdate(led: Ledger, request_id: int) -> None:
    """Move a request's deadline into the past (instead of waiting for it)."""
    async with led.engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE p2p_requests SET expires_at = clock_timestamp() - interval '1 second' "
                "WHERE id = :id"
            ),
            {"id": request_id},
        )


async def test_settle_pays_once_and_is_audited(world: World) -> None:
    led = world.ledger
    requester, payer = await person(world), await person(world, 500)
    created = await request(world, requester, payer, 120, memo="pizza")
    assert (created.status, created.amount, created.memo) == (P2PStatus.PENDING, 120, "pizza")

    done = await p2p.settle(led, user=payer.id, request_id=created.id, actor=payer.actor)
    assert done.request.status is P2PStatus.SETTLED
    assert done.request.operation_id == done.operation.operation_id
    assert done.operation.type is OperationType.P2P_SETTLEMENT
    assert [(e.account_id, e.amount) for e in done.operation.entries] == [
        (payer.available, -120),
        (requester.available, 120),
    ]
    assert [await posted(led, a) for a in (payer.available, requester.available)] == [380, 120]
    for again in (
        p2p.settle(led, user=payer.id, request_id=created.id, actor=payer.actor),
        p2p.decline(led, user=payer.id, request_id=created.id, actor=payer.actor),
        p2p.cancel(led, user=requester.id, request_id=created.id, actor=requester.actor),
    ):
        with pytest.raises(P2PRequestNotPending) as caught:
            await again
        assert caught.value.code == "P2P_REQUEST_NOT_PENDING"
        assert caught.value.details["status"] == "SETTLED"
    assert await settlements_of(led, created.id) == 1
    actions = await audit_actions(led, "p2p_request", created.id)
    assert [a[0] for a in actions] == ["p2p.created", "p2p.settling", "p2p.settled"]
    assert actions[0][1:3] == (str(requester.id), "203.0.113.7")
    assert actions[2][1] == str(payer.id)
    assert actions[2][3] == {"status": "SETTLING", "attempt": 0}
    assert actions[2][4] == {"status": "SETTLED", "operation_id": done.operation.operation_id}
    # both parties see it in their forensic ledger, with the other side as counterparty
    mine = (await forensic_ledger(led, user=requester.id)).entries[0]
    assert (mine.operation_type, mine.amount, mine.counterparties) == (
        OperationType.P2P_SETTLEMENT,
        120,
        (payer.available,),
    )
    assert await world.total() == 0


async def test_twenty_concurrent_settles_pay_exactly_once(world: World) -> None:
    led = world.ledger
    requester, payer = await person(world), await person(world, 1_000)
    created = await request(world, requester, payer, 250)

    async def attempt() -> p2p.Settlement | LedgerError:
        try:
            return await p2p.settle(led, user=payer.id, request_id=created.id, actor=payer.actor)
        except LedgerError as err:
            return err

    outcomes = await asyncio.gather(*(attempt() for _ in range(20)))
    wins = [o for o in outcomes if isinstance(o, p2p.Settlement)]
    losses = [o for o in outcomes if isinstance(o, LedgerError)]
    assert len(wins) == 1
    assert {type(e) for e in losses} == {P2PRequestNotPending}
    assert len(losses) == 19
    assert await settlements_of(led, created.id) == 1
    assert [await posted(led, a) for a in (payer.available, requester.available)] == [750, 250]
    final = await p2p.get_request(led, user=payer.id, request_id=created.id)
    assert (final.status, final.operation_id) == (
        P2PStatus.SETTLED,
        wins[0].operation.operation_id,
    )
    assert await world.total() == 0


async def test_settle_decline_and_cancel_racing_have_one_winner(world: World) -> None:
    led = world.ledger
    for _ in range(3):
        requester, payer = await person(world), await person(world, 100)
        created = await request(world, requester, payer, 100)

        async def run(call) -> str:
            try:
                await call
            except LedgerError as err:
                return err.code
            return "OK"

        calls = []
        for i in range(18):
            if i % 3 == 0:
                calls.append(p2p.settle(led, user=payer.id, request_id=created.id,
                                        actor=payer.actor))  # fmt: skip
            elif i % 3 == 1:
                calls.append(p2p.decline(led, user=payer.id, request_id=created.id,
                                         actor=payer.actor))  # fmt: skip
            else:
                calls.append(p2p.cancel(led, user=requester.id, request_id=created.id,
                                        actor=requester.actor))  # fmt: skip
        codes = await asyncio.gather(*(run(c) for c in calls))
        assert codes.count("OK") == 1
        assert set(codes) == {"OK", "P2P_REQUEST_NOT_PENDING"}
        final = await p2p.get_request(led, user=payer.id, request_id=created.id)
        paid = await settlements_of(led, created.id)
        assert paid == (1 if final.status is P2PStatus.SETTLED else 0)
        assert await posted(led, requester.available) == 100 * paid
    assert await world.total() == 0


async def test_parties_and_outsiders(world: World) -> None:
    led = world.ledger
    requester, payer, outsider = await person(world), await person(world, 100), await person(world)
    created = await request(world, requester, payer, 10)
    for call in (
        p2p.get_request(led, user=outsider.id, request_id=created.id),
        p2p.settle(led, user=outsider.id, request_id=created.id, actor=outsider.actor),
        p2p.decline(led, user=outsider.id, request_id=created.id, actor=outsider.actor),
        p2p.cancel(led, user=outsider.id, request_id=created.id, actor=outsider.actor),
        p2p.get_request(led, user=outsider.id, request_id=10**12),
    ):
        with pytest.raises(P2PRequestNotFound):
            await call
    # the other party knows the request exists: 403
    for call in (
        p2p.settle(led, user=requester.id, request_id=created.id, actor=requester.actor),
        p2p.decline(led, user=requester.id, request_id=created.id, actor=requester.actor),
        p2p.cancel(led, user=payer.id, request_id=created.id, actor=payer.actor),
    ):
        with pytest.raises(Forbidden):
            await call
    assert (await p2p.get_request(led, user=requester.id, request_id=created.id)).status is (
        P2PStatus.PENDING
    )
    assert await posted(led, payer.available) == 100
    assert (await p2p.list_requests(led, user=outsider.id)).requests == []
    incoming = await p2p.list_requests(led, user=payer.id, role="payer")
    outgoing = await p2p.list_requests(led, user=payer.id, role="requester")
    assert ([r.id for r in incoming.requests], outgoing.requests) == ([created.id], [])


async def test_decline_and_cancel_are_terminal(world: World) -> None:
    led = world.ledger
    requester, payer = await person(world), await person(world, 100)
    first = await request(world, requester, payer, 10)
    second = await request(world, requester, payer, 20)
    declined = await p2p.decline(
        led, user=payer.id, request_id=first.id, actor=payer.actor, reason="not mine"
    )
    cancelled = await p2p.cancel(led, user=requester.id, request_id=second.id,
                                 actor=requester.actor)  # fmt: skip
    assert (declined.status, cancelled.status) == (P2PStatus.DECLINED, P2PStatus.CANCELLED)
    for request_id, status in ((first.id, "DECLINED"), (second.id, "CANCELLED")):
        with pytest.raises(P2PRequestNotPending) as caught:
            await p2p.settle(led, user=payer.id, request_id=request_id, actor=payer.actor)
        assert caught.value.details["status"] == status
    with pytest.raises(P2PRequestNotPending):
        await p2p.cancel(led, user=requester.id, request_id=first.id, actor=requester.actor)
    assert await posted(led, payer.available) == 100
    actions = await audit_actions(led, "p2p_request", first.id)
    assert actions[-1][0] == "p2p.declined"
    assert (actions[-1][3]["status"], actions[-1][4]["status"]) == ("PENDING", "DECLINED")
    # pagination over the payer's requests, newest first
    page1 = await p2p.list_requests(led, user=payer.id, limit=1)
    page2 = await p2p.list_requests(led, user=payer.id, limit=1, before_id=page1.next_cursor)
    assert [r.id for r in page1.requests + page2.requests] == [second.id, first.id]
    assert page2.next_cursor is None
    only = await p2p.list_requests(led, user=payer.id, status=P2PStatus.DECLINED)
    assert [r.id for r in only.requests] == [first.id]


async def test_expiry(world: World) -> None:
    led = world.ledger
    requester, payer = await person(world), await person(world, 100)
    later = await db_now(led) + timedelta(hours=1)
    with pytest.raises(ValidationError):
        await request(world, requester, payer, expires_at=later - timedelta(hours=2))
    lapsed = await request(world, requester, payer, 10, expires_at=later)
    due = await request(world, requester, payer, 10, expires_at=later)
    kept = await request(world, requester, payer, 10, expires_at=later)
    await backdate(led, lapsed.id)
    await backdate(led, due.id)

    # settling a request past its deadline fails, and records the expiry
    with pytest.raises(P2PRequestExpired) as caught:
        await p2p.settle(led, user=payer.id, request_id=lapsed.id, actor=payer.actor)
    assert caught.value.code == "P2P_REQUEST_EXPIRED"
    assert (await p2p.get_request(led, user=payer.id, request_id=lapsed.id)).status is (
        P2PStatus.EXPIRED
    )
    # the job expires what is due (other tests' requests may be due too) and nothing else
    assert await p2p.expire_due(led) >= 1
    statuses = [
        (await p2p.get_request(led, user=payer.id, request_id=r.id)).status for r in (due, kept)
    ]
    assert statuses == [P2PStatus.EXPIRED, P2PStatus.PENDING]
    for call in (
        p2p.settle(led, user=payer.id, request_id=due.id, actor=payer.actor),
        p2p.decline(led, user=payer.id, request_id=due.id, actor=payer.actor),
        p2p.cancel(led, user=requester.id, request_id=due.id, actor=requester.actor),
    ):
        with pytest.raises(P2PRequestExpired):
            await call
    assert await settlements_of(led, due.id) == 0
    assert await posted(led, payer.available) == 100
    assert [a[0] for a in await audit_actions(led, "p2p_request", due.id)][-1] == "p2p.expired"
    await p2p.settle(led, user=payer.id, request_id=kept.id, actor=payer.actor)
    assert await posted(led, requester.available) == 10


async def test_refused_settlement_reopens_with_a_fresh_key(world: World) -> None:
    led = world.ledger
    requester, payer = await person(world), await person(world, 50)
    created = await request(world, requester, payer, 80)
    with pytest.raises(InsufficientFunds):
        await p2p.settle(led, user=payer.id, request_id=created.id, actor=payer.actor)
    reopened = await p2p.get_request(led, user=payer.id, request_id=created.id)
    assert (reopened.status, reopened.attempt) == (P2PStatus.PENDING, 1)
    # once funded, settling works: the remembered failure of attempt 0 is not replayed
    await led.transfer(source=world.issuance, destination=payer.available, asset=world.asset,
                       amount=50, type_=OperationType.MINT)  # fmt: skip
    done = await p2p.settle(led, user=payer.id, request_id=created.id, actor=payer.actor)
    assert done.request.status is P2PStatus.SETTLED
    assert [await posted(led, a) for a in (payer.available, requester.available)] == [20, 80]
    actions = [a[0] for a in await audit_actions(led, "p2p_request", created.id)]
    assert actions == [
        "p2p.created",
        "p2p.settling",
        "p2p.settle_failed",
        "p2p.settling",
        "p2p.settled",
    ]


async def claim_as_crashed_settler(led: Ledger, request_id: int) -> p2p.P2PRequest:
    """What a settler leaves behind when it dies right after its claim committed."""
    async with led.engine.begin() as conn:
        await conn.execute(
            text("UPDATE p2p_requests SET status = 'SETTLING' WHERE id = :id"), {"id": request_id}
        )
    async with led.engine.connect() as conn:
        row = (
            await conn.execute(
                text(f"SELECT {p2p._COLUMNS} FROM p2p_requests WHERE id = :id"),
                {"id": request_id},
            )
        ).one()
    return p2p._request(row)


async def test_settlement_interrupted_by_a_crash_completes_once(
    world: World, database_url: str
) -> None:
    led = world.ledger
    requester, payer = await person(world), await person(world, 1_000)
    # crash after the posting committed, before the request was marked SETTLED
    posted_first = await request(world, requester, payer, 100)
    claimed = await claim_as_crashed_settler(led, posted_first.id)
    command = await p2p.settlement_command(led, claimed, payer.actor)
    paid = await led.post(command)
    # crash right after the claim, before posting
    not_posted = await request(world, requester, payer, 200)
    await claim_as_crashed_settler(led, not_posted.id)
    # while SETTLING, nobody else can act on them
    for request_id in (posted_first.id, not_posted.id):
        with pytest.raises(P2PRequestNotPending):
            await p2p.settle(led, user=payer.id, request_id=request_id, actor=payer.actor)
        with pytest.raises(P2PRequestNotPending):
            await p2p.cancel(led, user=requester.id, request_id=request_id,
                             actor=requester.actor)  # fmt: skip

    # the recovery job, twice and truly at once, finishes both, paying each exactly once:
    # a blocker holds both request rows locked, so both runs read the two SETTLING requests,
    # post (or replay) the first payment and queue on its row before either marks it SETTLED
    blocker = await raw_connect(database_url)
    tx = blocker.transaction()
    await tx.start()
    try:
        await blocker.execute(
            "SELECT 1 FROM p2p_requests WHERE id = ANY($1::bigint[]) FOR UPDATE",
            [posted_first.id, not_posted.id],
        )
        runs = [
            asyncio.create_task(p2p.resume_settling(led, older_than=timedelta(0))) for _ in range(2)
        ]
        await wait_until_blocked(database_url, runs, "%UPDATE p2p_requests%", 2)
    finally:
        await tx.rollback()
        await blocker.close()
    counts = await asyncio.gather(*runs)
    assert counts == [2, 2]  # each run saw both requests SETTLING and left them SETTLED
    first = await p2p.get_request(led, user=payer.id, request_id=posted_first.id)
    second = await p2p.get_request(led, user=payer.id, request_id=not_posted.id)
    assert (first.status, first.operation_id) == (P2PStatus.SETTLED, paid.operation_id)
    assert second.status is P2PStatus.SETTLED
    assert await settlements_of(led, posted_first.id) == 1
    assert await settlements_of(led, not_posted.id) == 1
    assert [await posted(led, a) for a in (payer.available, requester.available)] == [700, 300]
    assert await p2p.resume_settling(led, older_than=timedelta(0)) == 0
    for request_id in (posted_first.id, not_posted.id):
        actions = [a[0] for a in await audit_actions(led, "p2p_request", request_id)]
        assert actions.count("p2p.settled") == 1, actions
    assert await world.total() == 0


async def test_database_refuses_illegal_transitions(world: World) -> None:
    led = world.ledger
    requester, payer = await person(world), await person(world, 100)
    created = await request(world, requester, payer, 10)
    done = await p2p.settle(led, user=payer.id, request_id=created.id, actor=payer.actor)
    assert done.request.status is P2PStatus.SETTLED
    for statement in (
        "UPDATE p2p_requests SET status = 'PENDING', operation_id = NULL WHERE id = :id",
        "UPDATE p2p_requests SET amount = 1 WHERE id = :id",
        "DELETE FROM p2p_requests WHERE id = :id",
    ):
        with pytest.raises(DBAPIError):
            async with led.engine.begin() as conn:
                await conn.execute(text(statement), {"id": created.id})
    pending = await request(world, requester, payer, 10)
    with pytest.raises(DBAPIError, match="not allowed"):
        async with led.engine.begin() as conn:
            await conn.execute(  # skipping the claim: PENDING -> SETTLED
                text("UPDATE p2p_requests SET status = 'SETTLED', operation_id = :op "
                     "WHERE id = :id"),
                {"op": done.operation.operation_id, "id": pending.id},
            )  # fmt: skip
    assert (await p2p.get_request(led, user=payer.id, request_id=pending.id)).status is (
        P2PStatus.PENDING
    )


async def test_create_validation_and_idempotency(world: World, database_url: str) -> None:
    led = world.ledger
    requester, payer, other = await person(world), await person(world), await person(world)
    for kwargs, error in (
        ({"amount": 0}, InvalidAmount),
        ({"amount": -5}, InvalidAmount),
        ({"memo": "x" * 281}, ValidationError),
        ({"expires_at": datetime(2030, 1, 1)}, ValidationError),  # naive on purpose
    ):
        with pytest.raises(error):
            await request(world, requester, payer, **({"amount": 1} | kwargs))
    with pytest.raises(ValidationError):
        await request(world, requester, requester, 1)
    with pytest.raises(UnknownUser):
        await p2p.create_request(led, user=requester.id, payer=uuid.uuid4(), asset=world.asset,
                                 amount=1, actor=ADMIN)  # fmt: skip
    with pytest.raises(UnknownAsset):
        await p2p.create_request(led, user=requester.id, payer=payer.id, asset="NOPE", amount=1,
                                 actor=ADMIN)  # fmt: skip

    # two creates under a fresh key, truly concurrent: a blocker's uncommitted row holds
    # the key, so both reach the insert and queue on the key's unique index before either
    # commits; once it rolls back exactly one creates, the other answers that same request
    blocker = await raw_connect(database_url)
    tx = blocker.transaction()
    await tx.start()
    try:
        await blocker.execute(
            "INSERT INTO p2p_requests (requester_id, payer_id, asset, amount, idempotency_key, "
            "request_hash) VALUES ($1, $2, $3, 42, 'r1', '\\x00')",
            requester.id, payer.id, world.asset,
        )  # fmt: skip
        creates = [
            asyncio.create_task(request(world, requester, payer, 42, idempotency_key="r1"))
            for _ in range(2)
        ]
        await wait_until_blocked(database_url, creates, "%INSERT INTO p2p_requests%", 2)
    finally:
        await tx.rollback()
        await blocker.close()
    one, two = await asyncio.gather(*creates)
    assert one.id == two.id and sorted([one.replayed, two.replayed]) == [False, True]
    first = one if not one.replayed else two
    again = await request(world, requester, payer, 42, idempotency_key="r1")
    assert again.replayed and again.id == first.id
    with pytest.raises(IdempotencyConflict):
        await request(world, requester, payer, 43, idempotency_key="r1")
    theirs = await request(world, other, payer, 42, idempotency_key="r1")
    assert theirs.id != first.id
    listed = await p2p.list_requests(led, user=payer.id, role="payer", limit=10)
    assert sorted(r.id for r in listed.requests) == sorted([first.id, theirs.id])
