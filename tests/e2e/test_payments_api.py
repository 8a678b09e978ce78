"""The dry run and the transfer are one use case (``core.payments``): for the same caller and
body, the dry run answers what the transfer then does — the same postings and balances when
allowed, the same error code when refused — and a hold reserves what the transfer would move."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from core.types import Role
from tests.e2e.conftest import Api, Caller
from tests.e2e.test_policy_api import active_policy

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

CAP_AND_FEE = {
    "rules": [
        {"id": "max", "kind": "amount", "max": 5_000},
        {"id": "fee", "kind": "fee", "fixed": 10, "bps": 100},
    ]
}


async def dry_then_transfer(
    api: Api, who: Caller, body: dict[str, Any]
) -> tuple[dict[str, Any], Any]:
    dry = await api.http.post("/api/v1/policies/dry-run", json=body, headers=who.headers)
    assert dry.status_code == 200, dry.text
    key = {"Idempotency-Key": "pay-" + uuid.uuid4().hex, **who.headers}
    real = await api.http.post("/api/v1/credits/transfer", json=body, headers=key)
    return dry.json(), real


async def test_the_dry_run_answers_what_the_transfer_does(api: Api) -> None:
    asset = await api.asset()
    await active_policy(api, await api.caller(Role.COMPLIANCE), asset, "TRANSFER", CAP_AND_FEE)
    alice, a = await api.funded_user(asset, "60.00")  # 39.70 left after the first transfer
    bob, _ = await api.funded_user(asset, "0")
    body = {"from_account_id": a, "to_user_id": str(bob.user_id), "amount": "20.00"}

    plan, real = await dry_then_transfer(api, alice, body)  # allowed
    assert plan["allowed"] is True and plan["denial"] is None
    assert real.status_code == 201, real.text
    posted = [(e["account_id"], e["asset"], e["amount"], e["balance_after"])
              for e in real.json()["entries"]]  # fmt: skip
    planned = [(p["account_id"], p["asset"], p["amount"], p["balance_after"])
               for p in plan["postings"]]  # fmt: skip
    assert (
        sorted(planned, key=str) == sorted(posted, key=str) and len(posted) == 4
    )  # two legs and the fee's

    for amount, code in (("50.01", "POLICY_DENIED"), ("49.00", "INSUFFICIENT_FUNDS")):
        plan, real = await dry_then_transfer(api, alice, body | {"amount": amount})  # refused
        assert plan["allowed"] is False and plan["postings"] == []
        assert plan["denial"]["code"] == code
        assert real.json()["code"] == code, real.text


@pytest.mark.parametrize("field", ["from_account_id", "to_user_id"])
async def test_the_dry_run_refuses_what_the_transfer_refuses(api: Api, field: str) -> None:
    asset = await api.asset()
    alice, a = await api.funded_user(asset, "10.00")
    mallory, m = await api.funded_user(asset, "10.00")
    body = {"from_account_id": a, "to_user_id": str(alice.user_id), "amount": "1.00"}
    if field == "from_account_id":
        body |= {"to_user_id": str(alice.user_id), "from_account_id": m}  # not alice's account
    # else: to herself, into the same account
    dry = await api.http.post("/api/v1/policies/dry-run", json=body, headers=alice.headers)
    key = {"Idempotency-Key": "pay-" + uuid.uuid4().hex, **alice.headers}
    real = await api.http.post("/api/v1/credits/transfer", json=body, headers=key)
    hold = await api.http.post("/api/v1/holds", json=body, headers=key | {"Idempotency-Key": "h"})
    assert dry.status_code == real.status_code == hold.status_code >= 400
    assert dry.json()["code"] == real.json()["code"] == hold.json()["code"]
    del mallory
