from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from core.ledger import Ledger
from core.settings import DatabaseSettings
from core.types import AccountKind, Actor, AssetKind, OperationType, Role, SystemAccount
from tests.support import create_database, drop_database

ADMIN = Actor("test-admin", Role.ADMIN)


def settings_for(url: str, **overrides: Any) -> DatabaseSettings:
    values: dict[str, Any] = {
        "url": url,
        "data_dir": Path(".valueos/unused"),
        "pool_size": 8,
        "batch_linger_ms": 1.0,
        "batch_max": 2000,
    }
    return DatabaseSettings(**(values | overrides))


@pytest.fixture(scope="session")
async def database_url() -> AsyncIterator[str]:
    url = await create_database()
    yield url
    await drop_database(url)


@pytest.fixture(scope="session")
async def ledger(database_url: str) -> AsyncIterator[Ledger]:
    led = Ledger.connect(settings_for(database_url))
    yield led
    await led.close()


@dataclass
class World:
    """A private asset per test, so conservation checks see only this test's money."""

    ledger: Ledger
    asset: str
    issuance: int

    async def user_wallet(self) -> dict[AccountKind, int]:
        owner = await self.ledger.accounts.create_user(email=None, actor=ADMIN)
        return await self.ledger.accounts.ensure_wallet(owner, self.asset, actor=ADMIN)

    async def funded(self, amount: int) -> int:
        """A new user's AVAILABLE account holding ``amount`` minted from issuance."""
        wallet = await self.user_wallet()
        if amount:
            await self.ledger.transfer(
                source=self.issuance,
                destination=wallet[AccountKind.AVAILABLE],
                asset=self.asset,
                amount=amount,
                type_=OperationType.MINT,
            )
        return wallet[AccountKind.AVAILABLE]

    async def total(self) -> int:
        """Sum of every balance of this asset: must always be exactly 0."""
        async with self.ledger.engine.connect() as conn:
            value = (
                await conn.execute(
                    text(
                        "SELECT COALESCE(SUM(b.posted), 0) FROM balances b "
                        "JOIN accounts a ON a.id = b.account_id WHERE a.asset = :a"
                    ),
                    {"a": self.asset},
                )
            ).scalar_one()
        return int(value)


async def make_world(ledger: Ledger, *, scale: int = 2) -> World:
    """A fresh asset (unique code) with its issuance account."""
    code = "T" + uuid.uuid4().hex[:10].upper()
    await ledger.accounts.create_asset(
        code=code, name="test credit", scale=scale, kind=AssetKind.POINTS, actor=ADMIN
    )
    issuance = await ledger.accounts.system_account(code, SystemAccount.ISSUANCE, actor=ADMIN)
    return World(ledger, code, issuance)


@pytest.fixture
async def world(ledger: Ledger) -> World:
    return await make_world(ledger)
