"""Hostile bytes over the whole OpenAPI surface, over real HTTP (uvicorn on loopback), for
an authenticated caller of every role: hypothesis draws bodies that are deeply nested,
not UTF-8, carry NUL, control characters, lone surrogates or a byte-order mark, repeat
keys, hold huge numbers, or come with the wrong content type — and hostile query strings.
Nothing answers 5xx, every answer is problem+json or the documented success, and the
ledger reconciles afterwards. Bounded: a few examples per operation and role."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.auth import Principal, issue_token
from core.credentials import Credentials
from core.db import create_engine
from core.reconcile import reconcile
from core.types import Role
from tests.e2e.conftest import BOOTSTRAP, ROLES
from tests.e2e.test_schemathesis import LiveServer

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]

#: examples per operation; each draws its caller among the roles
EXAMPLES = 8

_hostile_text = st.text(
    alphabet=st.sampled_from(["\x00", "\x1b", "\ud800", "\udfff", "\ufeff", "a", "é", " "]),
    min_size=1,
    max_size=8,
)
_json_leaf = st.one_of(
    _hostile_text,
    st.integers(min_value=-(10**60), max_value=10**60),
    st.floats(allow_nan=False),
    st.booleans(),
    st.none(),
)
_json = st.recursive(
    _json_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_hostile_text, inner, max_size=3),
    max_leaves=8,
)


def _nested(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


_bodies = st.one_of(
    st.builds(lambda doc: json.dumps(doc).encode(), _json),  # lone surrogates as \\u escapes
    st.integers(min_value=33, max_value=4000).map(_nested),
    st.integers(min_value=33, max_value=4000).map(lambda n: b"[" * n + b"]" * n),
    st.binary(min_size=1, max_size=40),  # mostly not UTF-8, not JSON
    st.just(b'\xef\xbb\xbf{"a": 1}'),
    st.just(b'{"amount": "1.00", "amount": "2.00"}'),
    st.just(b'{"amount": ' + b"9" * 5000 + b"}"),
    st.just(b'{"amount": NaN}'),
)
_content_types = st.sampled_from(
    ["application/json", "text/plain", "application/x-www-form-urlencoded", ""]
)
_queries = st.sampled_from(["", "?cursor=%00", "?limit=%ff", "?asset=%C0%80", "?q=%ED%A0%80",
                             "?reason=a%00b"])  # fmt: skip


def _operations(spec: dict[str, Any]) -> list[tuple[str, str]]:
    fill = {"integer": "1", "string": str(uuid.UUID(int=1))}
    out = []
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            params = {
                p["name"]: fill.get(p.get("schema", {}).get("type", "string"), "1")
                for p in op.get("parameters", [])
                if p["in"] == "path"
            }
            filled = re.sub(r"\{(\w+)\}", lambda m, p=params: p[m[1]], path)  # type: ignore[misc]
            out.append((method.upper(), filled))
    return out


@pytest.fixture(scope="module")
def live(database_url: str) -> Iterator[LiveServer]:
    with LiveServer(database_url) as server:
        yield server


def _tokens(live: LiveServer) -> dict[Role, str]:
    async def make() -> dict[Role, str]:
        engine = create_engine(live.settings.database.url or "", 1)
        out = {}
        try:
            for role in ROLES:
                user = await Credentials(engine).create_user(email=None, role=role, actor=BOOTSTRAP)
                principal = Principal(user.id, role, frozenset({"*"}), f"u:{user.id}")
                out[role] = issue_token(live.app.state.jwt_auth, principal)
        finally:
            await engine.dispose()
        return out

    return asyncio.run(make())


def _fuzz(http: httpx.Client, method: str, path: str, tokens: list[str], seen: list[int]) -> None:
    @given(body=_bodies, content_type=_content_types, query=_queries, token=st.sampled_from(tokens))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def hit(body: bytes, content_type: str, query: str, token: str) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        if content_type:
            headers["Content-Type"] = content_type
        sent = body if method != "GET" else None
        r = http.request(method, path + query, content=sent, headers=headers)
        seen.append(r.status_code)
        assert r.status_code < 500, (method, path, query, body[:80], r.text[:300])
        if r.status_code >= 400:
            assert r.headers["content-type"].startswith("application/problem+json")

    hit()


def test_hostile_bytes_never_get_a_5xx_for_any_role(live: LiveServer) -> None:
    tokens = _tokens(live)
    with httpx.Client(base_url=live.url, timeout=30) as http:
        operations = _operations(http.get("/schema/openapi.json").json())
        assert len(operations) >= 40, operations
        seen: list[int] = []
        for method, path in operations:
            _fuzz(http, method, path, list(tokens.values()), seen)
        print(f"hostile fuzz: {len(seen)} requests, statuses {sorted(set(seen))}")
        assert len(seen) >= len(operations) * EXAMPLES
        assert {400, 403, 422} <= set(seen)

    async def drifts() -> list[Any]:
        engine = create_engine(live.settings.database.url or "", 1)
        try:
            return await reconcile(engine)
        finally:
            await engine.dispose()

    assert asyncio.run(drifts()) == []
