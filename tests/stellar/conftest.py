from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from chain.stellar.client import Destinations
from core.bridges.stellar import StellarBridgeOuts, StellarToken, register_stellar_token
from core.directory import Directory
from core.ledger import Ledger
from tests.conftest import ADMIN, World, make_world
from tests.stellar.net import StellarNet, make_net


@pytest.fixture
async def world(ledger: Ledger) -> World:
    return await make_world(ledger)


@pytest.fixture
async def net(world: World) -> AsyncIterator[StellarNet]:
    found = make_net(world.asset)
    await found.deploy()
    yield found
    await found.client.close()
    found.served.stop()


@pytest.fixture
async def token(world: World, net: StellarNet) -> StellarToken:
    return await register_stellar_token(
        world.ledger,
        asset=world.asset,
        passphrase=net.passphrase,
        code=net.code,
        issuer=net.issuer.public_key,
        contract=net.contract,
        actor=ADMIN,
    )


@pytest.fixture
def bridge(world: World, net: StellarNet) -> StellarBridgeOuts:
    return StellarBridgeOuts(Directory(world.ledger), Destinations(net.client))
