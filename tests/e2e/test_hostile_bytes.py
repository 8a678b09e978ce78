"""Bytes no route can honour get a 4xx problem+json with a stable code on every write
route, for every role, and nothing is written: deep nesting, invalid UTF-8, a byte-order
mark, NUL and other control characters, lone surrogates, repeated keys, huge integers, a
body that is not declared JSON. Answers under /api/ are never cached (the real server's
missing ``Server`` header: ``test_serve.py``)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from core.types import Role
from tests.e2e.conftest import Api, Caller

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

JSON = {"Content-Type": "application/json"}
DEEP = b"[" * 5000 + b"]" * 5000
HOSTILE: list[tuple[str, bytes, dict[str, str], int, str]] = [
    ("deep nesting", DEEP, JSON, 400, "BAD_REQUEST"),
    ("deep objects", b'{"a":' * 3000 + b"1" + b"}" * 3000, JSON, 400, "BAD_REQUEST"),
    ("invalid UTF-8", b'{"name": "\xff\xfe"}', JSON, 400, "BAD_REQUEST"),
    ("byte-order mark", b'\xef\xbb\xbf{"name": "x"}', JSON, 400, "BAD_REQUEST"),
    ("repeated key", b'{"amount": "1.00", "amount": "2.00"}', JSON, 400, "BAD_REQUEST"),
    ("NaN", b'{"amount": NaN}', JSON, 400, "BAD_REQUEST"),
    ("huge integer", b'{"scale": ' + b"9" * 5000 + b"}", JSON, 400, "BAD_REQUEST"),
    ("not JSON", b"{'a': 1}", JSON, 400, "BAD_REQUEST"),
    ("escaped NUL", b'{"memo": "a\\u0000b"}', JSON, 422, "INVALID_CHARACTER"),
    ("lone surrogate", b'{"memo": "\\ud800"}', JSON, 422, "INVALID_CHARACTER"),
    ("control character", b'{"memo": "\\u001b[31m"}', JSON, 422, "INVALID_CHARACTER"),
    ("NUL in a key", b'{"a\\u0000": 1}', JSON, 422, "INVALID_CHARACTER"),
    ("form body", b"amount=1", {"Content-Type": "application/x-www-form-urlencoded"}, 415,
     "UNSUPPORTED_MEDIA_TYPE"),
    ("no content type", b'{"amount": "1"}', {}, 415, "UNSUPPORTED_MEDIA_TYPE"),
]  # fmt: skip


def _write_routes(spec: dict[str, Any]) -> list[tuple[str, str]]:
    """Every route that takes a body, its path parameters filled with a plausible id."""
    fill = {"integer": "1", "string": "00000000-0000-0000-0000-000000000001"}
    out = []
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method not in {"post", "put", "patch"} or "requestBody" not in op:
                continue
            params = {
                p["name"]: fill.get(p.get("schema", {}).get("type", "string"), "1")
                for p in op.get("parameters", [])
                if p["in"] == "path"
            }
            filled = re.sub(r"\{(\w+)\}", lambda m, p=params: p[m[1]], path)  # type: ignore[misc]
            out.append((method.upper(), filled))
    return out


async def test_every_write_route_refuses_hostile_bytes_with_a_4xx(api: Api) -> None:
    spec = (await api.http.get("/schema/openapi.json")).json()
    routes = _write_routes(spec)
    assert len(routes) > 20, routes  # the surface is real
    callers: list[Caller] = [api.admin, await api.caller(Role.READ_ONLY)]
    before = await _row_counts(api)
    for method, path in routes:
        for caller in callers:
            for name, raw, headers, status, code in HOSTILE:
                r = await api.http.request(
                    method, path, content=raw, headers={**caller.headers, **headers}
                )
                assert r.status_code < 500, (name, method, path, r.status_code, r.text[:200])
                assert r.headers["content-type"].startswith("application/problem+json")
                if caller is api.admin and r.status_code not in {401, 403, 404, 405}:
                    assert (r.status_code, r.json()["code"]) == (status, code), (
                        name, method, path, r.text[:300],
                    )  # fmt: skip
    assert await _row_counts(api) == before  # nothing written


async def test_nul_in_names_memos_references_and_reasons_is_a_422(api: Api) -> None:
    asset = await api.asset()
    payer, account = await api.funded_user(asset, "10.00")
    payee = await api.caller(Role.USER)
    cases = [
        ("/api/v1/assets", {"code": "NUL1", "name": "bad\x00name", "scale": 2, "kind": "POINTS"}),
        (
            "/api/v1/credits/transfer",
            {"from_account_id": account, "to_user_id": str(payee.user_id), "amount": "1.00",
             "memo": "hi\x00"},
        ),
        ("/api/v1/credits/mint",
         {"user_id": str(payer.user_id), "asset": asset, "amount": "1.00", "memo": "\x00x"}),
    ]  # fmt: skip
    for path, body in cases:
        headers = api.admin.headers if "transfer" not in path else payer.headers
        r = await api.http.post(path, content=json.dumps(body).encode(), headers=headers | JSON)
        assert (r.status_code, r.json()["code"]) == (422, "INVALID_CHARACTER"), (path, r.text)
    raw, signed = api.signed(
        {"user_id": str(payer.user_id), "asset": asset, "amount": "1.00", "reference": "r\x00"}
    )
    r = await api.http.post("/api/v1/webhooks/deposits", content=raw, headers=signed)
    assert (r.status_code, r.json()["code"]) == (422, "INVALID_CHARACTER"), r.text
    assert (await api.balance(account, payer))["available"] == "10.00"


async def test_nul_and_bad_utf8_in_the_query_or_path_are_4xx(api: Api) -> None:
    for url in (
        "/api/v1/audit?action=%00",
        "/api/v1/audit?action=%ff%fe",
        "/api/v1/accounts/1%00",
        "/api/v1/operations?cursor=%C0%80",
    ):
        r = await api.http.get(url, headers=api.admin.headers)
        assert 400 <= r.status_code < 500, (url, r.status_code, r.text[:200])


async def test_answers_are_not_cached(api: Api) -> None:
    r = await api.http.get("/api/v1/me", headers=api.admin.headers)
    assert r.headers["cache-control"] == "no-store"
    r = await api.http.get("/api/v1/me")
    assert r.status_code == 401 and r.headers["cache-control"] == "no-store"
    assert "cache-control" not in (await api.http.get("/health")).headers


async def _row_counts(api: Api) -> dict[str, int]:
    tables = (
        "ledger_entries",
        "operations",
        "accounts",
        "assets",
        "users",
        "api_keys",
        "audit_log",
    )
    async with api.services.ledger.engine.connect() as conn:
        return {t: await _count(conn, t) for t in tables}


async def _count(conn: Any, table: str) -> int:
    from sqlalchemy import text

    # unsigned webhook calls are failed authentications: audited once past the threshold
    where = " WHERE action <> 'auth.failures'" if table == "audit_log" else ""
    return int((await conn.execute(text(f"SELECT count(*) FROM {table}{where}"))).scalar_one())
