"""The lean write path (migration 0006): set-based reference checks, protected parents,
one audit record per actor and reason of a batch, binary COPY killed mid-statement."""

import asyncio
from collections.abc import Iterator
from datetime import datetime

import asyncpg
import pytest
from sqlalchemy import text

from core import repository
from core.errors import LedgerError
from core.planner import Plan
from core.types import (
    AccountKind,
    Actor,
    OperationResult,
    OperationType,
    PostOperation,
    ReverseOperation,
    Role,
    transfer_legs,
)
from tests.conftest import ADMIN, World
from tests.support import raw_connect, terminate_when_blocked

pytestmark = pytest.mark.integration


async def test_entries_and_operations_references_are_checked(
    world: World, database_url: str
) -> None:
    alice = await world.funded(10)
    conn = await raw_connect(database_url)
    try:
        op = await conn.fetchval("SELECT max(id) FROM operations")
        entry = (
            "INSERT INTO ledger_entries (seq, operation_id, account_id, asset, amount, "
            "balance_after, epoch, created_at) "
            "VALUES (nextval('ledger_seq'), $1, $2, 'X', 1, 1, 1, now())"
        )
        with pytest.raises(asyncpg.ForeignKeyViolationError) as missing_op:
            await conn.execute(entry, op + 1_000_000, alice)
        assert missing_op.value.constraint_name == "ledger_entries_operation_id_fkey"
        # an existing operation, but the new seq lies outside its range (migration 0008)
        with pytest.raises(asyncpg.ForeignKeyViolationError) as outside:
            await conn.execute(entry, op, alice)
        assert outside.value.constraint_name == "ledger_entries_operation_id_fkey"
        # one statement may insert an operation and its entries together (as the write
        # path does); each attempt is rolled back so the reconciler never sees it
        together = (
            "WITH s AS (SELECT nextval('ledger_seq') AS seq), "
            "o AS (INSERT INTO operations (id, type, status, epoch, actor_id, actor_role, "
            "created_at, first_seq, last_seq) SELECT nextval('operations_id_seq') + 1000000, "
            "'TRANSFER', 'COMPLETED', 1, 'x', 'SYSTEM', now(), s.seq, s.seq FROM s "
            "RETURNING id, first_seq) "
            "INSERT INTO ledger_entries (seq, operation_id, account_id, asset, amount, "
            "balance_after, epoch, created_at) "
            "SELECT o.first_seq, o.id, $1, 'X', 1, 1, $2, now() FROM o"
        )
        for account, epoch, error, code in [
            (alice + 1_000_000, 1, asyncpg.ForeignKeyViolationError, "23503"),
            (alice, 2, asyncpg.PostgresError, "VO003"),  # not the open epoch
            (alice, 1, None, None),
        ]:
            tx = conn.transaction()
            await tx.start()
            try:
                if error is None:
                    await conn.execute(together, account, epoch)
                else:
                    with pytest.raises(error) as failed:
                        await conn.execute(together, account, epoch)
                    assert failed.value.sqlstate == code
            finally:
                await tx.rollback()
        with pytest.raises(asyncpg.ForeignKeyViolationError) as missing_epoch:
            await conn.execute(
                "INSERT INTO operations (id, type, status, epoch, actor_id, actor_role, "
                "created_at) VALUES (nextval('operations_id_seq'), 'TRANSFER', 'COMPLETED', "
                "999999, 'x', 'SYSTEM', now())"
            )
        assert missing_epoch.value.constraint_name == "operations_epoch_fkey"
    finally:
        await conn.close()


async def test_referenced_parents_cannot_disappear(world: World, database_url: str) -> None:
    alice = await world.funded(10)
    conn = await raw_connect(database_url)
    try:
        for statement in (
            "DELETE FROM accounts WHERE id = $1",
            "UPDATE accounts SET id = DEFAULT WHERE id = $1",
            "DELETE FROM epochs WHERE id = $1::bigint - $1 + 1",
        ):
            with pytest.raises(asyncpg.PostgresError, match="referenced by the ledger"):
                await conn.execute(statement, alice)
        for table in ("accounts", "epochs"):
            with pytest.raises(asyncpg.PostgresError, match="referenced by the ledger"):
                await conn.execute(f"TRUNCATE {table} CASCADE")
        # other updates stay allowed (freezing an account, sealing an epoch)
        async with conn.transaction():
            await conn.execute("UPDATE accounts SET status = 'FROZEN' WHERE id = $1", alice)
            await conn.execute("UPDATE accounts SET status = 'ACTIVE' WHERE id = $1", alice)
    finally:
        await conn.close()


async def test_one_audit_record_per_actor_and_reason_of_a_batch(world: World) -> None:
    alice = await world.funded(100)
    bob = (await world.user_wallet())[AccountKind.AVAILABLE]
    carol = Actor("carol", Role.USER, ip="10.0.0.7")

    def move(actor: Actor, reason: str | None = None) -> PostOperation:
        return PostOperation(
            OperationType.TRANSFER,
            transfer_legs(alice, bob, world.asset, 1),
            actor=actor,
            reason=reason,
        )

    results = await world.ledger.post_many(
        [move(ADMIN), move(carol), move(ADMIN), move(ADMIN, "refund"), move(carol)]
    )
    ops = [r.operation_id for r in results if isinstance(r, OperationResult)]
    assert len(ops) == 5
    async with world.ledger.engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT o.id, a.actor_id, a.actor_role, a.ip, a.action, a.entity_type, "
                    "a.entity_id, a.reason, a.after FROM operations o "
                    "JOIN audit_log a ON a.id = o.audit_id WHERE o.id = ANY(:ids) ORDER BY o.id"
                ),
                {"ids": ops},
            )
        ).all()
    assert [r.id for r in rows] == ops  # every operation points at its audit record
    by_op = {r.id: r for r in rows}
    admin_plain = by_op[ops[0]]
    assert tuple(by_op[ops[2]])[1:] == tuple(admin_plain)[1:]  # the same record
    assert admin_plain.after == {"operations": [ops[0], ops[2]]}
    assert (admin_plain.actor_id, admin_plain.reason) == (ADMIN.id, None)
    assert admin_plain.entity_type == "operation" and admin_plain.entity_id == str(ops[0])
    refund = by_op[ops[3]]
    assert refund.reason == "refund" and refund.after == {"operations": [ops[3]]}
    assert refund.entity_id == str(ops[3])
    by_carol = by_op[ops[1]]
    assert (by_carol.actor_id, by_carol.actor_role, by_carol.ip) == ("carol", "USER", "10.0.0.7")
    assert by_carol.after == {"operations": [ops[1], ops[4]]}
    assert by_carol.action == admin_plain.action == "operation.posted"


async def test_killed_during_a_copy_leaves_nothing(world: World, database_url: str) -> None:
    """Block a batch inside its binary COPY of operations (the reversal's unique index
    waits on an uncommitted reversal of the same operation), kill its backend there, and
    check nothing of the batch persisted."""
    alice = await world.funded(1_000)
    bob = (await world.user_wallet())[AccountKind.AVAILABLE]
    original = await world.ledger.transfer(
        source=alice, destination=bob, asset=world.asset, amount=1
    )
    blocker = await raw_connect(database_url)
    tx = blocker.transaction()
    await tx.start()
    await blocker.execute(
        "INSERT INTO operations (id, type, status, epoch, actor_id, actor_role, reverses_id, "
        "created_at) VALUES (nextval('operations_id_seq'), 'REVERSAL', 'COMPLETED', 1, 'x', "
        "'SYSTEM', $1, now())",
        original.operation_id,
    )
    batch: list = [
        PostOperation(OperationType.TRANSFER, transfer_legs(alice, bob, world.asset, 5))
        for _ in range(150)  # big enough for the COPY path (small batches: one statement)
    ]
    batch.append(ReverseOperation(original.operation_id, "test", ADMIN))
    task = asyncio.create_task(world.ledger.post_many(batch))
    try:
        # blocked inside the COPY of operations (on the reversal's unique key)
        await terminate_when_blocked(database_url, task, "COPY%operations%")
        results = await task
    finally:
        await tx.rollback()
        await blocker.close()
    assert all(isinstance(r, LedgerError) and r.code == "STORAGE_ERROR" for r in results)
    assert (await world.ledger.queries.balance(alice)).posted == 999
    assert (await world.ledger.queries.balance(bob)).posted == 1
    assert await world.ledger.reconcile() == []


async def test_cancelled_while_rows_are_in_flight_leaves_nothing(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The results are built while a task sends the batch's rows; cancelling the batch
    there (e.g. the worker shutting down) cancels that task too: nothing persists and the
    pooled connection stays usable."""
    alice = await world.funded(1_000)
    bob = (await world.user_wallet())[AccountKind.AVAILABLE]
    before = await world.ledger.queries.balance(alice)
    built = 0
    original = Plan.iter_results

    def cancel_midway(self: Plan, epoch: int, now: datetime) -> Iterator[object]:
        nonlocal built
        for result in original(self, epoch, now):
            built += 1
            if built == 3:  # the write task has started: cancel the batch at its next yield
                task = asyncio.current_task()
                assert task is not None
                task.cancel()
            yield result

    monkeypatch.setattr(repository, "_RESULTS_SLICE", 1)
    monkeypatch.setattr(Plan, "iter_results", cancel_midway)
    batch: list = [
        PostOperation(OperationType.TRANSFER, transfer_legs(alice, bob, world.asset, 5))
        for _ in range(200)  # the COPY path
    ]
    with pytest.raises(asyncio.CancelledError):
        await world.ledger.post_many(batch)
    assert built == 3
    monkeypatch.undo()
    assert await world.ledger.queries.balance(alice) == before
    # every pooled connection still works: a batch per pool slot, concurrently
    results = await asyncio.gather(
        *(
            world.ledger.post_many(
                [PostOperation(OperationType.TRANSFER, transfer_legs(alice, bob, world.asset, 1))]
            )
            for _ in range(4)
        )
    )
    assert all(isinstance(r[0], OperationResult) for r in results)
    assert (await world.ledger.queries.balance(alice)).posted == before.posted - 4
    assert await world.ledger.reconcile() == []
