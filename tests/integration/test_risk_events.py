"""The risk loop's record: an action's operation and its event row commit together, and the
database refuses a second event naming the same operation."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from core.ledger import Ledger
from core.types import OperationType, PostOperation, SystemAccount, transfer_legs
from tests.integration.risk_support import ADMIN, COLL, make_desk, usd

pytestmark = pytest.mark.integration


async def test_one_event_per_operation(ledger: Ledger) -> None:
    desk = await make_desk(ledger)
    line = await desk.line(COLL, spend=usd(1_000))
    await desk.price(1_300)
    assert (await desk.loop.tick(desk.coll)).actions == {"PARTIAL": 1}
    async with ledger.engine.connect() as conn:
        event = (
            await conn.execute(
                text("SELECT tick, operation_id FROM risk_events WHERE line_id = :l"),
                {"l": line.id},
            )
        ).one()
    assert event.operation_id is not None
    with pytest.raises(IntegrityError, match="risk_events_one_per_operation"):
        async with ledger.engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO risk_events (line_id, kind, tick, operation_id) "
                    "VALUES (:l, 'PARTIAL', :t, :o)"
                ),
                {"l": line.id, "t": event.tick + 1, "o": event.operation_id},
            )


async def test_a_posting_within_a_transaction_rolls_back_with_it(ledger: Ledger) -> None:
    desk = await make_desk(ledger)
    line = await desk.line(COLL)
    issuance = await ledger.accounts.system_account(desk.coll, SystemAccount.ISSUANCE, actor=ADMIN)
    before = await desk.balance(line.collateral_account_id)

    class Abort(Exception):
        pass

    async def post_then_abort() -> None:
        async with ledger.engine.begin() as conn:
            result = await ledger.post_within(
                conn,
                PostOperation(
                    OperationType.MINT,
                    transfer_legs(issuance, line.collateral_account_id, desk.coll, 7),
                    idempotency_key=f"within:{line.id}",
                ),
            )
            assert result.operation_id > 0
            raise Abort

    with pytest.raises(Abort):
        await post_then_abort()
    assert await desk.balance(line.collateral_account_id) == before
    async with ledger.engine.connect() as conn:
        found = await conn.execute(
            text("SELECT count(*) FROM operations WHERE idempotency_key = :k"),
            {"k": f"within:{line.id}"},
        )
        assert found.scalar_one() == 0
    assert await ledger.reconcile() == []


async def test_a_posting_within_needs_an_open_transaction(ledger: Ledger) -> None:
    desk = await make_desk(ledger)
    line = await desk.line(COLL)
    issuance = await ledger.accounts.system_account(desk.coll, SystemAccount.ISSUANCE, actor=ADMIN)
    command = PostOperation(
        OperationType.MINT, transfer_legs(issuance, line.collateral_account_id, desk.coll, 7)
    )
    async with ledger.engine.connect() as conn:
        with pytest.raises(RuntimeError, match="open transaction"):
            await ledger.post_within(conn, command)
    assert await desk.balance(line.collateral_account_id) == COLL
