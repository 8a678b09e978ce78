"""Policy led in the write path, against the real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from core.compliance import issue_attestation
from core.epochs import raw_connection
from core.errors import (
    AccountFrozen,
    Forbidden,
    InvalidPolicy,
    LedgerError,
    LinkedOperationFailed,
    PolicyDenied,
)
from core.ledger import Ledger
from core.policy.store import prune_usage
from core.policy.versions import (
    activate_policy,
    create_policy,
    dry_run,
    list_policies,
    retire_policy,
)
from core.types import (
    AccountKind,
    AccountStatus,
    Actor,
    OperationResult,
    OperationType,
    PostOperation,
    Role,
    transfer_legs,
)
from tests.conftest import ADMIN, World

pytestmark = pytest.mark.integration
EVIDENCE = "ab" * 32


async def attach(
    world: World, rules: list[dict[str, Any]], type_: OperationType = OperationType.TRANSFER
) -> int:
    led = world.ledger
    record = await create_policy(
        led, asset=world.asset, operation_type=type_, document={"rules": rules},
        actor=ADMIN, reason="test policy",
    )  # fmt: skip
    return (await activate_policy(led, record.id, actor=ADMIN, reason="go live")).id


async def owner_of(world: World, account: int) -> uuid.UUID:
    owner = (await world.ledger.accounts.get_account(account)).owner_id
    assert owner is not None
    return owner


async def kyc(world: World, account: int, level: int = 2) -> int:
    att = await issue_attestation(
        world.ledger, actor=ADMIN, subject_id=await owner_of(world, account),
        claim="kyc.level", value=level, evidence_hash=EVIDENCE, reason="kyc passed",
    )  # fmt: skip
    return att.id


async def scalar(world: World, sql: str, **params: Any) -> Any:
    async with world.ledger.engine.connect() as conn:
        return (await conn.execute(text(sql), params)).scalar_one()


async def versions_of(world: World, operation_id: int) -> Any:
    return await scalar(
        world, "SELECT policy_versions FROM operations WHERE id = :id", id=operation_id
    )


def send(world: World, src: int, dst: int, amount: int, key: str | None = None) -> PostOperation:
    return PostOperation(
        OperationType.TRANSFER, transfer_legs(src, dst, world.asset, amount), idempotency_key=key
    )


async def test_claims_fees_and_recorded_versions(world: World) -> None:
    led = world.ledger
    alice = await world.funded(10_000)
    bob = (await world.user_wallet())[AccountKind.AVAILABLE]
    policy_id = await attach(
        world,
        [
            {"id": "kyc", "kind": "claims", "require": [{"claim": "kyc.level", "op": ">=", "value": 2}]},
            {"id": "fee", "kind": "fee", "fixed": 10, "bps": 100},
        ],
    )  # fmt: skip
    entries_before = await scalar(
        world, "SELECT count(*) FROM ledger_entries WHERE asset = :a", a=world.asset
    )
    ops_before = await scalar(world, "SELECT count(*) FROM operations")
    with pytest.raises(PolicyDenied) as denied:
        await led.transfer(source=alice, destination=bob, asset=world.asset, amount=1_000)
    d = denied.value.details
    assert (d["policy_id"], d["version"], d["rule"], d["rule_kind"]) == (
        policy_id,
        1,
        "kyc",
        "claims",
    )
    assert denied.value.status == 403
    # nothing written but the audit record of the decision
    assert (
        await scalar(world, "SELECT count(*) FROM ledger_entries WHERE asset = :a", a=world.asset)
        == entries_before
    )
    assert await scalar(world, "SELECT count(*) FROM operations") == ops_before
    decision = await scalar(
        world, "SELECT after::text FROM audit_log WHERE action = 'policy.denied' AND entity_id = :p "
        "ORDER BY id DESC LIMIT 1", p=str(policy_id),
    )  # fmt: skip
    assert json.loads(decision)["rule"] == "kyc"

    await kyc(world, alice)
    fees = (await led.queries.balance(alice)).posted
    result = await led.transfer(source=alice, destination=bob, asset=world.asset, amount=1_000)
    signed = sorted((e.account_id, e.amount) for e in result.entries)
    fee_account = await scalar(
        world, "SELECT fee_account_id FROM policies WHERE id = :i", i=policy_id
    )
    assert signed == sorted([(alice, -1_000), (bob, 1_000), (alice, -20), (fee_account, 20)])
    assert (await led.queries.balance(alice)).posted == fees - 1_020
    assert (await led.queries.balance(fee_account)).posted == 20
    assert await world.total() == 0
    assert await versions_of(world, result.operation_id) == [{"policy_id": policy_id, "version": 1}]
    assert not await led.reconcile()


async def test_policy_change_affects_new_operations_only(world: World) -> None:
    led = world.ledger
    alice = await world.funded(10_000)
    bob = (await world.user_wallet())[AccountKind.AVAILABLE]
    v1 = await attach(world, [{"id": "fee", "kind": "fee", "fixed": 5}])
    first = await led.transfer(source=alice, destination=bob, asset=world.asset, amount=100)
    v2 = await attach(world, [{"id": "fee", "kind": "fee", "fixed": 7}])
    second = await led.transfer(source=alice, destination=bob, asset=world.asset, amount=100)
    assert await versions_of(world, first.operation_id) == [{"policy_id": v1, "version": 1}]
    assert await versions_of(world, second.operation_id) == [{"policy_id": v2, "version": 2}]
    assert (await led.queries.balance(alice)).posted == 10_000 - 200 - 5 - 7
    statuses = {p.version: p.status for p in await list_policies(led, asset=world.asset)}
    assert statuses == {1: "RETIRED", 2: "ACTIVE"}
    await retire_policy(led, asset=world.asset, operation_type=OperationType.TRANSFER,
                        actor=ADMIN, reason="no more fees")  # fmt: skip
    third = await led.transfer(source=alice, destination=bob, asset=world.asset, amount=100)
    assert len(third.entries) == 2
    assert await versions_of(world, third.operation_id) is None


async def test_policy_admin_is_guarded_and_validated(world: World) -> None:
    led = world.ledger
    with pytest.raises(Forbidden):
        await create_policy(
            led, asset=world.asset, operation_type=OperationType.TRANSFER,
            document={"rules": [{"id": "f", "kind": "fee", "fixed": 1}]},
            actor=Actor("u", Role.USER), reason="x",
        )  # fmt: skip
    with pytest.raises(InvalidPolicy) as bad:
        await create_policy(
            led, asset=world.asset, operation_type=OperationType.TRANSFER,
            document={"rules": [{"id": "l", "kind": "limit", "window": "week", "max_count": 1}]},
            actor=ADMIN, reason="x",
        )  # fmt: skip
    assert bad.value.details["path"] == "$.rules[0].window"
    assert bad.value.status == 422


async def test_denial_is_remembered_under_its_key(world: World) -> None:
    led = world.ledger
    alice = await world.funded(1_000)
    bob = (await world.user_wallet())[AccountKind.AVAILABLE]
    await attach(world, [{"id": "max", "kind": "amount", "max": 100}])
    first = await led.submit(send(world, alice, bob, 101, key=f"k-{world.asset}"))
    assert isinstance(first, PolicyDenied)
    again = await led.submit(send(world, alice, bob, 101, key=f"k-{world.asset}"))
    assert isinstance(again, PolicyDenied)
    assert again.details["rule"] == "max"
    # exactly at the boundary: allowed
    assert isinstance(await led.submit(send(world, alice, bob, 100)), OperationResult)


async def test_dry_run_writes_nothing(world: World) -> None:
    led = world.ledger
    alice = await world.funded(1_000)
    bob = (await world.user_wallet())[AccountKind.AVAILABLE]
    policy_id = await attach(
        world,
        [
            {"id": "fee", "kind": "fee", "bps": 250},
            {"id": "daily", "kind": "limit", "window": "day", "max_amount": 500},
        ],
    )
    ops_before = await scalar(world, "SELECT count(*) FROM operations")
    ok = await dry_run(led, send(world, alice, bob, 400))
    assert ok.allowed
    assert ok.error is None
    assert ok.policies == ((policy_id, 1),)
    assert [(asset, amount) for asset, amount, _ in ok.fees] == [(world.asset, 10)]
    assert {(a, amt, after) for a, _, amt, after in ok.entries} >= {
        (alice, -400, 600),
        (bob, 400, 400),
    }
    refused = await dry_run(led, send(world, alice, bob, 501))
    assert not refused.allowed
    assert isinstance(refused.error, PolicyDenied)
    assert refused.error.details["rule"] == "daily"
    assert await scalar(world, "SELECT count(*) FROM operations") == ops_before
    assert (await led.queries.balance(alice)).posted == 1_000


async def _compartments(world: World, amount: int) -> tuple[list[int], int]:
    """One user with every compartment funded: transfers from different compartments lock
    different balance rows, so only the limit row can keep them apart."""
    wallet = await world.user_wallet()
    sources = [wallet[k] for k in (AccountKind.AVAILABLE, AccountKind.BLOCKED, AccountKind.LOCKED)]
    for account in sources:
        await world.ledger.transfer(source=world.issuance, destination=account,
                                    asset=world.asset, amount=amount, type_=OperationType.MINT)  # fmt: skip
    return sources, wallet[AccountKind.AVAILABLE]


async def _parallel(led: Ledger, commands: list[PostOperation]) -> list[Any]:
    """Half as separate transactions in parallel, half through the group-commit batcher."""
    separate = [led.store.execute([c]) for c in commands[::2]]
    batched = [led.submit(c) for c in commands[1::2]]
    out = await asyncio.gather(*separate, *batched)
    return [r[0] if isinstance(r, list) else r for r in out]


async def test_parallel_transfers_never_exceed_the_daily_amount(world: World) -> None:
    led = world.ledger
    sources, _ = await _compartments(world, 10_000)
    receivers = [(await world.user_wallet())[AccountKind.AVAILABLE] for _ in range(4)]
    await attach(world, [{"id": "daily", "kind": "limit", "window": "day", "max_amount": 1_000}])
    commands = [send(world, sources[i % 3], receivers[i % 4], 30) for i in range(90)]
    results = await _parallel(led, commands)
    accepted = [r for r in results if isinstance(r, OperationResult)]
    denied = [r for r in results if isinstance(r, PolicyDenied)]
    assert len(accepted) + len(denied) == len(results)
    assert len(accepted) == 1_000 // 30  # never more, and no capacity lost
    spent = sum([10_000 - (await led.queries.balance(a)).posted for a in sources])
    assert spent == 30 * len(accepted) <= 1_000
    assert await world.total() == 0


async def test_parallel_transfers_never_exceed_the_daily_count(world: World) -> None:
    led = world.ledger
    sources, _ = await _compartments(world, 1_000)
    receivers = [(await world.user_wallet())[AccountKind.AVAILABLE] for _ in range(4)]
    await attach(world, [{"id": "n", "kind": "limit", "window": "day", "max_count": 7}])
    commands = [send(world, sources[i % 3], receivers[i % 4], 1) for i in range(60)]
    results = await _parallel(led, commands)
    assert sum(isinstance(r, OperationResult) for r in results) == 7
    assert sum([(await led.queries.balance(r)).posted for r in receivers]) == 7


async def test_expired_usage_buckets_are_pruned_without_changing_any_limit(
    world: World,
) -> None:
    """The worker's pruning deletes only buckets no window counts (older than 30 days),
    also while limited transfers run: the month limit still sees its 29-day-old bucket
    and the parallel transfers still stop exactly at the daily amount."""
    led = world.ledger
    sources, _ = await _compartments(world, 10_000)
    receiver = (await world.user_wallet())[AccountKind.AVAILABLE]
    user = await owner_of(world, sources[0])
    await attach(world, [
        {"id": "daily", "kind": "limit", "window": "day", "max_amount": 1_000},
        {"id": "monthly", "kind": "limit", "window": "month", "max_amount": 5_000},
    ])  # fmt: skip
    ages = [24 * 29, 24 * 30, 24 * 31, 24 * 400]  # hours before the current bucket
    async with led.engine.begin() as conn:
        for hours in ages:
            await conn.execute(
                text(
                    "INSERT INTO policy_usage VALUES (:u, :a, 'TRANSFER', "
                    "date_trunc('hour', now()) - make_interval(hours => :h), 1, 1000)"
                ),
                {"u": user, "a": world.asset, "h": hours},
            )
    commands = [send(world, sources[i % 3], receiver, 30) for i in range(60)]
    async with raw_connection(led.engine) as conn:
        pruned, results = await asyncio.gather(prune_usage(conn), _parallel(led, commands))
    assert pruned == 3  # 30, 31 and 400 days old: outside every window
    buckets = await scalar(
        world,
        "SELECT count(*) FROM policy_usage WHERE user_id = :u AND bucket < now() - interval '2 days'",
        u=user,
    )
    assert buckets == 1  # the 29-day-old bucket still counts for the month
    accepted = [r for r in results if isinstance(r, OperationResult)]
    assert len(accepted) == 1_000 // 30  # two limit rules count each operation once
    today = await scalar(
        world,
        "SELECT sum(count) || '/' || sum(amount) FROM policy_usage WHERE user_id = :u "
        "AND bucket >= now() - interval '1 day'",
        u=user,
    )
    assert today == f"{len(accepted)}/{30 * len(accepted)}"
    # the month limit: 1,000 (29 days ago) + 990 today; 3,010 left, but the day is spent
    denied = await led.submit(send(world, sources[0], receiver, 30))
    assert isinstance(denied, PolicyDenied) and denied.details["rule"] == "daily"


async def test_linked_group_denial_consumes_no_limit(world: World) -> None:
    led = world.ledger
    alice = await world.funded(1_000)
    bob = (await world.user_wallet())[AccountKind.AVAILABLE]
    await attach(world, [{"id": "n", "kind": "limit", "window": "day", "max_count": 2}])
    with pytest.raises(PolicyDenied):
        await led.post_linked([send(world, alice, bob, 1) for _ in range(3)])
    results = await led.store.execute([send(world, alice, bob, 1) for _ in range(3)])
    assert [type(r) for r in results] == [OperationResult, OperationResult, PolicyDenied]
    linked = await led.store.execute([send(world, alice, bob, 1)], [1])
    assert isinstance(linked[0], LedgerError)
    assert not isinstance(linked[0], LinkedOperationFailed)


async def test_frozen_account_may_receive_per_policy(world: World) -> None:
    led = world.ledger
    alice = await world.funded(1_000)
    bob = await world.funded(100)
    await led.accounts.set_status(bob, AccountStatus.FROZEN, actor=ADMIN, reason="review")
    with pytest.raises(AccountFrozen):  # no policy: a frozen account refuses everything
        await led.transfer(source=alice, destination=bob, asset=world.asset, amount=10)
    await attach(world, [{"id": "frz", "kind": "freeze", "frozen_account_can_receive": True}])
    await led.transfer(source=alice, destination=bob, asset=world.asset, amount=10)
    assert (await led.queries.balance(bob)).posted == 110
    with pytest.raises(AccountFrozen):  # it still cannot send
        await led.transfer(source=bob, destination=alice, asset=world.asset, amount=10)
    await attach(world, [{"id": "frz", "kind": "freeze", "frozen_account_can_receive": False}])
    with pytest.raises(PolicyDenied):
        await led.transfer(source=alice, destination=bob, asset=world.asset, amount=10)


async def test_hold_capture_pays_the_capture_policy_fee(world: World) -> None:
    led = world.ledger
    alice = await world.funded(1_000)
    bob = (await world.user_wallet())[AccountKind.AVAILABLE]
    await attach(world, [{"id": "fee", "kind": "fee", "fixed": 3}], OperationType.HOLD_CAPTURE)
    hold = await led.hold(source=alice, destination=bob, asset=world.asset, amount=100)
    captured = await led.capture(hold.hold_id, 60)
    assert len(captured.entries) == 4
    assert (await led.queries.balance(alice)).posted == 1_000 - 63
    assert await world.total() == 0


async def test_hold_creation_is_checked_against_the_capture_policy(world: World) -> None:
    """A hold (a card or POS authorisation) is refused up front when its capture would be:
    a missing claim, an amount over a limit. Nothing is reserved, the denial is audited and
    remembered under its key; limit usage counts only at capture, checked again there."""
    led = world.ledger
    alice = await world.funded(1_000)
    bob = (await world.user_wallet())[AccountKind.AVAILABLE]
    await attach(world, [
        {"id": "kyc", "kind": "claims",
         "require": [{"claim": "kyc.level", "op": ">=", "value": 2}]},
        {"id": "daily", "kind": "limit", "window": "day", "max_amount": 150},
    ], OperationType.HOLD_CAPTURE)  # fmt: skip
    expires = datetime.now(UTC) + timedelta(hours=1)
    denied_sql = "SELECT count(*) FROM audit_log WHERE action = 'policy.denied'"
    denials_before = await scalar(world, denied_sql)

    async def authorise(key: str) -> object:
        return await led.hold(source=alice, destination=bob, asset=world.asset, amount=10,
                              expires_at=expires, idempotency_key=key)  # fmt: skip

    with pytest.raises(PolicyDenied) as no_kyc:
        await authorise("auth-1")
    assert no_kyc.value.details["rule"] == "kyc"
    await kyc(world, alice)
    with pytest.raises(PolicyDenied):  # remembered under its key, even once KYC passed
        await authorise("auth-1")
    assert (await led.queries.balance(alice)).pending == 0
    assert await scalar(world, denied_sql) == denials_before + 1
    with pytest.raises(PolicyDenied) as over:
        await led.hold(source=alice, destination=bob, asset=world.asset, amount=151)
    assert over.value.details["rule"] == "daily"
    # two holds of 100 each fit the limit on their own: usage counts at capture
    first = await led.hold(source=alice, destination=bob, asset=world.asset, amount=100)
    second = await led.hold(source=alice, destination=bob, asset=world.asset, amount=100)
    assert (await led.queries.balance(alice)).pending == 200
    await led.capture(first.hold_id)
    with pytest.raises(PolicyDenied):
        await led.capture(second.hold_id)
    assert (await led.queries.balance(alice)).posted == 900
    assert (await led.queries.balance(bob)).posted == 100
    assert await world.total() == 0
