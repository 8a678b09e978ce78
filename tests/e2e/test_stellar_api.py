"""The Stellar bridge over HTTP, the API pointed at the Soroban RPC stand-in (a test double):
a bridge-out answers its state; a destination that cannot receive, a muxed address or a paused
bridge is a 4xx with a stable code and debits nothing; address linking by a signed challenge
(a forged signature refused)."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from stellar_sdk import Keypair

from api.app import create_app
from api.auth import Principal, issue_token
from core.credentials import Credentials
from core.types import Role
from tests.e2e.conftest import BOOTSTRAP, Api, Caller, make_settings, running
from tests.e2e.test_policy_api import problem
from tests.stellar.net import StellarNet, make_net

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


@pytest.fixture
async def stellar_api(database_url: str) -> AsyncIterator[tuple[Api, StellarNet]]:
    code = "S" + uuid.uuid4().hex[:10].upper()
    net = make_net(code)
    await net.deploy()
    settings = make_settings(database_url, stellar_rpc_url=net.served.url,
                             stellar_passphrase=net.passphrase)  # fmt: skip
    app = create_app(settings)
    async with running(app) as http:
        creds = Credentials(app.state.services.ledger.engine)
        admin = await creds.create_user(email=None, role=Role.ADMIN, actor=BOOTSTRAP)
        token = issue_token(
            app.state.jwt_auth, Principal(admin.id, Role.ADMIN, frozenset({"*"}), f"u:{admin.id}")
        )
        api = Api(app, http, Caller(admin.id, Role.ADMIN, {"Authorization": f"Bearer {token}"}))
        r = await http.post("/api/v1/assets", headers=api.admin.headers,
                            json={"code": code, "name": "stellar credit", "scale": 2,
                                  "kind": "POINTS"})  # fmt: skip
        assert r.status_code == 201, r.text
        r = await http.post("/api/v1/bridges/stellar/tokens", headers=api.admin.headers,
                            json={"asset": code, "asset_code": code,
                                  "issuer": net.issuer.public_key, "contract": net.contract})  # fmt: skip
        assert r.status_code == 201, r.text
        assert r.json()["contract"] == net.contract and r.json()["paused"] is False
        yield api, net
    await net.client.close()
    net.served.stop()


async def out(api: Api, who: Caller, body: dict[str, Any], key: str | None = None) -> Any:
    headers = {**who.headers, "Idempotency-Key": key or uuid.uuid4().hex}
    return await api.http.post("/api/v1/bridges/stellar/out", json=body, headers=headers)


async def test_bridge_out_refusals_pause_and_links(stellar_api: tuple[Api, StellarNet]) -> None:
    api, net = stellar_api
    asset = net.code
    alice, account = await api.funded_user(asset, "50.00")
    dest = await net.user()
    body = {"asset": asset, "amount": "12.50", "to_address": dest.public_key}
    first = await out(api, alice, body, key="s-1")
    assert first.status_code == 201, first.text
    made = first.json()
    assert (made["state"], made["token_amount"], made["token_address"]) == (
        "IN_FLIGHT",
        "125000000",
        net.contract,
    )
    assert made["tx_status"] == "BUILT"
    assert (await out(api, alice, body, key="s-1")).json() == made
    got = await api.http.get(f"/api/v1/bridges/stellar/out/{made['id']}", headers=alice.headers)
    assert got.status_code == 200 and got.json() == made
    # test_ownership's decisions for the Stellar routes: owned by alice, the token shared
    stranger = await api.caller(Role.USER)
    other = await api.http.get(
        f"/api/v1/bridges/stellar/out/{made['id']}", headers=stranger.headers
    )
    problem(other, 404, "UNKNOWN_BRIDGE_OUT")
    auditor = await api.caller(Role.AUDITOR)
    seen = await api.http.get(f"/api/v1/bridges/stellar/out/{made['id']}", headers=auditor.headers)
    assert seen.status_code == 200, seen.text
    token = await api.http.get(f"/api/v1/bridges/stellar/tokens/{asset}", headers=stranger.headers)
    assert token.status_code == 200, token.text

    untrusted = await net.user(trust=False)
    problem(
        await out(api, alice, {**body, "to_address": untrusted.public_key}),
        422,
        "DESTINATION_NOT_READY",
    )
    muxed = "MA7QYNF7SOWQ3GLR2BGMZEHXAVIRZA4KVWLTJJFC7MGXUA74P7UJUAAAAAAAAAAAACJUQ"
    assert (await out(api, alice, {**body, "to_address": muxed})).status_code in (400, 422)
    assert (await api.balance(account))["posted"] == "37.50"

    paused = await api.http.post(
        f"/api/v1/bridges/stellar/tokens/{asset}/pause",
        json={"reason": "drill"},
        headers=api.admin.headers,
    )
    assert paused.status_code == 200 and paused.json()["paused"] is True
    problem(await out(api, alice, body), 409, "BRIDGE_PAUSED")
    resumed = await api.http.post(
        f"/api/v1/bridges/stellar/tokens/{asset}/resume",
        json={"reason": "drill over"},
        headers=api.admin.headers,
    )
    assert resumed.json()["paused"] is False
    assert (await api.balance(account))["posted"] == "37.50"

    kp = Keypair.random()
    ch = await api.http.post(
        "/api/v1/bridges/stellar/links/challenge",
        json={"address": kp.public_key},
        headers=alice.headers,
    )
    assert ch.status_code == 201, ch.text
    text = ch.json()["challenge"]
    forged = base64.b64encode(Keypair.random().sign_message(text)).decode()
    problem(await api.http.post(
        "/api/v1/bridges/stellar/links", headers={**alice.headers, "Idempotency-Key": "l-1"},
        json={"challenge_id": ch.json()["challenge_id"], "signature": forged}),
        422, "LINK_CHALLENGE_INVALID")  # fmt: skip
    signed = base64.b64encode(kp.sign_message(text)).decode()
    linked = await api.http.post(
        "/api/v1/bridges/stellar/links",
        headers={**alice.headers, "Idempotency-Key": "l-2"},
        json={"challenge_id": ch.json()["challenge_id"], "signature": signed},
    )
    assert linked.status_code == 201, linked.text
    assert linked.json()["address"] == kp.public_key
    mine = await api.http.get("/api/v1/bridges/stellar/links", headers=alice.headers)
    assert [v["address"] for v in mine.json()] == [kp.public_key]
