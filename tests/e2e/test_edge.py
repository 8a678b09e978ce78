"""The edge: trace ids, security headers, rate limits (429 with the standard headers),
metrics, OpenAPI and docs."""

from __future__ import annotations

import pytest

from api.app import create_app
from api.settings import RateLimits
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
