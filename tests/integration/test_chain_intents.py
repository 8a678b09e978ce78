"""An operation's chain intent is written with it, in the same database transaction: the
operation and its outbox row exist together or not at all, exactly once per idempotency key."""

from __future__ import annotations

import pytest

from core.chain_txs import TxStatus, get_tx_by_ref
from core.epochs import raw_connection
from core.errors import AlreadyExists, IdempotencyConflict, InsufficientFunds
from core.types import ChainIntent, OperationResult, OperationType, PostOperation, transfer_legs
from tests.conftest import World

pytestmark = pytest.mark.integration

CONTRACT = "0x5FbDB2315678afecb367f032d93F642f64180aa3"  # any address: nothing is sent


def intent(ref: str, data: bytes = b"\x01\x02") -> ChainIntent:
    return ChainIntent("test-mint", ref, 31337, CONTRACT, data)


async def outbox_rows(world: World, ref: str) -> int:
    async with raw_connection(world.ledger.engine) as conn:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM chain_txs WHERE purpose = 'test-mint' AND ref = $1", ref
        )
    return count


async def test_the_operation_and_its_outbox_row_commit_together_once(world: World) -> None:
    source, target = await world.funded(100), await world.funded(0)
    ref = f"{world.asset}-1"
    command = PostOperation(
        OperationType.TRANSFER, transfer_legs(source, target, world.asset, 40),
        idempotency_key=f"intent-{ref}", chain_intent=intent(ref),
    )  # fmt: skip
    first = await world.ledger.post(command)
    tx = await get_tx_by_ref(world.ledger.engine, "test-mint", ref)
    assert tx is not None and tx.status is TxStatus.BUILT and tx.data == b"\x01\x02"
    async with raw_connection(world.ledger.engine) as conn:
        detail = await conn.fetchval("SELECT detail FROM chain_tx_events WHERE tx_id = $1", tx.id)
    assert detail == f"operation {first.operation_id}"

    again = await world.ledger.post(command)  # a replay: the stored result, no second row
    assert again.operation_id == first.operation_id and await outbox_rows(world, ref) == 1

    with pytest.raises(IdempotencyConflict):  # the same key with another intent
        await world.ledger.post(
            PostOperation(
                command.type, command.entries, idempotency_key=command.idempotency_key,
                chain_intent=intent(ref, b"\x09"),
            )
        )  # fmt: skip


async def test_a_refused_operation_leaves_no_outbox_row(world: World) -> None:
    source, target = await world.funded(10), await world.funded(0)
    ref = f"{world.asset}-poor"
    with pytest.raises(InsufficientFunds):
        await world.ledger.post(
            PostOperation(
                OperationType.TRANSFER, transfer_legs(source, target, world.asset, 11),
                chain_intent=intent(ref),
            )
        )  # fmt: skip
    assert await outbox_rows(world, ref) == 0


async def test_a_taken_intent_fails_its_command_alone(world: World) -> None:
    source, target = await world.funded(100), await world.funded(0)
    ref = f"{world.asset}-taken"
    await world.ledger.post(
        PostOperation(
            OperationType.TRANSFER, transfer_legs(source, target, world.asset, 1),
            chain_intent=intent(ref),
        )
    )  # fmt: skip
    results = await world.ledger.post_many(
        [
            PostOperation(
                OperationType.TRANSFER, transfer_legs(source, target, world.asset, 2),
                chain_intent=intent(ref),
            ),
            PostOperation(OperationType.TRANSFER, transfer_legs(source, target, world.asset, 3)),
        ]
    )  # fmt: skip
    assert isinstance(results[0], AlreadyExists) and isinstance(results[1], OperationResult)
    assert await outbox_rows(world, ref) == 1
    assert (await world.ledger.queries.balance(target)).posted == 1 + 3
