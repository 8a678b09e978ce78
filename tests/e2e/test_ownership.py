"""Every route a USER may call that names a resource in its path, decided here: OWNED (the
owner is let through; another user gets 404, the same as an id that does not exist) or
SHARED (reference data anyone of the route's roles reads). Staff readers reach every
OWNED resource a read route names. The test FAILS when a USER route with a path
parameter has no decision here — together with ``test_access.TABLE`` (route by role) it
decides route by role by own/other's resource."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from core.types import Role
from tests.e2e.conftest import Api, Caller
from tests.e2e.test_access import TABLE
from tests.e2e.test_bridges_api import TO, bridged_asset, out
from tests.e2e.test_credit_api import make_assets
from tests.e2e.test_offline_api import allowance, wallet

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

OWNED, SHARED = "owned", "shared"
#: decided here, checked where the resource can exist: a Stellar bridge-out and token need
#: the Soroban RPC stand-in (``tests/e2e/test_stellar_api.py`` asserts the same rules)
STELLAR_OWNED, STELLAR_SHARED = "owned (test_stellar_api)", "shared (test_stellar_api)"
METHOD = "SEPA"  # a repayment method the provider takes
#: route → (decision, body sent with it)
OWNERSHIP: dict[tuple[str, str], tuple[str, dict[str, Any] | None]] = {
    ("GET", "/api/v1/assets/{code:str}"): (SHARED, None),
    ("GET", "/api/v1/bridges/erc20/tokens/{asset:str}"): (SHARED, None),
    ("GET", "/api/v1/users/{user_id:uuid}"): (OWNED, None),
    ("GET", "/api/v1/users/{user_id:uuid}/wallets"): (OWNED, None),
    ("GET", "/api/v1/users/{user_id:uuid}/ledger"): (OWNED, None),
    ("GET", "/api/v1/users/{user_id:uuid}/claims"): (OWNED, None),
    ("GET", "/api/v1/accounts/{account_id:int}"): (OWNED, None),
    ("GET", "/api/v1/accounts/{account_id:int}/entries"): (OWNED, None),
    ("GET", "/api/v1/accounts/{account_id:int}/balance"): (OWNED, None),
    ("GET", "/api/v1/proofs/balances/{account_id:int}"): (OWNED, None),
    ("GET", "/api/v1/proofs/history/{account_id:int}"): (OWNED, None),
    ("GET", "/api/v1/proofs/entries/{seq:int}"): (OWNED, None),
    ("GET", "/api/v1/holds/{hold_id:int}"): (OWNED, None),
    ("POST", "/api/v1/holds/{hold_id:int}/void"): (OWNED, {"reason": "ownership test"}),
    ("POST", "/api/v1/holds/{hold_id:int}/capture"): (OWNED, {}),
    ("GET", "/api/v1/operations/{operation_id:int}"): (OWNED, None),
    ("GET", "/api/v1/transactions/{transaction_id:uuid}"): (OWNED, None),
    ("GET", "/api/v1/vaults/{vault_id:int}"): (OWNED, None),
    ("GET", "/api/v1/vaults/{vault_id:int}/entries"): (OWNED, None),
    ("GET", "/api/v1/vaults/{vault_id:int}/members"): (OWNED, None),
    ("PUT", "/api/v1/vaults/{vault_id:int}/members/{member_id:uuid}"): (OWNED, {"role": "VIEWER"}),
    ("DELETE", "/api/v1/vaults/{vault_id:int}/members/{member_id:uuid}"): (OWNED, None),
    ("GET", "/api/v1/p2p/requests/{request_id:int}"): (OWNED, None),
    ("POST", "/api/v1/p2p/requests/{request_id:int}/decline"): (OWNED, {}),
    ("POST", "/api/v1/p2p/requests/{request_id:int}/cancel"): (OWNED, {}),
    ("POST", "/api/v1/p2p/requests/{request_id:int}/settle"): (OWNED, None),
    ("GET", "/api/v1/bridges/erc20/out/{bridge_id:str}"): (OWNED, None),
    ("GET", "/api/v1/bridges/stellar/out/{bridge_id:str}"): (STELLAR_OWNED, None),
    ("GET", "/api/v1/bridges/stellar/tokens/{asset:str}"): (STELLAR_SHARED, None),
    ("GET", "/api/v1/offline/allowances/{allowance_id:int}"): (OWNED, None),
    ("GET", "/api/v1/credit/{line_id:int}"): (OWNED, None),
    ("GET", "/api/v1/credit/user/{user_id:uuid}"): (OWNED, None),
    ("POST", "/api/v1/credit/{line_id:int}/authorize"): (OWNED, {"amount": "1.00"}),
    ("POST", "/api/v1/credit/{line_id:int}/stop-loss"): (OWNED, {"answer": None}),
    ("GET", "/api/v1/collateral/{account_id:int}"): (OWNED, None),
    ("GET", "/api/v1/risk/assessment/{account_id:int}"): (OWNED, None),
    ("GET", "/api/v1/repayment/{repayment_id:uuid}"): (OWNED, None),
    ("POST", "/api/v1/offline/allowances/{allowance_id:int}/release"): (
        OWNED, {"final_cumulative": 0, "signature": "AAAA"},
    ),
    ("POST", "/api/v1/offline/devices/{device_id:int}/revoke"): (OWNED, {}),
}  # fmt: skip

#: the 404 that hides someone else's resource (it reads as "no such id")
HIDDEN = frozenset({
    "UNKNOWN_ACCOUNT", "UNKNOWN_USER", "UNKNOWN_HOLD", "UNKNOWN_OPERATION", "UNKNOWN_ENTRY",
    "VAULT_NOT_FOUND", "P2P_REQUEST_NOT_FOUND", "UNKNOWN_BRIDGE_OUT", "UNKNOWN_ALLOWANCE", "UNKNOWN_DEVICE",
    "UNKNOWN_CREDIT_LINE", "UNKNOWN_REPAYMENT", "NOT_FOUND",
})  # fmt: skip

# decline and settle are the payer's (carol's), cancel the requester's (alice's): each
# is called with a fresh request whose party the "owner" is
PARTY_OF = {"decline": "payer", "settle": "payer"}


@dataclass
class World:
    alice: Caller  # the owner
    bob: Caller  # a stranger to every resource below
    carol: Caller  # alice's counterparty
    values: dict[str, str]
    asset: str


async def _world(api: Api) -> World:
    asset = await bridged_asset(api)
    device = await wallet(api, asset, "500.00")  # alice, with a registered device key
    alice, account = device.user, device.account
    offline = await allowance(api, device, "5.00")
    bob, _ = await api.funded_user(asset, "1.00")
    carol, _ = await api.funded_user(asset, "50.00")
    mint = await api.http.post(
        "/api/v1/credits/mint",
        json={"user_id": str(alice.user_id), "asset": asset, "amount": "1.00"},
        headers=api.admin.headers,
    )
    vault = await api.http.post(
        "/api/v1/vaults", json={"asset": asset, "name": "savings"}, headers=alice.headers
    )
    raw, signed = api.signed(
        {"user_id": str(alice.user_id), "asset": asset, "amount": "1.00",
         "reference": uuid.uuid4().hex}
    )  # fmt: skip
    deposit = await api.http.post("/api/v1/webhooks/deposits", content=raw, headers=signed)
    bridge = await out(api, alice, {"asset": asset, "amount": "1.00", "to_address": TO})
    entries = await api.http.get(f"/api/v1/accounts/{account}/entries", headers=alice.headers)
    debt, collateral = await make_assets(api)
    line = await api.http.post(
        "/api/v1/credit/issue",
        json={"user_id": str(alice.user_id), "collateral_asset": collateral, "debt_asset": debt},
        headers=alice.headers,
    )
    repayment = await api.http.post(
        "/api/v1/repayment/initiate",
        json={"line_id": line.json()["id"], "amount": "1.00", "method": METHOD},
        headers=alice.headers,
    )
    for r in (mint, vault, deposit, bridge, entries, line, repayment):
        assert r.status_code in {200, 201}, r.text
    return World(
        alice,
        bob,
        carol,
        {
            "{user_id:uuid}": str(alice.user_id),
            "{account_id:int}": str(account),
            "{seq:int}": str(entries.json()["entries"][0]["seq"]),
            "{operation_id:int}": str(mint.json()["id"]),
            "{transaction_id:uuid}": deposit.json()["transaction"]["id"],
            "{vault_id:int}": str(vault.json()["id"]),
            "{member_id:uuid}": str(carol.user_id),
            "{bridge_id:str}": bridge.json()["id"],
            "{code:str}": asset,
            "{asset:str}": asset,
            "{allowance_id:int}": str(offline["id"]),
            # revoked by the test of its route: nothing else here opens an allowance
            "{device_id:int}": str(device.device_id),
            "{line_id:int}": str(line.json()["id"]),
            "{repayment_id:uuid}": repayment.json()["id"],
            # /collateral/{account_id} and /risk/assessment/{account_id} name the line's
            "line account": str(line.json()["collateral_account_id"]),
        },
        asset,
    )


async def _fresh(api: Api, world: World, kind: str, action: str) -> str:
    """A new hold or P2P request of alice's (per call: captures and closes are final)."""
    if kind == "hold":
        r = await api.http.post(
            "/api/v1/holds",
            json={"from_account_id": int(world.values["{account_id:int}"]),
                  "to_user_id": str(world.carol.user_id), "amount": "1.00"},
            headers=world.alice.headers,
        )  # fmt: skip
    elif PARTY_OF.get(action) == "payer":  # carol asks alice, who pays or declines
        r = await api.http.post(
            "/api/v1/p2p/requests",
            json={"payer_id": str(world.alice.user_id), "asset": world.asset, "amount": "1.00"},
            headers=world.carol.headers,
        )
    else:
        r = await api.http.post(
            "/api/v1/p2p/requests",
            json={"payer_id": str(world.carol.user_id), "asset": world.asset, "amount": "1.00"},
            headers=world.alice.headers,
        )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def _url(api: Api, world: World, path: str) -> str:
    action = path.rsplit("/", 1)[-1]
    if path.startswith(("/api/v1/collateral/", "/api/v1/risk/assessment/")):
        path = path.replace("{account_id:int}", world.values["line account"])
    for placeholder, value in world.values.items():
        path = path.replace(placeholder, value)
    if "{hold_id:int}" in path:
        path = path.replace("{hold_id:int}", await _fresh(api, world, "hold", action))
    if "{request_id:int}" in path:
        path = path.replace("{request_id:int}", await _fresh(api, world, "p2p", action))
    if "/proofs/balances/" in path:
        path += "?epoch=1"
    if "/proofs/history/" in path:
        path += "?to_epoch=1"
    return path


def test_every_user_route_naming_a_resource_has_an_ownership_decision() -> None:
    user_routes = {
        route for route, roles in TABLE.items()
        if isinstance(roles, set) and Role.USER in roles and "{" in route[1]
    }  # fmt: skip
    missing = sorted(user_routes - OWNERSHIP.keys())
    stale = sorted(OWNERSHIP.keys() - user_routes)
    assert not missing, f"USER routes naming a resource without an ownership decision: {missing}"
    assert not stale, f"ownership decisions for routes USERs cannot call: {stale}"


@pytest.fixture(scope="module")
async def world(api: Api) -> World:
    return await _world(api)


HERE = sorted(r for r, (d, _) in OWNERSHIP.items() if d in {OWNED, SHARED})


@pytest.mark.parametrize("route", HERE, ids=lambda r: f"{r[0]} {r[1]}")
async def test_own_and_others_resources(api: Api, world: World, route: tuple[str, str]) -> None:
    method, path = route
    decision, body = OWNERSHIP[route]
    url = await _url(api, world, path)
    stranger = await api.http.request(method, url, json=body, headers=world.bob.headers)
    if decision == SHARED:
        assert stranger.status_code == 200, stranger.text
        return
    assert stranger.status_code == 404, (url, stranger.status_code, stranger.text)
    assert stranger.json()["code"] in HIDDEN, stranger.text
    owner = await api.http.request(method, url, json=body, headers=world.alice.headers)
    assert _reached(owner), (url, owner.status_code, owner.text)
    if method != "GET":
        return
    roles = TABLE[route]
    assert isinstance(roles, set)
    for role in sorted(roles - {Role.USER}):
        staff = await api.caller(role)
        r = await api.http.get(url, headers=staff.headers)
        assert _reached(r), (role, url, r.status_code, r.text)


def _reached(r: Any) -> bool:
    """Past the guards and the ownership check (any answer but a hiding 404, or a 5xx)."""
    if r.status_code in {401, 403} or r.status_code >= 500:
        return False
    return r.status_code != 404 or r.json()["code"] not in HIDDEN
