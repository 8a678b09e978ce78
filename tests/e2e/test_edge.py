"""The edge: trace ids, security headers, rate limits (429 with the standard headers),
metrics, OpenAPI and docs."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from litestar.security.jwt import Token

from api.app import create_app
from api.auth import Authenticator
from api.settings import RateLimits
from core.errors import LedgerError
from core.request_records import Records
from core.types import Role
from tests.e2e.conftest import Api, make_settings, running

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


async def test_trace_id_and_security_headers(api: Api) -> None:
    r = await api.http.get("/health", headers={"X-Request-ID": "req-123"})
    assert r.headers["x-request-id"] == "req-123"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert "camera=()" in r.headers["permissions-policy"]
    assert "strict-transport-security" not in r.headers  # off unless VALUEOS_HSTS
    tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    r = await api.http.get("/nowhere", headers={"traceparent": tp})
    assert r.status_code == 404
    assert r.json()["trace_id"] == r.headers["x-request-id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert r.headers["x-frame-options"] == "DENY"  # unrouted requests get them too
    r = await api.http.get("/health", headers={"X-Request-ID": "bad id with spaces"})
    assert (
        r.headers["x-request-id"] != "bad id with spaces" and len(r.headers["x-request-id"]) == 32
    )


async def test_openapi_docs_and_metrics(api: Api) -> None:
    r = await api.http.get("/schema/openapi.json")
    assert r.status_code == 200
    spec = r.json()
    assert "/api/v1/credits/transfer" in spec["paths"]
    assert spec["components"]["schemas"]["Problem"]["required"][0] == "type"
    docs = await api.http.get("/schema/swagger")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    await api.http.get("/api/v1/me", headers=api.admin.headers)
    metrics = (await api.http.get("/metrics")).text
    assert "valueos_requests_total" in metrics
    assert "valueos_api_postings_total" in metrics
    assert "valueos_api_errors_total" in metrics


async def test_rate_limit_429_per_client_and_group(database_url: str) -> None:
    app = create_app(
        make_settings(database_url, rate_limits=RateLimits(api=3, admin=2, webhooks=2, auth=2))
    )
    async with running(app) as http:
        local = Api(app, http, None)  # type: ignore[arg-type]
        alice = await local.caller(Role.USER)
        bob = await local.caller(Role.USER)
        codes = [
            (await http.get("/api/v1/me", headers=alice.headers)).status_code for _ in range(4)
        ]
        assert codes == [200, 200, 200, 429]
        r = await http.get("/api/v1/assets", headers=alice.headers)
        assert r.status_code == 429
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["code"] == "RATE_LIMITED"
        assert r.headers["ratelimit-limit"] == "3" and r.headers["ratelimit-remaining"] == "0"
        assert int(r.headers["retry-after"]) >= 0 and "ratelimit-policy" in r.headers
        # another client has its own budget; another group too
        assert (await http.get("/api/v1/me", headers=bob.headers)).status_code == 200
        assert (await http.post("/api/v1/auth/token", headers=alice.headers)).status_code == 200
        # public probes are not limited
        assert all([(await http.get("/health")).status_code == 200 for _ in range(5)])


def test_logs_are_json_with_secrets_redacted() -> None:
    import json
    import logging

    from api.logs import JsonFormatter, trace_id_var

    token = trace_id_var.set("trace-1")
    try:
        record = logging.makeLogRecord(
            {
                "name": "valueos.test",
                "levelname": "INFO",
                "msg": "auth with Bearer eyJabc.def.ghi and key vo_0123456789abcdef_s3cr3t",
                "authorization": "Bearer xyz",
                "body": {"password": "p", "amount": "1.00"},
            }
        )
        out = json.loads(JsonFormatter().format(record))
    finally:
        trace_id_var.reset(token)
    assert out["trace_id"] == "trace-1"
    assert "eyJabc" not in out["msg"] and "s3cr3t" not in out["msg"]
    assert out["authorization"] == "[REDACTED]"
    assert out["body"] == {"password": "[REDACTED]", "amount": "1.00"}


async def test_metrics_token_when_configured(database_url: str) -> None:
    app = create_app(make_settings(database_url, metrics_token="scrape-me"))  # noqa: S106
    async with running(app) as http:
        assert (await http.get("/health")).status_code == 200
        r = await http.get("/metrics")
        assert r.status_code == 401
        assert r.headers["content-type"].startswith("application/problem+json")
        wrong = await http.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        ok = await http.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
        assert ok.status_code == 200 and "valueos_requests_total" in ok.text


async def test_idempotency_records_are_group_committed(api: Api) -> None:
    """Concurrent claims share one statement; each caller still gets its own answer."""
    records = Records(api.services.ledger.engine)
    client = f"t:{uuid.uuid4()}"
    try:
        keys = [f"k{i}" for i in range(12)]
        claims = await asyncio.gather(
            *(records.claim(client, k, k.encode(), {"i": i}) for i, k in enumerate(keys))
        )
        assert [c[0] for c in claims] == ["new"] * 12
        assert [c[1] for c in claims] == [{"i": i} for i in range(12)]
        assert (records.flushes, records.rows) == (1, 12)
        # the same record twice in one batch: the second goes to the next statement
        again = await asyncio.gather(
            records.claim(client, "dup", b"h", {}), records.claim(client, "dup", b"h", {})
        )
        assert sorted(state for state, _ in again) == ["busy", "new"]
        # completions, a forgotten record, and a row PostgreSQL rejects (NUL in jsonb):
        # only the bad one fails
        results = await asyncio.gather(
            records.finish(client, "k0", 201, {"ok": True}),
            records.finish(client, "k1", None, None),
            records.finish(client, "k2", 409, {"bad": "\u0000"}),
            return_exceptions=True,
        )
        assert results[:2] == [None, None]
        assert isinstance(results[2], LedgerError), results[2]  # a core error, not asyncpg's
        assert results[2].code == "VALIDATION_ERROR"
        assert await records.claim(client, "k0", b"k0", {}) == ("done", (201, {"ok": True}))
        assert (await records.claim(client, "k1", b"other", {}))[0] == "new"
        assert (await records.claim(client, "k2", b"k2", {}))[0] == "busy"
    finally:
        await records.close()


async def test_replayed_transfers_under_concurrency(api: Api) -> None:
    asset = await api.asset()
    payer, source = await api.funded_user(asset, "100.00")
    payee = await api.caller(Role.USER)
    body = {"from_account_id": source, "to_user_id": str(payee.user_id), "amount": "1.00"}

    async def post(key: str, amount: str = "1.00") -> tuple[int, str | None, int | None]:
        r = await api.http.post(
            "/api/v1/credits/transfer",
            json={**body, "amount": amount},
            headers={**payer.headers, "Idempotency-Key": key},
        )
        return r.status_code, r.headers.get("idempotent-replayed"), r.json().get("id")

    first = await asyncio.gather(*(post(f"t{i}") for i in range(10)))
    assert {status for status, _, _ in first} == {201}
    replays = await asyncio.gather(*(post(f"t{i}") for i in range(10)), post("t0", "2.00"))
    assert [r[2] for r in replays[:10]] == [r[2] for r in first]
    assert {r[1] for r in replays[:10]} == {"true"}
    assert replays[10][0] == 409
    assert (await api.balance(source, payer))["available"] == "90.00"


def test_verified_tokens_are_remembered_until_they_expire() -> None:
    auth = Authenticator(credentials=None)  # type: ignore[arg-type]
    calls: list[str] = []

    def decoder(exp: datetime) -> Token:
        calls.append("decode")
        token = Token(exp=datetime.now(UTC) + timedelta(minutes=1), sub="u")
        token.exp = exp  # as it would be moments after decoding (Token refuses a past exp)
        return token

    soon = datetime.now(UTC) + timedelta(hours=1)
    assert auth.verified("a", lambda: decoder(soon)).sub == "u"
    assert auth.verified("a", lambda: decoder(soon)).sub == "u"
    assert calls == ["decode"]
    past = datetime.now(UTC) - timedelta(seconds=1)
    auth.verified("b", lambda: decoder(past))
    auth.verified("b", lambda: decoder(past))  # an expired token is never remembered
    assert calls == ["decode"] * 3


async def test_bad_bearer_tokens_stay_rejected(api: Api) -> None:
    bad = {"Authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"}
    for _ in range(2):
        assert (await api.http.get("/api/v1/me", headers=bad)).status_code == 401
    for _ in range(2):
        assert (await api.http.get("/api/v1/me", headers=api.admin.headers)).status_code == 200
