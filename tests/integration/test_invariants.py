"""Invariants under concurrency and crashes, against the real PostgreSQL."""

import asyncio
import random

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from core.errors import InsufficientFunds, LedgerError
from core.ledger import Ledger
from core.types import AccountKind, OperationResult, OperationType, PostOperation, transfer_legs
from tests.conftest import ADMIN, World, make_world, settings_for
from tests.support import create_database, drop_database, raw_connect, terminate_when_blocked

pytestmark = pytest.mark.integration


async def entries_total(world: World) -> int:
    async with world.ledger.engine.connect() as conn:
        value = (
            await conn.execute(
                text("SELECT COALESCE(SUM(amount), 0) FROM ledger_entries WHERE asset = :a"),
                {"a": world.asset},
            )
        ).scalar_one()
    return int(value)


async def test_entries_are_append_only_in_the_database(world: World, database_url: str) -> None:
    alice = await world.funded(100)
    conn = await raw_connect(database_url)
    try:
        for statement in (
            "UPDATE ledger_entries SET amount = amount + 1 WHERE account_id = $1",
            "DELETE FROM ledger_entries WHERE account_id = $1",
            "UPDATE operations SET type = 'X' WHERE id IN "
            "(SELECT operation_id FROM ledger_entries WHERE account_id = $1)",
            "DELETE FROM audit_log WHERE entity_id = $1::bigint::text",
        ):
            with pytest.raises(asyncpg.PostgresError, match="append-only"):
                await conn.execute(statement, alice)
        for table in ("ledger_entries", "operations", "audit_log"):
            with pytest.raises(asyncpg.PostgresError, match="append-only"):
                await conn.execute(f"TRUNCATE {table} CASCADE")
    finally:
        await conn.close()
    assert (await world.ledger.queries.balance(alice)).posted == 100


async def test_database_refuses_a_floor_break_even_from_raw_sql(
    world: World, database_url: str
) -> None:
    alice = await world.funded(100)
    conn = await raw_connect(database_url)
    try:
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute("UPDATE balances SET posted = -1 WHERE account_id = $1", alice)
    finally:
        await conn.close()


async def test_concurrent_transfers_conserve_value(world: World, database_url: str) -> None:
    """Thousands of random transfers from many tasks on two independent ledger instances
    (two pools, two batchers: as two processes would) over a few accounts; each transfer
    is retried under its idempotency key. Afterwards: value conserved exactly, floors
    hold, reconciler clean, and every key produced exactly one operation."""
    accounts = [await world.funded(500) for _ in range(6)]
    second = Ledger.connect(settings_for(database_url, pool_size=4))
    rng = random.Random(42)
    plan = [
        (rng.sample(accounts, 2), rng.randint(1, 120), f"{world.asset}-{i}") for i in range(3000)
    ]
    applied: dict[str, int] = {}

    async def worker(ledger: Ledger, jobs: list) -> None:
        for (src, dst), amount, key in jobs:
            for _ in range(2):  # the retry a client sends after a timeout
                result = await ledger.submit(
                    PostOperation(
                        OperationType.TRANSFER,
                        transfer_legs(src, dst, world.asset, amount),
                        idempotency_key=key,
                    )
                )
                if isinstance(result, OperationResult):
                    assert applied.setdefault(key, result.operation_id) == result.operation_id
                else:
                    assert isinstance(result, InsufficientFunds), result

    try:
        chunks = [plan[i::40] for i in range(40)]
        await asyncio.gather(
            *(worker(world.ledger if i % 2 else second, chunk) for i, chunk in enumerate(chunks))
        )
    finally:
        await second.close()
    assert await world.total() == 0
    assert await entries_total(world) == 0
    for account in accounts:
        balance = await world.ledger.queries.balance(account)
        assert balance.posted >= 0
    assert await world.ledger.reconcile() == []
    async with world.ledger.engine.connect() as conn:
        keyed = (
            await conn.execute(
                text(
                    "SELECT idempotency_key, count(*) FROM operations WHERE idempotency_key LIKE :p "
                    "GROUP BY 1 HAVING count(*) > 1"
                ),
                {"p": f"{world.asset}-%"},
            )
        ).all()
        ops = (
            await conn.execute(
                text("SELECT count(*) FROM operations WHERE idempotency_key LIKE :p"),
                {"p": f"{world.asset}-%"},
            )
        ).scalar()
    assert keyed == []
    assert ops == len(applied) > 0


async def test_hot_issuance_account_under_concurrent_mints(world: World) -> None:
    users = [(await world.user_wallet())[AccountKind.AVAILABLE] for _ in range(20)]

    async def mint(i: int) -> None:
        await world.ledger.transfer(
            source=world.issuance,
            destination=users[i % 20],
            asset=world.asset,
            amount=3,
            type_=OperationType.MINT,
        )

    await asyncio.gather(*(mint(i) for i in range(1000)))
    assert (await world.ledger.queries.balance(world.issuance)).posted == -3000
    history = await world.ledger.queries.history(world.issuance, limit=500)
    # balance_after on the hot account is a gap-free running balance in seq order
    afters = [e.balance_after for e in reversed(history.entries)]
    assert afters == list(range(afters[0], afters[0] - 3 * len(afters), -3))
    assert await world.ledger.reconcile() == []


async def test_killed_transaction_mid_batch_leaves_nothing(world: World, database_url: str) -> None:
    """Block a batch in the middle of its writes (its idempotency insert waits on a key
    another transaction holds), kill its backend, and check nothing of it persisted."""
    alice = await world.funded(1_000)
    bob = (await world.user_wallet())[AccountKind.AVAILABLE]
    blocker = await raw_connect(database_url)
    tx = blocker.transaction()
    await tx.start()
    key = f"crash-{world.asset}"
    await blocker.execute(
        "INSERT INTO idempotency_keys (key, request_hash, outcome) VALUES ($1, '\\x00', '{}')", key
    )
    batch = [
        PostOperation(OperationType.TRANSFER, transfer_legs(alice, bob, world.asset, 5))
        for _ in range(50)
    ]
    batch.append(
        PostOperation(
            OperationType.TRANSFER, transfer_legs(alice, bob, world.asset, 5), idempotency_key=key
        )
    )
    task = asyncio.create_task(world.ledger.post_many(batch))
    try:
        # it already inserted its entries (uncommitted) when it blocked
        await terminate_when_blocked(database_url, task, "%idempotency_keys%")
        results = await task
    finally:
        await tx.rollback()
        await blocker.close()
    assert all(isinstance(r, LedgerError) and r.code == "STORAGE_ERROR" for r in results)
    assert (await world.ledger.queries.balance(alice)).posted == 1_000
    assert (await world.ledger.queries.balance(bob)).posted == 0
    assert await world.ledger.reconcile() == []


async def test_reconciler_reports_every_drift() -> None:
    url = await create_database()
    ledger = Ledger.connect(settings_for(url))
    try:
        world = await make_world(ledger, scale=0)
        alice = await world.funded(100)
        bob = await world.funded(50)
        assert await ledger.reconcile() == []
        conn = await raw_connect(url)
        try:
            await conn.execute("UPDATE balances SET posted = 90 WHERE account_id = $1", alice)
            await conn.execute("UPDATE balances SET pending = 7 WHERE account_id = $1", bob)
        finally:
            await conn.close()
        drifts = {(d.id, d.field, d.expected, d.found) for d in await ledger.reconcile()}
        assert (alice, "posted", 100, 90) in drifts
        assert (alice, "balance_after", 100, 90) in drifts
        assert (bob, "pending", 0, 7) in drifts
    finally:
        await ledger.close()
        await drop_database(url)


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.lists(
        st.tuples(
            st.integers(0, 3),
            st.integers(0, 3),
            st.integers(-3, 400),
            st.sampled_from(["post", "hold", "capture", "void", "reverse"]),
        ),
        min_size=1,
        max_size=25,
    )
)
async def test_random_operation_sequences_keep_invariants(ledger: Ledger, steps: list) -> None:
    world = await make_world(ledger, scale=0)
    accounts = [await world.funded(300) for _ in range(4)]
    holds: list[int] = []
    ops: list[int] = []
    for a, b, amount, kind in steps:
        src, dst = accounts[a], accounts[b]
        try:
            if kind == "post":
                ops.append(
                    (
                        await world.ledger.transfer(
                            source=src, destination=dst, asset=world.asset, amount=amount
                        )
                    ).operation_id
                )
            elif kind == "hold":
                holds.append(
                    (
                        await world.ledger.hold(
                            source=src, destination=dst, asset=world.asset, amount=amount
                        )
                    ).hold_id
                )
            elif kind == "capture" and holds:
                await world.ledger.capture(holds[a % len(holds)], max(amount, 1) if b else None)
            elif kind == "void" and holds:
                await world.ledger.void(holds[b % len(holds)])
            elif kind == "reverse" and ops:
                await world.ledger.reverse(ops[a % len(ops)], reason="test", actor=ADMIN)
        except LedgerError:
            pass
    assert await world.total() == 0
    for account in accounts:
        balance = await world.ledger.queries.balance(account)
        assert balance.available >= 0 and balance.pending >= 0
    assert await world.ledger.reconcile() == []
