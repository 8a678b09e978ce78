"""The SDK's mirror proves its entries with the server's proof bundles (offline: leaf rebuilt
from the mirror's own values, proof, header hash). A bundle that does not prove the mirrored
entry is a ``MirrorMismatch``. Sealing is global to a ledger: this module has its own
application and database (as tests/e2e/test_anchors_api.py does)."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from decimal import Decimal

import httpx
import pytest

from api.app import create_app
from api.auth import Principal, issue_token
from core.credentials import Credentials
from core.settings import epoch_settings
from core.types import Role
from tests.e2e.conftest import BOOTSTRAP, Api, Caller, make_settings, running
from tests.e2e.test_anchors_api import seal
from tests.support import create_database, drop_database
from valueos_sdk import AsyncClient, MemoryStore
from valueos_sdk.errors import MirrorMismatch
from valueos_sdk.mirror import Mirror
from valueos_sdk.proofs import LedgerIdentity

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


class Forging(httpx.AsyncBaseTransport):
    """Passes requests to the app; rewrites proof bundles with ``forge`` when set."""

    def __init__(self, app: object) -> None:
        self.inner = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        self.forge: object = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if self.forge is None or "/proofs/" not in request.url.path:
            return response
        bundle = json.loads(await response.aread())
        self.forge(bundle)  # type: ignore[operator]
        return httpx.Response(200, json=bundle)


@pytest.fixture(scope="module")
async def world() -> AsyncIterator[tuple[Api, Caller, int, Forging]]:
    url = await create_database()
    app = create_app(make_settings(url))
    try:
        async with running(app) as http:
            creds = Credentials(app.state.services.ledger.engine)
            admin = await creds.create_user(email=None, role=Role.ADMIN, actor=BOOTSTRAP)
            token = issue_token(
                app.state.jwt_auth,
                Principal(admin.id, Role.ADMIN, frozenset({"*"}), f"u:{admin.id}"),
            )
            api = Api(app, http, Caller(admin.id, Role.ADMIN, {"Authorization": f"Bearer {token}"}))
            asset = await api.asset()
            alice, a = await api.funded_user(asset, "100.00")
            bob, _ = await api.funded_user(asset, "0")
            for amount in ("12.34", "0.66"):
                r = await http.post(
                    "/api/v1/credits/transfer",
                    json={"from_account_id": a, "to_user_id": str(bob.user_id), "amount": amount},
                    headers=alice.headers,
                )
                assert r.status_code == 201, r.text
            assert await seal(api) == 1
            yield api, alice, a, Forging(app)
    finally:
        await drop_database(url)


async def test_mirrored_entries_are_proven_and_a_forged_bundle_is_caught(
    world: tuple[Api, Caller, int, Forging],
) -> None:
    _, alice, account, transport = world
    client = AsyncClient(
        "http://valueos.test", token=alice.headers["Authorization"][7:], transport=transport
    )
    mirror = Mirror(client, MemoryStore())
    held = await mirror.check_balance(account)
    pinned = LedgerIdentity(31337, "0x" + "00" * 20, epoch_settings().ledger_id)
    for seq, *_ in held.entries:
        header = await mirror.verify_entry(account, seq, identity=pinned)
        assert header["epoch"] == 1
    seq = held.entries[1][0]
    for forge in (
        lambda b: b["header"].update(prev_header="0x" + "11" * 32),  # header fields
        lambda b: b.update(proof=["0x" + "22" * 32]),  # the proof
        lambda b: b["header"].update(ledger_id="0x" + "33" * 32),  # another ledger
    ):
        transport.forge = forge
        with pytest.raises(MirrorMismatch):
            await mirror.verify_entry(account, seq, identity=pinned)
    transport.forge = None
    # a mirror holding another amount than the ledger sealed: its proof cannot match
    store = MemoryStore()
    lying = Mirror(client, store)
    await lying.pull(account)
    state = copy.deepcopy(store.get(f"mirror.{account}"))
    state["entries"][1][3] -= 1
    store.put(f"mirror.{account}", state)
    with pytest.raises(MirrorMismatch, match="not in the entries root"):
        await lying.verify_entry(account, seq)
    with pytest.raises(MirrorMismatch, match="not mirrored"):
        await mirror.verify_entry(account, 10**9)


class Hiding(httpx.AsyncBaseTransport):
    """A lying server: the account's entry listing leaves out one entry and shifts the
    ``balance_after`` of the newer ones, so the mirror's own continuity check passes."""

    def __init__(self, app: object, hidden_seq: int) -> None:
        self.inner = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        self.hidden_seq = hidden_seq

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if not request.url.path.endswith("/entries"):
            return response
        body = json.loads(await response.aread())
        hidden = [e for e in body["entries"] if e["seq"] == self.hidden_seq]
        if hidden:
            gone = Decimal(hidden[0]["amount"])
            body["entries"] = [e for e in body["entries"] if e["seq"] != self.hidden_seq]
            for e in body["entries"]:  # newest first
                if e["seq"] > self.hidden_seq:
                    e["balance_after"] = str(Decimal(e["balance_after"]) - gone)
        return httpx.Response(200, json=body)


async def test_the_balance_leaf_proves_the_mirror_complete_and_catches_a_hidden_entry(
    world: tuple[Api, Caller, int, Forging],
) -> None:
    api, alice, account, transport = world
    token = alice.headers["Authorization"][7:]
    pinned = LedgerIdentity(31337, "0x" + "00" * 20, epoch_settings().ledger_id)
    honest = Mirror(
        AsyncClient("http://valueos.test", token=token, transport=transport), MemoryStore()
    )
    header = await honest.verify_balance(account, 1, identity=pinned)
    assert header["epoch"] == 1
    held = honest.account(account)
    assert held is not None and len(held.entries) == 3
    # the server hides the 12.34 transfer and keeps every balance_after consistent
    hiding = Hiding(api.app, hidden_seq=held.entries[1][0])
    lied_to = Mirror(
        AsyncClient("http://valueos.test", token=token, transport=hiding), MemoryStore()
    )
    pulled = await lied_to.pull(account)  # the mirror's own checks pass
    assert len(pulled.entries) == 2
    with pytest.raises(
        MirrorMismatch, match="entries up to epoch 1, the anchored balance leaf commits to 3"
    ):
        await lied_to.verify_balance(account, 1, identity=pinned)
    # an entry held with another amount (and consistent balances) than the one sealed
    store = MemoryStore()
    altered = Mirror(AsyncClient("http://valueos.test", token=token, transport=transport), store)
    await altered.pull(account)
    state = copy.deepcopy(store.get(f"mirror.{account}"))
    state["entries"][0][3] += 1
    state["entries"][0][4] += 1
    store.put(f"mirror.{account}", state)
    with pytest.raises(MirrorMismatch, match="do not fold to the anchored entries hash"):
        await altered.verify_balance(account, 1)
