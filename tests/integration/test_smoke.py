import pytest

from core.types import AccountKind
from tests.conftest import World

pytestmark = pytest.mark.integration


async def test_transfer_moves_money_and_records_balance_after(world: World) -> None:
    alice = await world.funded(10_000)
    bob = (await world.user_wallet())[AccountKind.AVAILABLE]
    result = await world.ledger.transfer(
        source=alice, destination=bob, asset=world.asset, amount=2_550
    )
    assert [(e.account_id, e.amount, e.balance_after) for e in result.entries] == [
        (alice, -2_550, 7_450),
        (bob, 2_550, 2_550),
    ]
    assert (await world.ledger.queries.balance(alice)).posted == 7_450
    assert await world.total() == 0
    assert await world.ledger.reconcile() == []
