"""Failed authentication is limited and audited; forged webhooks cannot use up the
provider's budget (``api.throttle``)."""

from __future__ import annotations

import json
import time

import pytest
from sqlalchemy import text

from api.app import create_app
from api.controllers.deposits import sign
from api.settings import RateLimits
from core.types import Role
from tests.e2e.conftest import WEBHOOK_SECRET, Api, make_settings, running

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

LIMITS = RateLimits(api=10_000, admin=10_000, webhooks=3, auth=10_000, auth_failures=6)


async def test_wrong_secrets_for_a_real_key_are_limited_and_audited(database_url: str) -> None:
    app = create_app(make_settings(database_url, rate_limits=LIMITS))
    async with running(app) as http:
        local = Api(app, http, None)  # type: ignore[arg-type]
        admin = await local.caller(Role.ADMIN)
        r = await http.post(
            "/api/v1/api-keys",
            json={"user_id": str(admin.user_id), "name": "pos", "scopes": ["read"]},
            headers=admin.headers,
        )
        key_id, key = r.json()["id"], r.json()["key"]
        wrong = f"vo_{key_id}_{'x' * 20}"
        codes = [
            (await http.get("/api/v1/me", headers={"X-API-Key": wrong})).status_code
            for _ in range(8)
        ]
        assert codes == [401] * 6 + [429] * 2, codes
        r = await http.get("/api/v1/me", headers={"X-API-Key": wrong})
        assert r.json()["code"] == "RATE_LIMITED"
        # the key itself is throttled for this minute, whoever presents it
        assert (await http.get("/api/v1/me", headers={"X-API-Key": key})).status_code == 429
        # a bearer token of another caller from the same address is throttled too
        assert (await http.get("/api/v1/me", headers=admin.headers)).status_code == 429
        async with app.state.services.ledger.engine.connect() as conn:
            subjects = (
                await conn.execute(
                    text("SELECT entity_id FROM audit_log WHERE action = 'auth.failures'")
                )
            ).scalars()
            assert {f"key:{key_id}", "ip:203.0.113.7"} <= set(subjects)


async def test_forged_webhooks_do_not_use_up_the_providers_budget(database_url: str) -> None:
    app = create_app(make_settings(database_url, rate_limits=LIMITS))
    async with running(app) as http:
        body = json.dumps({"user_id": "x"}).encode()
        stamp = str(int(time.time()))
        forged = {
            "X-Webhook-Timestamp": stamp,
            "X-Webhook-Signature": sign("not-the-secret", stamp, body),
            "Content-Type": "application/json",
        }
        codes = [
            (await http.post("/api/v1/webhooks/deposits", content=body, headers=forged)).status_code
            for _ in range(10)
        ]
        assert codes == [401] * 6 + [429] * 4, codes
        genuine = {**forged, "X-Webhook-Signature": sign(WEBHOOK_SECRET, stamp, body)}
        # the provider, from the very same address, still has its whole budget: 3 a minute
        codes = [
            (
                await http.post("/api/v1/webhooks/deposits", content=body, headers=genuine)
            ).status_code
            for _ in range(4)
        ]
        assert codes == [422, 422, 422, 429], (
            codes
        )  # verified (the body is invalid), then its limit
