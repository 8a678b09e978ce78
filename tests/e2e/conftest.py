"""E2E fixtures: the real application (its own pool) on the session's throwaway database,
reached over HTTP through httpx's ASGI transport, with callers of every role."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from api.app import ValueOSApp, create_app
from api.auth import Principal, issue_token
from api.controllers.deposits import sign
from api.services import Services
from api.settings import ApiSettings, RateLimits
from core.credentials import Credentials
from core.risk.price_signing import public_key_of
from core.types import AccountKind, Actor, Role
from tests.conftest import settings_for

WEBHOOK_SECRET = "test-webhook-secret"  # noqa: S105 - a test fixture
#: the e2e app trusts one ops price signer with this seed (a test fixture)
PRICE_SIGNER, PRICE_SIGNER_SEED = "ops-e2e", bytes(range(32))
BOOTSTRAP = Actor("e2e-bootstrap", Role.SYSTEM)
ROLES = (Role.USER, Role.ADMIN, Role.OPS, Role.COMPLIANCE, Role.READ_ONLY, Role.AUDITOR)
HIGH = RateLimits(api=100_000, admin=100_000, webhooks=100_000, auth=100_000, auth_failures=100_000)


def make_settings(database_url: str, **overrides: Any) -> ApiSettings:
    values: dict[str, Any] = {
        "jwt_secret": "e2e-" + "s" * 60,
        "webhook_secret": WEBHOOK_SECRET,
        "database": settings_for(database_url),
        "rate_limits": HIGH,
        "price_signers": {PRICE_SIGNER: public_key_of(PRICE_SIGNER_SEED)},
    }
    return ApiSettings(**(values | overrides))


@dataclass
class Caller:
    user_id: uuid.UUID
    role: Role
    headers: dict[str, str]


@dataclass
class Api:
    """The client plus helpers to make callers and fixtures through the HTTP API."""

    app: ValueOSApp
    http: httpx.AsyncClient
    admin: Caller

    @property
    def services(self) -> Services:
        return self.app.state.services  # type: ignore[no-any-return]

    async def caller(self, role: Role = Role.USER, scopes: tuple[str, ...] = ("*",)) -> Caller:
        creds = Credentials(self.services.ledger.engine)
        user = await creds.create_user(email=None, role=role, actor=BOOTSTRAP)
        principal = Principal(user.id, role, frozenset(scopes), f"u:{user.id}")
        token = issue_token(self.app.state.jwt_auth, principal)
        return Caller(user.id, role, {"Authorization": f"Bearer {token}"})

    async def asset(self, scale: int = 2) -> str:
        code = "E" + uuid.uuid4().hex[:10].upper()
        r = await self.http.post(
            "/api/v1/assets",
            json={"code": code, "name": "e2e credit", "scale": scale, "kind": "POINTS"},
            headers=self.admin.headers,
        )
        assert r.status_code == 201, r.text
        return code

    async def funded_user(self, asset: str, amount: str) -> tuple[Caller, int]:
        """A new USER with ``amount`` minted into their AVAILABLE account (id returned)."""
        user = await self.caller(Role.USER)
        if amount == "0":
            wallet = await self.services.wallet(user.user_id, asset, BOOTSTRAP)
            return user, wallet[AccountKind.AVAILABLE]
        r = await self.http.post(
            "/api/v1/credits/mint",
            json={"user_id": str(user.user_id), "asset": asset, "amount": amount},
            headers=self.admin.headers,
        )
        assert r.status_code == 201, r.text
        return user, await self.available(user, asset)

    async def available(self, user: Caller, asset: str) -> int:
        r = await self.http.get(f"/api/v1/users/{user.user_id}/wallets", headers=user.headers)
        assert r.status_code == 200, r.text
        wallet = next(w for w in r.json() if w["asset"] == asset)
        return int(
            next(c for c in wallet["compartments"] if c["kind"] == "AVAILABLE")["account_id"]
        )

    async def balance(self, account_id: int, who: Caller | None = None) -> dict[str, Any]:
        r = await self.http.get(
            f"/api/v1/accounts/{account_id}", headers=(who or self.admin).headers
        )
        assert r.status_code == 200, r.text
        return r.json()["balance"]  # type: ignore[no-any-return]

    def signed(
        self, body: dict[str, Any], secret: str = WEBHOOK_SECRET
    ) -> tuple[bytes, dict[str, str]]:
        raw = json.dumps(body).encode()
        stamp = str(int(time.time()))
        return raw, {
            "X-Webhook-Timestamp": stamp,
            "X-Webhook-Signature": sign(secret, stamp, raw),
            "Content-Type": "application/json",
        }


@contextlib.asynccontextmanager
async def running(app: ValueOSApp) -> AsyncIterator[httpx.AsyncClient]:
    """The app's lifespan driven in THIS event loop (the pool lives here), and an httpx
    client speaking HTTP to it through the ASGI transport."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    task = asyncio.create_task(app(scope, inbox.get, outbox.put))  # type: ignore[arg-type]
    await inbox.put({"type": "lifespan.startup"})
    started = await outbox.get()
    assert started["type"] == "lifespan.startup.complete", started
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 4242))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://valueos.test") as http:
            yield http
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        await outbox.get()
        await task


@pytest.fixture(scope="session")
async def api(database_url: str) -> AsyncIterator[Api]:
    app = create_app(make_settings(database_url))
    async with running(app) as http:
        creds = Credentials(app.state.services.ledger.engine)
        admin = await creds.create_user(email=None, role=Role.ADMIN, actor=BOOTSTRAP)
        token = issue_token(
            app.state.jwt_auth, Principal(admin.id, Role.ADMIN, frozenset({"*"}), f"u:{admin.id}")
        )
        yield Api(app, http, Caller(admin.id, Role.ADMIN, {"Authorization": f"Bearer {token}"}))
