"""A bearer token is never worth more than the credential it came from: it dies with its
API key (revoked, expired, its user suspended or demoted), holds at most the key's current
scopes, and refreshing never extends it past its origin's end — in this process at once,
in another API process once its authentication cache (5 s) has turned over."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import jwt as pyjwt
import pytest
from sqlalchemy import text

from api.app import create_app
from api.auth import Principal, issue_token
from core.types import Role
from tests.e2e.conftest import Api, Caller, make_settings, running

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


@pytest.fixture
async def other_process(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A second API instance (its own caches) on the same database and JWT secret."""
    async with running(create_app(make_settings(database_url))) as http:
        yield http


async def _key(api: Api, owner: Caller, scopes: list[str], **extra: object) -> tuple[str, str]:
    body = {"user_id": str(owner.user_id), "name": "pos", "scopes": scopes, **extra}
    r = await api.http.post("/api/v1/api-keys", json=body, headers=api.admin.headers)
    assert r.status_code == 201, r.text
    return r.json()["id"], r.json()["key"]


async def _token(http: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, str]:
    r = await http.post("/api/v1/auth/token", headers=headers)
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def _exp(headers: dict[str, str]) -> int:
    claims = pyjwt.decode(headers["Authorization"][7:], options={"verify_signature": False})
    return int(claims["exp"])


async def _me(http: httpx.AsyncClient, headers: dict[str, str]) -> int:
    return (await http.get("/api/v1/me", headers=headers)).status_code


async def test_a_token_dies_with_its_revoked_key_here_and_in_another_process(
    api: Api, other_process: httpx.AsyncClient
) -> None:
    owner = await api.caller(Role.USER)
    key_id, key = await _key(api, owner, ["*"])
    token = await _token(api.http, {"X-API-Key": key})
    assert await _me(api.http, token) == 200
    assert await _me(other_process, token) == 200  # the other process now remembers the key
    r = await api.http.post(f"/api/v1/api-keys/{key_id}/revoke", headers=api.admin.headers)
    assert r.status_code == 200
    assert await _me(api.http, token) == 401
    assert await _me(api.http, {"X-API-Key": key}) == 401
    r = await api.http.post("/api/v1/auth/token", headers=token)
    assert r.status_code == 401  # no refresh either
    other = other_process._transport.app.state.authenticator  # type: ignore[attr-defined]
    other.key_states.items.clear()  # what the 5 s window does: the entry turns over
    assert await _me(other_process, token) == 401


async def test_a_token_dies_when_its_key_expires_and_never_outlives_it(api: Api) -> None:
    owner = await api.caller(Role.USER)
    ends = datetime.now(UTC) + timedelta(minutes=10)
    key_id, key = await _key(api, owner, ["*"], expires_at=ends.isoformat())
    token = await _token(api.http, {"X-API-Key": key})
    assert _exp(token) <= int(ends.timestamp())  # the configured hour is cut to the key's end
    refreshed = await _token(api.http, token)
    assert _exp(refreshed) <= int(ends.timestamp())
    async with api.services.ledger.engine.begin() as conn:  # time passes: the key expires
        await conn.execute(
            text("UPDATE api_keys SET expires_at = now() - interval '1 s' WHERE id = :id"),
            {"id": key_id},
        )
    api.app.state.authenticator.forget()
    assert await _me(api.http, token) == 401
    assert await _me(api.http, refreshed) == 401


async def test_refreshing_a_persons_token_never_extends_it(api: Api) -> None:
    user = await api.caller(Role.USER)
    principal = Principal(user.user_id, Role.USER, frozenset({"*"}), f"u:{user.user_id}")
    short = issue_token(api.app.state.jwt_auth, principal, timedelta(seconds=120))
    person = {"Authorization": f"Bearer {short}"}
    first = _exp(person)
    refreshed = await _token(api.http, person)
    assert _exp(refreshed) <= first
    again = await _token(api.http, refreshed)
    assert _exp(again) <= first


async def test_suspension_demotion_and_narrowing_reach_existing_tokens(api: Api) -> None:
    staff = await api.caller(Role.OPS)
    key_id, key = await _key(api, staff, ["*"])
    token = await _token(api.http, {"X-API-Key": key})
    assert (await api.http.get("/api/v1/audit", headers=staff.headers)).status_code == 403
    r = await api.http.patch(
        f"/api/v1/api-keys/{key_id}",
        json={"scopes": ["read"], "reason": "terminal only reads"},
        headers=api.admin.headers,
    )
    assert r.status_code == 200 and r.json()["scopes"] == ["read"], r.text
    me = (await api.http.get("/api/v1/me", headers=token)).json()
    assert me["scopes"] == ["read"]
    r = await api.http.patch(
        f"/api/v1/api-keys/{key_id}",
        json={"scopes": ["read", "admin"], "reason": "widen"},
        headers=api.admin.headers,
    )
    assert (r.status_code, r.json()["code"]) == (422, "VALIDATION_ERROR")  # never widened

    async def update(**body: object) -> None:
        r = await api.http.patch(
            f"/api/v1/users/{staff.user_id}",
            json={"reason": "test", **body},
            headers=api.admin.headers,
        )
        assert r.status_code == 200, r.text

    await update(status="SUSPENDED")
    for headers in (staff.headers, token, {"X-API-Key": key}):
        assert await _me(api.http, headers) == 401
    await update(status="ACTIVE")
    assert await _me(api.http, token) == 200
    await update(role="USER")  # demoted: an OPS token and an OPS key die
    for headers in (staff.headers, token, {"X-API-Key": key}):
        assert await _me(api.http, headers) == 401
    r = await api.http.get(
        "/api/v1/audit",
        params={"entity_type": "user", "entity_id": str(staff.user_id)},
        headers=api.admin.headers,
    )
    assert r.status_code == 200, r.text
    actions = [e["action"] for e in r.json()["records"]]
    assert actions.count("user.updated") == 3, actions


async def test_updating_an_unknown_user_or_key_is_a_404(api: Api) -> None:
    r = await api.http.patch(
        f"/api/v1/users/{uuid.uuid4()}", json={"reason": "x"}, headers=api.admin.headers
    )
    assert (r.status_code, r.json()["code"]) == (404, "UNKNOWN_USER")
    r = await api.http.patch(
        "/api/v1/api-keys/0123456789abcdef",
        json={"scopes": ["read"], "reason": "x"},
        headers=api.admin.headers,
    )
    assert (r.status_code, r.json()["code"]) == (404, "UNKNOWN_API_KEY")
