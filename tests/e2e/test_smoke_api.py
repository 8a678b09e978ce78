from __future__ import annotations

import uuid

import pytest

from core import integrity
from core.types import Actor, Role
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


async def test_ready_is_degraded_while_an_integrity_alarm_is_open(api: Api) -> None:
    engine = api.services.ledger.engine
    alarm = await integrity.raise_alarm(engine, "audit", f"e2e {uuid.uuid4()}", epoch=None)
    assert alarm is not None
    try:
        r = await api.http.get("/ready")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "degraded" and body["integrity"] == "degraded"
        assert alarm.id in body["integrity_alarms"]
    finally:
        await integrity.acknowledge(engine, Actor("test", Role.ADMIN), "e2e test", [alarm.id])
    body = (await api.http.get("/ready")).json()
    assert alarm.id not in body["integrity_alarms"]
