"""A capture that keeps the rest reserved and pays a payee of its own (what an offline
allowance's vouchers do): several in one batch, the hold row, balances and reconciliation."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text

from core.types import CaptureHold, HoldResult, OperationResult, VoidHold
from tests.conftest import World

pytestmark = pytest.mark.integration


async def test_captures_keeping_the_rest_pay_their_own_payees_in_one_batch(world: World) -> None:
    ledger = world.ledger
    payer = await world.funded(10_000)
    shop1, shop2 = await world.funded(0), await world.funded(0)
    hold = await ledger.hold(
        source=payer, destination=payer, asset=world.asset, amount=6_000, ttl=timedelta(hours=1)
    )
    results = await ledger.post_many(
        [
            CaptureHold(
                hold.hold_id, 1_000, destination=shop1, keep_rest=True, idempotency_key="pc-1"
            ),
            CaptureHold(
                hold.hold_id, 2_000, destination=shop2, keep_rest=True, idempotency_key="pc-2"
            ),
            CaptureHold(
                hold.hold_id, 4_000, destination=shop1, keep_rest=True, idempotency_key="pc-3"
            ),
        ]
    )
    assert isinstance(results[0], OperationResult) and isinstance(results[1], OperationResult)
    assert getattr(results[2], "code", None) == "HOLD_AMOUNT_EXCEEDED"
    async with ledger.engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT status, remaining, captured FROM holds WHERE id = :h"),
                {"h": hold.hold_id},
            )
        ).one()
    assert tuple(row) == ("PENDING", 3_000, 3_000)
    b = await ledger.queries.balance(payer)
    assert (b.posted, b.pending) == (7_000, 3_000)
    assert (await ledger.queries.balance(shop1)).posted == 1_000
    assert (await ledger.queries.balance(shop2)).posted == 2_000
    # a replay under the same key changes nothing; a capture to the hold's own source is refused
    again = await ledger.post_many(
        [
            CaptureHold(
                hold.hold_id, 1_000, destination=shop1, keep_rest=True, idempotency_key="pc-1"
            )
        ]
    )
    assert isinstance(again[0], OperationResult) and again[0].replayed
    self_pay = await ledger.post_many([CaptureHold(hold.hold_id, 1_000, keep_rest=True)])
    assert getattr(self_pay[0], "code", None) == "VALIDATION_ERROR"
    # capturing the exact rest closes the hold POSTED; the void after it finds nothing pending
    last = await ledger.post_many(
        [CaptureHold(hold.hold_id, 3_000, destination=shop2, keep_rest=True)]
    )
    assert isinstance(last[0], OperationResult)
    voided = await ledger.post_many([VoidHold(hold.hold_id)])
    assert (
        not isinstance(voided[0], HoldResult)
        and getattr(voided[0], "code", None) == "HOLD_NOT_PENDING"
    )
    async with ledger.engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT status, remaining, captured FROM holds WHERE id = :h"),
                {"h": hold.hold_id},
            )
        ).one()
    assert tuple(row) == ("POSTED", 0, 6_000)
    assert (await ledger.queries.balance(payer)).pending == 0
    assert await world.total() == 0
    assert await ledger.reconcile() == []
