"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from core.ledger import Ledger
from tests.conftest import settings_for
from tests.support import create_database, drop_database


@pytest.fixture
async def fresh() -> AsyncIterator[Ledger]:
    """A ledger on a database of its own (epoch 1 open, nothing sealed), dropped after."""
    url = await create_database()
    led = Ledger.connect(settings_for(url))
    try:
        yield led
    finally:
        await led.close()
        await drop_database(url)
