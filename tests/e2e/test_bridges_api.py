"""The ERC-20 bridge over HTTP: a bridge-out answers its state; bad input is a 4xx with a stable
code and debits nothing; a paused bridge refuses; the dry run answers what it would do."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from merkle.tree import keccak256
from tests.e2e.conftest import Api, Caller
from tests.e2e.test_policy_api import problem

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

TO = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def checksummed(address: str) -> str:
    body = address[2:].lower()
    digest = keccak256(body.encode()).hex()
    return "0x" + "".join(
        c.upper() if c.isalpha() and int(digest[i], 16) >= 8 else c for i, c in enumerate(body)
    )


async def bridged_asset(api: Api, decimals: int = 6) -> str:
    asset = await api.asset()
    token = checksummed("0x" + keccak256(asset.encode())[:20].hex())
    r = await api.http.post(
        "/api/v1/bridges/erc20/tokens",
        json={"asset": asset, "chain_id": 31337, "address": token, "decimals": decimals},
        headers=api.admin.headers,
    )
    assert r.status_code == 201, r.text
    assert r.json()["address"] == token and r.json()["paused"] is False
    return asset


async def out(api: Api, who: Caller, body: dict[str, Any], key: str | None = None) -> Any:
    headers = {**who.headers, "Idempotency-Key": key or uuid.uuid4().hex}
    return await api.http.post("/api/v1/bridges/erc20/out", json=body, headers=headers)


async def test_a_bridge_out_is_stored_and_followed(api: Api) -> None:
    asset = await bridged_asset(api)
    alice, account = await api.funded_user(asset, "50.00")
    body = {"asset": asset, "amount": "12.50", "to_address": TO}
    first = await out(api, alice, body, key="bridge-1")
    assert first.status_code == 201, first.text
    made = first.json()
    assert (made["state"], made["amount"], made["token_amount"]) == (
        "IN_FLIGHT",
        "12.50",
        "12500000",
    )
    assert made["tx_status"] == "BUILT" and made["to_address"] == TO
    assert made["confirmations"] is None  # not mined (and this API has no ETH_RPC_URL)
    again = await out(api, alice, body, key="bridge-1")
    assert again.status_code == 201 and again.json() == made  # replayed, not bridged twice
    assert (await api.balance(account))["posted"] == "37.50"

    got = await api.http.get(f"/api/v1/bridges/erc20/out/{made['id']}", headers=alice.headers)
    assert got.status_code == 200 and got.json() == made
    listed = await api.http.get("/api/v1/bridges/erc20/out", headers=alice.headers)
    assert [b["id"] for b in listed.json()["bridge_outs"]] == [made["id"]]
    mallory = await api.caller()
    problem(
        await api.http.get(f"/api/v1/bridges/erc20/out/{made['id']}", headers=mallory.headers),
        404, "UNKNOWN_BRIDGE_OUT",
    )  # fmt: skip


async def test_bad_input_is_a_4xx_and_debits_nothing(api: Api) -> None:
    asset = await bridged_asset(api, decimals=1)
    plain = await api.asset()  # no token
    alice, account = await api.funded_user(asset, "10.00")
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"to_address": TO.lower()}, 422, "INVALID_ADDRESS"),
        ({"to_address": "0x" + "0" * 40}, 422, "INVALID_ADDRESS"),
        ({"to_address": "0x1234"}, 422, "VALIDATION_ERROR"),
        ({"amount": "1.05"}, 422, "VALIDATION_ERROR"),  # one decimal on the token
        ({"amount": "10.10"}, 409, "INSUFFICIENT_FUNDS"),
        ({"amount": "0.00"}, 422, "INVALID_AMOUNT"),
        ({"asset": plain}, 404, "UNKNOWN_BRIDGE_TOKEN"),
    ]
    for change, status, code in cases:
        body = {"asset": asset, "amount": "1.00", "to_address": TO} | change
        got = await out(api, alice, body)
        assert (got.status_code, got.json().get("code")) == (status, code), (change, got.text)
    assert (await api.balance(account))["posted"] == "10.00"


async def test_a_paused_bridge_refuses_until_resumed(api: Api) -> None:
    asset = await bridged_asset(api)
    alice, _ = await api.funded_user(asset, "10.00")
    url = f"/api/v1/bridges/erc20/tokens/{asset}"
    paused = await api.http.post(
        f"{url}/pause", json={"reason": "incident"}, headers=api.admin.headers
    )
    assert paused.status_code == 200 and paused.json()["pause_reason"] == "incident"
    body = {"asset": asset, "amount": "1.00", "to_address": TO}
    problem(await out(api, alice, body), 409, "BRIDGE_PAUSED")
    ready = await api.http.get("/ready")
    assert ready.status_code == 200 and asset in ready.json()["bridges_paused"]
    plan = await api.http.post(
        "/api/v1/bridges/erc20/out/dry-run", json=body, headers=alice.headers
    )
    assert plan.status_code == 409 and plan.json()["code"] == "BRIDGE_PAUSED"
    resumed = await api.http.post(
        f"{url}/resume", json={"reason": "fixed"}, headers=api.admin.headers
    )
    assert resumed.status_code == 200 and resumed.json()["paused"] is False
    assert asset not in (await api.http.get("/ready")).json()["bridges_paused"]
    plan = await api.http.post(
        "/api/v1/bridges/erc20/out/dry-run", json=body, headers=alice.headers
    )
    assert plan.status_code == 200 and plan.json()["allowed"] is True
    assert plan.json()["operation_type"] == "BRIDGE_OUT" and len(plan.json()["postings"]) == 2
    assert (await out(api, alice, body)).status_code == 201
