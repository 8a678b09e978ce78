from __future__ import annotations

import pytest

from tests.e2e.conftest import Api

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


async def test_health_ready_and_transfer(api: Api) -> None:
    r = await api.http.get("/health")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    r = await api.http.get("/ready")
    assert r.status_code == 200, r.text
    asset = await api.asset()
    alice, a = await api.funded_user(asset, "100.00")
    bob, b = await api.funded_user(asset, "0")
    r = await api.http.post(
        "/api/v1/credits/transfer",
        json={"from_account_id": a, "to_user_id": str(bob.user_id), "amount": "12.50"},
        headers=alice.headers,
    )
    assert r.status_code == 201, r.text
    assert (await api.balance(a))["posted"] == "87.50"
    assert (await api.balance(b, bob))["available"] == "12.50"
