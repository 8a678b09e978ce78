"""Every route x every role: allowed, or 401/403 as declared here.

The table is the specification. The test FAILS when the application has a route the
table does not list (a new route needs a decision) or the table lists a route that no
longer exists. "Allowed" means the guard let the call through: the answer may still be
404 or 422 (an empty body, an id that does not exist), never 401 or 403.
"""

from __future__ import annotations

import uuid

import pytest

from api.app import ValueOSApp
from core.types import Role
from tests.e2e.conftest import ROLES, Api

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

U, A, OP, C, R, AU = (
    Role.USER, Role.ADMIN, Role.OPS, Role.COMPLIANCE, Role.READ_ONLY, Role.AUDITOR,
)  # fmt: skip
EVERYONE = {U, A, OP, C, R, AU}
PUBLIC = "public"
WEBHOOK = "webhook"  # no bearer/API key: the provider's HMAC signature instead

TABLE: dict[tuple[str, str], set[Role] | str] = {
    ("GET", "/health"): PUBLIC,
    ("GET", "/ready"): PUBLIC,
    ("GET", "/metrics"): PUBLIC,
    ("GET", "/api/v1/me"): EVERYONE,
    ("POST", "/api/v1/auth/token"): EVERYONE,
    ("POST", "/api/v1/assets"): {A},
    ("GET", "/api/v1/assets"): EVERYONE,
    ("GET", "/api/v1/assets/{code:str}"): EVERYONE,
    ("POST", "/api/v1/users"): {A},
    ("PATCH", "/api/v1/users/{user_id:uuid}"): {A},
    ("GET", "/api/v1/users/{user_id:uuid}"): EVERYONE,
    ("GET", "/api/v1/users/{user_id:uuid}/wallets"): EVERYONE,
    ("GET", "/api/v1/accounts/{account_id:int}"): EVERYONE,
    ("GET", "/api/v1/accounts/{account_id:int}/entries"): EVERYONE,
    ("GET", "/api/v1/accounts/{account_id:int}/balance"): EVERYONE,
    ("POST", "/api/v1/credits/mint"): {A, OP},
    ("POST", "/api/v1/credits/transfer"): {U},
    ("POST", "/api/v1/credits/move"): {U, A, OP},
    ("POST", "/api/v1/credits/burn"): {U, A, OP},
    ("POST", "/api/v1/holds"): {U},
    ("GET", "/api/v1/holds/{hold_id:int}"): EVERYONE,
    ("POST", "/api/v1/holds/{hold_id:int}/capture"): {U, A, OP},
    ("POST", "/api/v1/holds/{hold_id:int}/void"): {U, A, OP},
    ("POST", "/api/v1/holds/expire"): {A, OP},
    ("GET", "/api/v1/operations/{operation_id:int}"): EVERYONE,
    ("POST", "/api/v1/operations/{operation_id:int}/reverse"): {A},
    ("POST", "/api/v1/adjustments"): {OP},
    ("POST", "/api/v1/webhooks/deposits"): WEBHOOK,
    ("GET", "/api/v1/transactions/{transaction_id:uuid}"): EVERYONE,
    ("POST", "/api/v1/transactions/{transaction_id:uuid}/release"): {C},
    ("POST", "/api/v1/api-keys"): {A},
    ("POST", "/api/v1/api-keys/{key_id:str}/revoke"): {A},
    ("PATCH", "/api/v1/api-keys/{key_id:str}"): {A},
    ("POST", "/api/v1/vaults"): {U},
    ("GET", "/api/v1/vaults"): EVERYONE,
    ("GET", "/api/v1/vaults/{vault_id:int}"): EVERYONE,
    ("GET", "/api/v1/vaults/{vault_id:int}/entries"): EVERYONE,
    ("GET", "/api/v1/vaults/{vault_id:int}/members"): EVERYONE,
    ("PUT", "/api/v1/vaults/{vault_id:int}/members/{member_id:uuid}"): {U},
    ("DELETE", "/api/v1/vaults/{vault_id:int}/members/{member_id:uuid}"): {U},
    ("POST", "/api/v1/vaults/moves"): {U},
    ("POST", "/api/v1/p2p/requests"): {U},
    ("GET", "/api/v1/p2p/requests"): EVERYONE,
    ("GET", "/api/v1/p2p/requests/{request_id:int}"): EVERYONE,
    ("POST", "/api/v1/p2p/requests/{request_id:int}/settle"): {U},
    ("POST", "/api/v1/p2p/requests/{request_id:int}/decline"): {U},
    ("POST", "/api/v1/p2p/requests/{request_id:int}/cancel"): {U},
    ("POST", "/api/v1/p2p/expire"): {A, OP},
    ("GET", "/api/v1/me/ledger"): EVERYONE,
    ("GET", "/api/v1/users/{user_id:uuid}/ledger"): EVERYONE,
    ("POST", "/api/v1/attestations"): {A, C},
    ("POST", "/api/v1/attestations/{attestation_id:int}/revoke"): {A, C},
    ("GET", "/api/v1/users/{user_id:uuid}/attestations"): {A, C, AU},
    ("GET", "/api/v1/users/{user_id:uuid}/claims"): {U, A, C, AU},
    ("POST", "/api/v1/policies"): {A, C},
    ("GET", "/api/v1/policies"): {A, OP, C, R, AU},
    ("GET", "/api/v1/policies/schema"): EVERYONE,
    ("GET", "/api/v1/policies/{policy_id:int}"): {A, OP, C, R, AU},
    ("POST", "/api/v1/policies/{policy_id:int}/activate"): {A, C},
    ("POST", "/api/v1/policies/retire"): {A, C},
    ("POST", "/api/v1/policies/dry-run"): EVERYONE,
    ("POST", "/api/v1/bridges/erc20/out"): {U},
    ("POST", "/api/v1/bridges/erc20/out/dry-run"): {U},
    ("GET", "/api/v1/bridges/erc20/out"): {U},
    ("GET", "/api/v1/bridges/erc20/out/{bridge_id:str}"): EVERYONE,
    ("POST", "/api/v1/bridges/erc20/tokens"): {A},
    ("GET", "/api/v1/bridges/erc20/tokens/{asset:str}"): EVERYONE,
    ("POST", "/api/v1/bridges/erc20/tokens/{asset:str}/pause"): {A, OP},
    ("POST", "/api/v1/bridges/erc20/tokens/{asset:str}/resume"): {A, OP},
    ("GET", "/api/v1/bridges/erc20/suspense"): {A, OP, C, R, AU},
    ("POST", "/api/v1/bridges/erc20/suspense/resolve"): {A, OP},
    ("GET", "/api/v1/offline/issuer"): EVERYONE,
    ("POST", "/api/v1/offline/devices"): {U},
    ("GET", "/api/v1/offline/devices"): EVERYONE,
    ("POST", "/api/v1/offline/devices/{device_id:int}/revoke"): {U, A, OP},
    ("POST", "/api/v1/offline/allowances"): {U},
    ("GET", "/api/v1/offline/allowances"): EVERYONE,
    ("GET", "/api/v1/offline/allowances/{allowance_id:int}"): EVERYONE,
    ("POST", "/api/v1/offline/allowances/{allowance_id:int}/release"): {U},
    ("POST", "/api/v1/offline/redemptions"): {U},
    ("GET", "/api/v1/offline/redemptions"): EVERYONE,
    ("POST", "/api/v1/bridges/stellar/out"): {U},
    ("POST", "/api/v1/bridges/stellar/out/dry-run"): {U},
    ("GET", "/api/v1/bridges/stellar/out"): {U},
    ("GET", "/api/v1/bridges/stellar/out/{bridge_id:str}"): EVERYONE,
    ("POST", "/api/v1/bridges/stellar/links/challenge"): {U},
    ("POST", "/api/v1/bridges/stellar/links"): {U},
    ("GET", "/api/v1/bridges/stellar/links"): {U},
    ("POST", "/api/v1/bridges/stellar/tokens"): {A},
    ("GET", "/api/v1/bridges/stellar/tokens/{asset:str}"): EVERYONE,
    ("POST", "/api/v1/bridges/stellar/tokens/{asset:str}/pause"): {A, OP},
    ("POST", "/api/v1/bridges/stellar/tokens/{asset:str}/resume"): {A, OP},
    ("GET", "/api/v1/bridges/stellar/suspense"): {A, OP, C, R, AU},
    ("POST", "/api/v1/bridges/stellar/suspense/resolve"): {A, OP},
    ("GET", "/api/v1/anchors"): {A, C, R, AU},
    ("GET", "/api/v1/proofs/entries/{seq:int}"): {U, A, C, R, AU},
    ("GET", "/api/v1/proofs/balances/{account_id:int}"): {U, A, C, R, AU},
    ("GET", "/api/v1/proofs/history/{account_id:int}"): {U, A, C, R, AU},
    ("GET", "/api/v1/audit"): {A, C, AU},
    ("POST", "/api/v1/credit/issue"): {U, A, OP},
    ("GET", "/api/v1/credit/{line_id:int}"): EVERYONE,
    ("GET", "/api/v1/credit/user/{user_id:uuid}"): EVERYONE,
    ("POST", "/api/v1/credit/{line_id:int}/authorize"): {U, A, OP},
    ("POST", "/api/v1/credit/{line_id:int}/stop-loss"): {U, A, OP},
    ("POST", "/api/v1/collateral/deposit"): {U, A, OP},
    ("POST", "/api/v1/collateral/withdraw"): {U, A, OP},
    ("GET", "/api/v1/collateral/{account_id:int}"): EVERYONE,
    ("GET", "/api/v1/risk/assessment/{account_id:int}"): EVERYONE,
    ("POST", "/api/v1/risk/liquidation"): {A},
    ("POST", "/api/v1/risk/prices"): {A, OP},
    ("POST", "/api/v1/risk/parameters"): {A},
    ("GET", "/api/v1/risk/parameters"): {A, OP, C, R, AU},
    ("GET", "/api/v1/risk/parameters/{parameters_id:int}"): {A, OP, C, R, AU},
    ("POST", "/api/v1/risk/parameters/{parameters_id:int}/activate"): {A},
    ("POST", "/api/v1/repayment/initiate"): {U, A, OP},
    ("GET", "/api/v1/repayment/{repayment_id:uuid}"): EVERYONE,
    ("POST", "/api/v1/repayment/webhook"): WEBHOOK,
}

SAMPLE = {
    "{code:str}": "NOPE",
    "{user_id:uuid}": str(uuid.uuid4()),
    "{account_id:int}": "999999999",
    "{hold_id:int}": "999999999",
    "{operation_id:int}": "999999999",
    "{transaction_id:uuid}": str(uuid.uuid4()),
    "{key_id:str}": "0123456789abcdef",
    "{vault_id:int}": "999999999",
    "{member_id:uuid}": str(uuid.uuid4()),
    "{request_id:int}": "999999999",
    "{attestation_id:int}": "999999999",
    "{policy_id:int}": "999999999",
    "{seq:int}": "999999999",
    "{allowance_id:int}": "999999999",
    "{device_id:int}": "999999999",
    "{line_id:int}": "999999999",
    "{parameters_id:int}": "999999999",
    "{repayment_id:uuid}": str(uuid.uuid4()),
}


def app_routes(app: ValueOSApp) -> set[tuple[str, str]]:
    return {
        (method, route.path)
        for route in app.routes
        if not route.path.startswith("/schema")
        for handler in getattr(route, "route_handlers", [])
        for method in getattr(handler, "http_methods", ())
        if method != "OPTIONS"
    }


def concrete(path: str) -> str:
    for placeholder, value in SAMPLE.items():
        path = path.replace(placeholder, value)
    return path


def test_every_route_has_a_decision(api: Api) -> None:
    routes = app_routes(api.app)
    missing = sorted(routes - TABLE.keys())
    stale = sorted(TABLE.keys() - routes)
    assert not missing, f"routes without an entry in the access table: {missing}"
    assert not stale, f"table entries for routes that do not exist: {stale}"


@pytest.mark.parametrize("route", sorted(TABLE), ids=lambda r: f"{r[0]} {r[1]}")
async def test_route_by_role(api: Api, route: tuple[str, str]) -> None:
    method, path = route
    url = concrete(path)
    expected = TABLE[route]
    body = {} if method == "POST" else None

    anonymous = await api.http.request(method, url, json=body)
    if expected == PUBLIC:
        assert anonymous.status_code not in {401, 403}, anonymous.text
        assert anonymous.status_code < 500, anonymous.text
        return
    assert anonymous.status_code == 401, anonymous.text
    assert anonymous.headers["content-type"].startswith("application/problem+json")
    if expected == WEBHOOK:
        assert anonymous.json()["code"] == "INVALID_SIGNATURE"
        return
    assert anonymous.json()["code"] == "UNAUTHENTICATED"
    assert isinstance(expected, set)
    for role in ROLES:
        caller = await api.caller(role)
        r = await api.http.request(method, url, json=body, headers=caller.headers)
        if role in expected:
            # allowed: past authorization, answered by the handler (a 500 is no answer)
            assert r.status_code not in {401, 403}, f"{role} refused: {r.text}"
            assert r.status_code < 500, f"{role} got {r.status_code}: {r.text}"
        else:
            assert r.status_code == 403, f"{role} allowed ({r.status_code}): {r.text}"
            assert r.json()["code"] == "FORBIDDEN"


async def test_key_scopes_narrow_a_role(api: Api) -> None:
    """An API key with only the "read" scope cannot move funds even as a USER."""
    user = await api.caller(Role.USER)
    r = await api.http.post(
        "/api/v1/api-keys",
        json={"user_id": str(user.user_id), "name": "pos-1", "scopes": ["read"]},
        headers=api.admin.headers,
    )
    assert r.status_code == 201, r.text
    key = {"X-API-Key": r.json()["key"]}
    assert (await api.http.get("/api/v1/me", headers=key)).json()["role"] == "USER"
    r = await api.http.post("/api/v1/credits/transfer", json={}, headers=key)
    assert r.status_code == 403 and "scope" in r.json()["detail"]
    # a token minted from the key keeps its scopes and its client namespace
    t = await api.http.post("/api/v1/auth/token", headers=key)
    assert t.status_code == 200, t.text
    bearer = {"Authorization": f"Bearer {t.json()['access_token']}"}
    me = (await api.http.get("/api/v1/me", headers=bearer)).json()
    assert me["scopes"] == ["read"] and me["client"].startswith("k:")
    # revoked: refused at once on this process
    key_id = key["X-API-Key"].split("_")[1]
    assert (
        await api.http.post(f"/api/v1/api-keys/{key_id}/revoke", headers=api.admin.headers)
    ).status_code == 200
    assert (await api.http.get("/api/v1/me", headers=key)).status_code == 401


async def test_bad_credentials_are_401(api: Api) -> None:
    for headers in (
        {"Authorization": "Bearer not-a-jwt"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"X-API-Key": "vo_0123456789abcdef_wrong"},
        {"X-API-Key": "garbage"},
    ):
        r = await api.http.get("/api/v1/me", headers=headers)
        assert r.status_code == 401, (headers, r.text)
        assert r.json()["code"] == "UNAUTHENTICATED"
