"""Ledger behaviour against the real PostgreSQL."""

from datetime import timedelta

import pytest
from sqlalchemy import text

from core.directory import Directory
from core.errors import (
    AccountFrozen,
    AlreadyExists,
    AlreadyReversed,
    AssetMismatch,
    HoldNotPending,
    IdempotencyConflict,
    InsufficientFunds,
    LinkedOperationFailed,
    ReasonRequired,
    UnbalancedOperation,
    UnknownAccount,
)
from core.flows import SagaFlows
from core.sagas import SagaStatus
from core.types import (
    AccountKind,
    AccountStatus,
    EntrySpec,
    HoldResult,
    HoldStatus,
    OperationResult,
    OperationType,
    PostOperation,
    Side,
    transfer_legs,
)
from tests.conftest import ADMIN, World

pytestmark = pytest.mark.integration


async def test_multi_asset_operation_and_rejections(world: World) -> None:
    led = world.ledger
    alice = await world.funded(1_000)
    bob = (await world.user_wallet())[AccountKind.AVAILABLE]
    # unbalanced, unknown account, asset mismatch, floor: typed errors, nothing written
    with pytest.raises(UnbalancedOperation):
        await led.post(
            PostOperation(
                OperationType.TRANSFER,
                (
                    EntrySpec(alice, world.asset, 5, Side.DEBIT),
                    EntrySpec(bob, world.asset, 4, Side.CREDIT),
                ),
            )
        )
    with pytest.raises(UnknownAccount):
        await led.transfer(source=alice, destination=10**12, asset=world.asset, amount=1)
    with pytest.raises(AssetMismatch):
        await led.transfer(source=alice, destination=bob, asset="OTHER", amount=1)
    with pytest.raises(InsufficientFunds):
        await led.transfer(source=alice, destination=bob, asset=world.asset, amount=1_001)
    assert (await led.queries.balance(alice)).posted == 1_000
    # N postings in one operation
    carol = (await world.user_wallet())[AccountKind.AVAILABLE]
    result = await led.post(
        PostOperation(
            OperationType.TRANSFER,
            (
                EntrySpec(alice, world.asset, 300, Side.DEBIT),
                EntrySpec(bob, world.asset, 100, Side.CREDIT),
                EntrySpec(carol, world.asset, 200, Side.CREDIT),
            ),
        )
    )
    assert [e.balance_after for e in result.entries] == [700, 100, 200]
    assert await world.total() == 0


async def test_frozen_account_refuses_postings(world: World) -> None:
    led = world.ledger
    alice = await world.funded(100)
    bob = (await world.user_wallet())[AccountKind.AVAILABLE]
    with pytest.raises(ReasonRequired):
        await led.accounts.set_status(bob, AccountStatus.FROZEN, actor=ADMIN, reason=" ")
    await led.accounts.set_status(bob, AccountStatus.FROZEN, actor=ADMIN, reason="fraud check")
    with pytest.raises(AccountFrozen):
        await led.transfer(source=alice, destination=bob, asset=world.asset, amount=1)
    await led.accounts.set_status(bob, AccountStatus.ACTIVE, actor=ADMIN, reason="cleared")
    await led.transfer(source=alice, destination=bob, asset=world.asset, amount=1)


async def test_idempotency_same_key_same_effect_once(world: World) -> None:
    led = world.ledger
    alice = await world.funded(100)
    bob = (await world.user_wallet())[AccountKind.AVAILABLE]
    key = f"pay-{alice}"
    first = await led.transfer(
        source=alice, destination=bob, asset=world.asset, amount=10, idempotency_key=key
    )
    again = await led.transfer(
        source=alice, destination=bob, asset=world.asset, amount=10, idempotency_key=key
    )
    assert again.replayed and again.operation_id == first.operation_id
    assert (await led.queries.balance(alice)).posted == 90
    with pytest.raises(IdempotencyConflict):
        await led.transfer(
            source=alice, destination=bob, asset=world.asset, amount=11, idempotency_key=key
        )
    # a failure is remembered: the same request stays failed even once funds arrive
    fail_key = f"big-{alice}"
    for _ in range(2):
        with pytest.raises(InsufficientFunds):
            await led.transfer(
                source=alice,
                destination=bob,
                asset=world.asset,
                amount=500,
                idempotency_key=fail_key,
            )
    await led.transfer(source=world.issuance, destination=alice, asset=world.asset, amount=1000)
    with pytest.raises(InsufficientFunds):
        await led.transfer(
            source=alice, destination=bob, asset=world.asset, amount=500, idempotency_key=fail_key
        )


async def test_fast_path_transfer_respects_pending_holds_and_remembers_the_refusal(
    world: World,
) -> None:
    """A plain two-leg transfer (the planner's fast path) that fits the posted balance but
    not the available one (posted - pending) is refused by the planner with its details,
    and that refusal is stored under the key: funding the account later does not turn a
    replay of the same request into a success."""
    led = world.ledger
    alice = await world.funded(100)
    shop = (await world.user_wallet())[AccountKind.AVAILABLE]
    bob = (await world.user_wallet())[AccountKind.AVAILABLE]
    await led.hold(source=alice, destination=shop, asset=world.asset, amount=70)
    key = f"fast-{alice}"
    expected = {"account_id": alice, "available": "30", "needed": "50"}
    with pytest.raises(InsufficientFunds) as first:
        await led.transfer(
            source=alice, destination=bob, asset=world.asset, amount=50, idempotency_key=key
        )
    assert first.value.details == expected
    await led.transfer(source=world.issuance, destination=alice, asset=world.asset, amount=1_000)
    with pytest.raises(InsufficientFunds) as replay:
        await led.transfer(
            source=alice, destination=bob, asset=world.asset, amount=50, idempotency_key=key
        )
    assert (replay.value.message, replay.value.details) == (first.value.message, expected)
    balance = await led.queries.balance(alice)
    assert (balance.posted, balance.pending) == (1_100, 70)
    assert (await led.queries.balance(bob)).posted == 0
    async with led.engine.connect() as conn:
        stored = (
            await conn.execute(
                text("SELECT outcome->'error'->>'code' FROM idempotency_keys WHERE key = :k"),
                {"k": key},
            )
        ).scalar_one()
    assert stored == "INSUFFICIENT_FUNDS"


async def test_holds_reserve_capture_void_expire(world: World) -> None:
    led = world.ledger
    alice = await world.funded(100)
    shop = (await world.user_wallet())[AccountKind.AVAILABLE]
    hold = await led.hold(source=alice, destination=shop, asset=world.asset, amount=70)
    balance = await led.queries.balance(alice)
    assert (balance.posted, balance.pending, balance.available) == (100, 70, 30)
    with pytest.raises(InsufficientFunds):
        await led.transfer(source=alice, destination=shop, asset=world.asset, amount=31)
    captured = await led.capture(hold.hold_id, 50)
    assert [e.amount for e in captured.entries] == [-50, 50]
    balance = await led.queries.balance(alice)
    assert (balance.posted, balance.pending) == (50, 0)
    with pytest.raises(HoldNotPending):
        await led.capture(hold.hold_id, 1)
    second = await led.hold(source=alice, destination=shop, asset=world.asset, amount=20)
    voided = await led.void(second.hold_id, reason="customer cancelled")
    assert voided.status is HoldStatus.VOIDED
    # expiry: a hold whose deadline passed is voided by the expiry sweep
    third = await led.hold(
        source=alice, destination=shop, asset=world.asset, amount=10, ttl=timedelta(seconds=30)
    )
    async with led.engine.begin() as conn:  # move the deadline into the past, no waiting
        await conn.execute(
            text("UPDATE holds SET expires_at = now() - interval '1 second' WHERE id = :id"),
            {"id": third.hold_id},
        )
    with pytest.raises(HoldNotPending):
        await led.capture(third.hold_id)
    assert await led.expire_holds() >= 1
    assert (await led.queries.balance(alice)).pending == 0
    assert await led.reconcile() == []


async def test_reversal_once_and_adjustment_with_reason(world: World) -> None:
    led = world.ledger
    alice = await world.funded(100)
    bob = (await world.user_wallet())[AccountKind.AVAILABLE]
    op = await led.transfer(source=alice, destination=bob, asset=world.asset, amount=40)
    reversal = await led.reverse(op.operation_id, reason="duplicate charge", actor=ADMIN)
    assert reversal.reverses == op.operation_id
    assert (await led.queries.balance(alice)).posted == 100
    with pytest.raises(AlreadyReversed):
        await led.reverse(op.operation_id, reason="again", actor=ADMIN)
    with pytest.raises(ReasonRequired):
        await led.adjust(transfer_legs(world.issuance, bob, world.asset, 5), reason="", actor=ADMIN)
    await led.adjust(
        transfer_legs(world.issuance, bob, world.asset, 5), reason="goodwill", actor=ADMIN
    )
    view = await led.queries.operation(op.operation_id)
    assert view.reversed_by == reversal.operation_id
    async with led.engine.connect() as conn:
        audited = (
            await conn.execute(
                text(
                    "SELECT count(*) FROM audit_log WHERE entity_type = 'operation' AND entity_id = :id "
                    "AND reason = 'duplicate charge'"
                ),
                {"id": str(reversal.operation_id)},
            )
        ).scalar()
    assert audited == 1


async def test_batches_independent_and_linked(world: World) -> None:
    led = world.ledger
    alice = await world.funded(100)
    bob = (await world.user_wallet())[AccountKind.AVAILABLE]

    def move(n: int) -> PostOperation:
        return PostOperation(OperationType.TRANSFER, transfer_legs(alice, bob, world.asset, n))

    results = await led.post_many([move(60), move(60), move(40)])
    assert [type(r).__name__ for r in results] == [
        "OperationResult",
        "InsufficientFunds",
        "OperationResult",
    ]
    await led.transfer(source=world.issuance, destination=alice, asset=world.asset, amount=100)
    with pytest.raises(InsufficientFunds):
        await led.post_linked([move(60), move(60)])
    assert (await led.queries.balance(alice)).posted == 100
    linked = await led.batcher.submit_linked([move(10), move(1000)])
    assert isinstance(linked[0], LinkedOperationFailed)
    ok = await led.post_linked([move(30), move(30)])
    assert len(ok) == 2 and (await led.queries.balance(alice)).posted == 40


async def test_balance_as_of_and_history_pagination(world: World) -> None:
    led = world.ledger
    alice = await world.funded(1_000)
    bob = (await world.user_wallet())[AccountKind.AVAILABLE]
    results = [
        await led.transfer(source=alice, destination=bob, asset=world.asset, amount=i)
        for i in range(1, 8)
    ]
    third = results[2].entries[0]
    assert await led.queries.balance_at(alice, seq=third.seq) == 1_000 - 6
    assert await led.queries.balance_at(alice, at=results[2].created_at) == third.balance_after
    assert await led.queries.balance_at(alice, seq=0) == 0
    seen, cursor = [], None
    while True:
        page = await led.queries.history(alice, before_seq=cursor, limit=3)
        seen += page.entries
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert len(seen) == 8  # the mint and seven transfers, newest first
    assert [e.seq for e in seen] == sorted((e.seq for e in seen), reverse=True)
    running = 0
    for entry in reversed(seen):
        running += entry.amount
        assert entry.balance_after == running


async def test_reference_flows_with_derived_status(world: World) -> None:
    led = world.ledger
    flows = SagaFlows(Directory(led))
    owner = await led.accounts.create_user(email=None, actor=ADMIN)
    saga, _deposit = await flows.deposit(
        owner_id=owner,
        asset=world.asset,
        amount=await flows.directory.fmt(5_000, world.asset),
        external_reference=f"zand-{tx_ref()}",
        actor=ADMIN,
    )
    tx = saga.id
    assert saga.status is SagaStatus.COMPLIANCE_REVIEW
    assert (await flows.get(tx)).status is SagaStatus.COMPLIANCE_REVIEW
    wallet = await led.accounts.ensure_wallet(owner, world.asset, actor=ADMIN)
    assert (await led.queries.balance(wallet[AccountKind.BLOCKED])).posted == 5_000
    with pytest.raises(ReasonRequired):
        await flows.release(tx, reason="", actor=ADMIN)
    await flows.release(tx, reason="KYC ok", actor=ADMIN)
    assert (await flows.get(tx)).status is SagaStatus.AVAILABLE
    assert (await led.queries.balance(wallet[AccountKind.AVAILABLE])).posted == 5_000
    itx, _ = await flows.lock_for_investment(
        owner_id=owner, asset=world.asset, amount=2_000, actor=ADMIN
    )
    assert (await flows.get(itx)).status is SagaStatus.COMPLIANCE_REVIEW
    reference = f"too-much-{tx_ref()}"
    with pytest.raises(InsufficientFunds):
        await flows.lock_for_investment(
            owner_id=owner,
            asset=world.asset,
            amount=99_999,
            actor=ADMIN,
            external_reference=reference,
        )
    # the saga the refused lock started is recorded, FAILED, with its refused operation
    async with led.engine.connect() as conn:
        failed = (
            await conn.execute(
                text("SELECT id, owner_id, status FROM sagas WHERE external_reference = :r"),
                {"r": reference},
            )
        ).all()
    assert len(failed) == 1
    failed_tx, failed_owner, status = failed[0]
    assert (failed_owner, status) == (owner, SagaStatus.FAILED)
    view = await flows.get(failed_tx)
    assert view.status is SagaStatus.FAILED
    assert [(t, s) for _, t, s in view.operations] == [("LOCK", "FAILED")]
    assert (await led.queries.balance(wallet[AccountKind.AVAILABLE])).posted == 3_000
    assert (await led.queries.balance(wallet[AccountKind.LOCKED])).posted == 2_000


def tx_ref() -> str:
    import uuid

    return uuid.uuid4().hex


async def test_reference_data_errors(world: World) -> None:
    led = world.ledger
    with pytest.raises(AlreadyExists):
        await led.accounts.create_asset(
            code=world.asset, name="x", scale=2, kind="POINTS", actor=ADMIN
        )  # type: ignore[arg-type]
    owner = await led.accounts.create_user(email=None, actor=ADMIN)
    first = await led.accounts.ensure_wallet(owner, world.asset, actor=ADMIN)
    assert await led.accounts.ensure_wallet(owner, world.asset, actor=ADMIN) == first
    listed = await led.accounts.list_accounts(owner)
    assert {(a.id, a.kind, a.floor) for a in listed} == {(i, k, 0) for k, i in first.items()}
    one = await led.accounts.get_account(first[AccountKind.AVAILABLE])
    assert (one.owner_id, one.asset) == (owner, world.asset)
    with pytest.raises(UnknownAccount):
        await led.accounts.get_account(10**12)


async def test_submit_returns_results_for_holds(world: World) -> None:
    alice = await world.funded(10)
    shop = (await world.user_wallet())[AccountKind.AVAILABLE]
    hold = await world.ledger.hold(source=alice, destination=shop, asset=world.asset, amount=10)
    assert isinstance(hold, HoldResult) and hold.remaining == 10
    assert isinstance(await world.ledger.capture(hold.hold_id), OperationResult)
