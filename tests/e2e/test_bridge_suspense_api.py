"""Suspense over HTTP: staff list the redemptions the bridge-in parked and credit one to a
named account, once; others may not."""

from __future__ import annotations

import uuid

import pytest

from core.bridges.redemptions import ChainToken, record_redemptions
from core.ledger import Ledger
from core.types import Role
from tests.conftest import make_world
from tests.e2e.conftest import Api
from tests.integration.test_bridge_in import CHAIN_ID, Chain, bridged, settle

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


async def test_staff_list_and_resolve_a_suspended_redemption_once(api: Api) -> None:
    ledger: Ledger = api.services.ledger
    world = await make_world(ledger)
    asset = world.asset
    token: ChainToken = await bridged(world, 10_00)
    chain = Chain()
    event = chain.event(5, 3_00 * 10**4, ref=987_654_321)  # names no account: suspense
    await record_redemptions(ledger, CHAIN_ID, token.address, [event])
    await settle(world, token, chain)

    ops = await api.caller(Role.OPS)
    listed = await api.http.get("/api/v1/bridges/erc20/suspense", headers=ops.headers)
    assert listed.status_code == 200, listed.text
    [parked] = [r for r in listed.json() if r["tx_hash"] == "0x" + event.tx_hash.hex()]
    assert (
        parked["outcome"] == "SUSPENDED"
        and parked["reason"]
        and parked["resolved_operation_id"] is None
    )

    alice, account = await api.funded_user(asset, "0")
    body = {"chain_id": CHAIN_ID, "tx_hash": parked["tx_hash"], "log_index": 0,
            "account_id": account, "reason": "ticket 12: customer's account"}  # fmt: skip
    user = await api.caller(Role.USER)
    denied = await api.http.post(
        "/api/v1/bridges/erc20/suspense/resolve", json=body, headers=user.headers
    )
    assert denied.status_code == 403
    key = {"Idempotency-Key": uuid.uuid4().hex}
    done = await api.http.post(
        "/api/v1/bridges/erc20/suspense/resolve", json=body, headers=ops.headers | key
    )
    assert done.status_code == 200, done.text
    assert done.json()["resolved_operation_id"] is not None
    assert (await api.balance(account))["posted"] == "3.00"
    again = await api.http.post(
        "/api/v1/bridges/erc20/suspense/resolve", json=body, headers=ops.headers
    )
    assert again.status_code == 409 and again.json()["code"] == "SUSPENSE_ALREADY_RESOLVED"
    del alice
