"""The SDK's mirror proves its entries with the server's proof bundles (offline: leaf rebuilt
from the mirror's own values, proof, header hash). A bundle that does not prove the mirrored
entry is a ``MirrorMismatch``. Sealing is global to a ledger: this module has its own
application and database (as tests/e2e/test_anchors_api.py does)."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator
from decimal import Decimal

import httpx
import msgspec
import pytest

from api.app import create_app
from api.auth import Principal, issue_token
from core import proofs
from core.credentials import Credentials
from core.settings import epoch_settings
from core.types import Role
from tests.e2e.conftest import BOOTSTRAP, Api, Caller, make_settings, running
from tests.e2e.test_anchors_api import LEDGER_ID, seal
from tests.support import create_database, drop_database
from valueos_sdk import AsyncClient, Client, MemoryStore, models
from valueos_sdk.errors import HistoryTooLong, MirrorMismatch
from valueos_sdk.mirror import Mirror
from valueos_sdk.proofs import LedgerIdentity, check_history_bundle

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
        if response.status_code != 200:
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


async def pay(api: Api, payer: Caller, payee: Caller, amount: str, account: int) -> None:
    r = await api.http.post(
        "/api/v1/credits/transfer",
        json={"from_account_id": account, "to_user_id": str(payee.user_id), "amount": amount},
        headers=payer.headers,
    )
    assert r.status_code == 201, r.text


def _drop_second(b: dict[str, object]) -> None:
    """Hide the second entry and shift the later balances: continuity still holds."""
    entries = b["entries"]
    assert isinstance(entries, list)
    gone = int(entries.pop(1)["amount"])
    for e in entries[1:]:
        e["balance_after"] = str(int(e["balance_after"]) - gone)


def _alter_first(b: dict[str, object]) -> None:
    """Another amount for the first entry, every balance after it consistent."""
    entries = b["entries"]
    assert isinstance(entries, list)
    for i, e in enumerate(entries):
        if i == 0:
            e["amount"] = str(int(e["amount"]) + 1)
        e["balance_after"] = str(int(e["balance_after"]) + 1)


def _swap(b: dict[str, object]) -> None:
    """Two entries swapped, the balances recomputed in the new order."""
    entries = b["entries"]
    assert isinstance(entries, list)
    balance = int(entries[0]["balance_after"]) - int(entries[0]["amount"])
    entries[1], entries[2] = entries[2], entries[1]
    for e in entries:
        balance += int(e["amount"])
        e["balance_after"] = str(balance)


HISTORY_FORGERIES = {
    "omitted entry": (_drop_second, "an entry is missing or added"),
    "altered amount": (_alter_first, "do not fold to the anchored entries hash"),
    "reordered": (_swap, "is not after entry"),
    "repeated": (lambda b: b["entries"].insert(1, b["entries"][0]), "is not after entry"),
    "other end balance": (lambda b: b["to"]["leaf"].update(balance="1"), "leaf hash"),
    "other end proof": (
        lambda b: b["to"].update(proof=["0x" + "22" * 32]),
        "not in the balances root",
    ),
    "other account": (lambda b: b.update(account_id=b["account_id"] + 1), "asked for"),
    "entry outside the epochs": (
        lambda b: b["entries"][-1].update(epoch=b["to_epoch"] + 1),
        "outside",
    ),
}


async def test_the_sdk_reads_and_verifies_history_bundles(
    world: tuple[Api, Caller, int, Forging], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Carol's entries over three more epochs: the typed history bundle verifies locally;
    a lying server's omitted, altered, reordered or repeated entry, another end or another
    account is refused; a range longer than the server's limit is fetched in pieces ending
    on sealed epochs and joined into the same proven history."""
    api, _, _, transport = world
    transport.forge = None
    asset = await api.asset()
    carol, c = await api.funded_user(asset, "50.00")
    dave, _ = await api.funded_user(asset, "0")
    await pay(api, carol, dave, "1.00", c)
    e2 = await seal(api)
    for amount in ("2.00", "3.00"):
        await pay(api, carol, dave, amount, c)
    e3 = await seal(api)
    erin, _ = await api.funded_user(asset, "5.00")  # erin's first entry is in e4
    await pay(api, carol, dave, "4.00", c)
    e4 = await seal(api)
    await pay(api, carol, erin, "0.50", c)
    e5 = await seal(api)
    pinned = LedgerIdentity(31337, "0x" + "00" * 20, LEDGER_ID)
    client = AsyncClient(
        "http://valueos.test", token=carol.headers["Authorization"][7:], transport=transport
    )
    bundle = await client.history_proof(c, to_epoch=e4)
    assert isinstance(bundle, models.HistoryBundleRead) and bundle.start is None
    full = check_history_bundle(bundle, account_id=c, identity=pinned)
    assert [e[2] for e in full.entries] == [5000, -100, -200, -300, -400]
    assert full.end.entry_count == 5 and full.end.balance == 4000
    assert [e[4] for e in full.entries] == [e2, e2, e3, e3, e4]
    part = check_history_bundle(
        msgspec.to_builtins(await client.history_proof(c, to_epoch=e4, from_epoch=e2)),
        account_id=c,
    )
    assert part.start is not None and part.start.entry_count == 2
    assert part.entries == full.entries[2:]
    # the blocking facade: the same calls (the server's answer replayed on its own loop)
    served = msgspec.to_builtins(bundle)
    carol_token = carol.headers["Authorization"][7:]

    def blocking() -> tuple[models.HistoryBundleRead, list[tuple[int, int, int, int, int]]]:
        replay = httpx.MockTransport(lambda _: httpx.Response(200, json=served))
        with Client("http://valueos.test", token=carol_token, transport=replay) as vo:
            got = vo.history_proof(c, to_epoch=e4)
            return got, vo.verified_history(c, to_epoch=e4, identity=pinned).entries

    got, entries = await asyncio.to_thread(blocking)
    assert got == bundle and entries == full.entries
    with pytest.raises(MirrorMismatch, match="another ledger"):
        check_history_bundle(bundle, identity=LedgerIdentity(31337, "0x" + "00" * 20, b"\x01" * 32))
    for forge, message in HISTORY_FORGERIES.values():
        transport.forge = forge
        lied = await client.history_proof(c, to_epoch=e4)
        with pytest.raises(MirrorMismatch, match=message):
            check_history_bundle(lied, account_id=c)
        with pytest.raises(MirrorMismatch, match=message):
            await client.verified_history(c, to_epoch=e4)
    transport.forge = None

    # pieces: the server lists at most 2 entries per bundle here
    monkeypatch.setattr(proofs, "MAX_HISTORY", 2)
    with pytest.raises(HistoryTooLong, match="more than 2 entries") as too_long:
        await client.history_proof(c, to_epoch=e4)
    assert (too_long.value.code, too_long.value.details) == ("HISTORY_TOO_LONG", {"limit": 2})
    joined = await client.verified_history(c, to_epoch=e4, identity=pinned)
    assert (joined.from_epoch, joined.to_epoch, joined.start) == (0, e4, None)
    assert joined.entries == full.entries and joined.end == full.end
    tail = await client.verified_history(c, from_epoch=e2, to_epoch=e5)
    assert tail.entries == [*full.entries[2:], tail.entries[-1]] and tail.start == part.start
    assert tail.entries[-1][2::2] == (-50, e5)
    # erin's first entry is in e4: the pieces before it have no leaf at their end (404)
    monkeypatch.setattr(proofs, "MAX_HISTORY", 1)
    erin_client = AsyncClient(
        "http://valueos.test", token=erin.headers["Authorization"][7:], transport=transport
    )
    erins = await erin_client.verified_history(
        await api.available(erin, asset), to_epoch=e5, identity=pinned
    )
    assert [(e[2], e[4]) for e in erins.entries] == [(500, e4), (50, e5)]
    assert erins.start is None
    # one epoch holding more of the account's entries than the limit cannot be proven
    with pytest.raises(MirrorMismatch, match="in epoch"):
        await client.verified_history(c, from_epoch=e2, to_epoch=e3)
    # a piece with an entry hidden is refused like a whole history
    transport.forge = _drop_second
    monkeypatch.setattr(proofs, "MAX_HISTORY", 2)
    with pytest.raises(MirrorMismatch, match="an entry is missing or added"):
        await client.verified_history(c, to_epoch=e4)
    transport.forge = None
