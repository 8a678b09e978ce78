"""Writes keep the rules the README states: nothing is paid to a suspended user, an unknown
user is UNKNOWN_USER (not UNKNOWN_ASSET), staff never capture a user's hold, and an
adjustment moves value between two accounts at least. Each refusal writes nothing."""

from __future__ import annotations

import uuid

import pytest

from core.types import Role
from tests.e2e.conftest import Api

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


async def test_nothing_is_paid_to_a_suspended_user(api: Api) -> None:
    asset = await api.asset()
    payer, account = await api.funded_user(asset, "10.00")
    payee = await api.caller(Role.USER)
    r = await api.http.patch(
        f"/api/v1/users/{payee.user_id}",
        json={"status": "SUSPENDED", "reason": "fraud review"},
        headers=api.admin.headers,
    )
    assert r.status_code == 200, r.text
    to_payee = {"to_user_id": str(payee.user_id), "amount": "1.00"}
    for path, body, who in (
        ("/api/v1/credits/transfer", {"from_account_id": account, **to_payee}, payer),
        ("/api/v1/holds", {"from_account_id": account, **to_payee, "expires_in": 60}, payer),
        ("/api/v1/credits/mint", {"user_id": str(payee.user_id), "asset": asset,
                                  "amount": "1.00"}, api.admin),
    ):  # fmt: skip
        r = await api.http.post(path, json=body, headers=who.headers)
        assert (r.status_code, r.json()["code"]) == (409, "USER_SUSPENDED"), (path, r.text)
    assert (await api.balance(account, payer))["available"] == "10.00"
    # a deposit the provider already received still lands, BLOCKED, for compliance
    raw, signed = api.signed(
        {"user_id": str(payee.user_id), "asset": asset, "amount": "2.00", "reference": "d-1"}
    )
    r = await api.http.post("/api/v1/webhooks/deposits", content=raw, headers=signed)
    assert r.status_code == 201, r.text


async def test_an_unknown_user_is_unknown_user_not_unknown_asset(api: Api) -> None:
    asset = await api.asset()
    payer, account = await api.funded_user(asset, "10.00")
    nobody = str(uuid.uuid4())
    r = await api.http.post(
        "/api/v1/credits/transfer",
        json={"from_account_id": account, "to_user_id": nobody, "amount": "1.00"},
        headers=payer.headers,
    )
    assert (r.status_code, r.json()["code"]) == (404, "UNKNOWN_USER"), r.text
    r = await api.http.post(
        "/api/v1/credits/mint",
        json={"user_id": nobody, "asset": asset, "amount": "1.00"},
        headers=api.admin.headers,
    )
    assert (r.status_code, r.json()["code"]) == (404, "UNKNOWN_USER"), r.text
    raw, signed = api.signed(
        {"user_id": nobody, "asset": asset, "amount": "2.00", "reference": "d-2"}
    )
    r = await api.http.post("/api/v1/webhooks/deposits", content=raw, headers=signed)
    assert (r.status_code, r.json()["code"]) == (404, "UNKNOWN_USER"), r.text
    r = await api.http.post(
        "/api/v1/credits/mint",
        json={"user_id": nobody, "asset": "NOSUCH", "amount": "1.00"},
        headers=api.admin.headers,
    )
    assert (r.status_code, r.json()["code"]) == (404, "UNKNOWN_ASSET"), r.text


async def test_staff_never_capture_a_users_hold_but_may_void_it(api: Api) -> None:
    asset = await api.asset()
    payer, account = await api.funded_user(asset, "10.00")
    merchant = await api.caller(Role.USER)
    r = await api.http.post(
        "/api/v1/holds",
        json={"from_account_id": account, "to_user_id": str(merchant.user_id),
              "amount": "4.00", "expires_in": 600},
        headers=payer.headers,
    )  # fmt: skip
    hold = r.json()["id"]
    ops = await api.caller(Role.OPS)
    for staff in (ops, api.admin):
        r = await api.http.post(f"/api/v1/holds/{hold}/capture", json={}, headers=staff.headers)
        assert r.status_code == 403, r.text
    r = await api.http.post(
        f"/api/v1/holds/{hold}/void", json={"reason": "dispute"}, headers=ops.headers
    )
    assert r.status_code == 200 and r.json()["status"] == "VOIDED", r.text
    assert (await api.balance(account, payer))["available"] == "10.00"


async def test_an_adjustment_with_both_legs_on_one_account_is_refused(api: Api) -> None:
    asset = await api.asset()
    _, account = await api.funded_user(asset, "10.00")
    ops = await api.caller(Role.OPS)
    r = await api.http.post(
        "/api/v1/adjustments",
        json={
            "reason": "self",
            "entries": [
                {"account_id": account, "amount": "1.00", "side": "DEBIT"},
                {"account_id": account, "amount": "1.00", "side": "CREDIT"},
            ],
        },
        headers=ops.headers,
    )
    assert (r.status_code, r.json()["code"]) == (422, "UNBALANCED_OPERATION"), r.text
