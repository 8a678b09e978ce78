"""The SDK against the real application (HTTP over httpx's ASGI transport, real database):
writes queued while the server is down, lost responses retried under the same key,
duplicate and concurrent syncs, the wallet and the payee terminal with the network cut,
two payees and one device double-spending, clock skew, forged and replayed vouchers."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from core.credentials import Credentials
from core.types import Role
from tests.e2e.conftest import BOOTSTRAP, Api, Caller
from valueos_sdk import AsyncClient, MemoryStore, OfflineQueue, SQLiteStore, Terminal, Wallet
from valueos_sdk.errors import (
    DeviceRevoked,
    InsufficientFunds,
    MirrorMismatch,
    NotFound,
    Unreachable,
)
from valueos_sdk.mirror import Mirror
from valueos_sdk.models import DeviceRead
from valueos_sdk.store import FAILED
from valueos_sdk.vouchers import decode_payment, unb64

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

TRANSFER = "/api/v1/credits/transfer"


class Network(httpx.AsyncBaseTransport):
    """The ASGI app behind a switch: ``up`` False refuses connections; ``lose`` > 0 delivers
    that many requests but loses their responses (the server acted, the client never heard)."""

    def __init__(self, api: Api) -> None:
        self.inner = httpx.ASGITransport(app=api.app, client=("203.0.113.9", 5000))
        self.up = True
        self.lose = 0
        self.keys: list[str | None] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not self.up:
            raise httpx.ConnectError("network down", request=request)
        self.keys.append(request.headers.get("idempotency-key"))
        response = await self.inner.handle_async_request(request)
        if self.lose > 0:
            self.lose -= 1
            await response.aread()
            raise httpx.ReadError("connection reset before the answer", request=request)
        return response


def token_of(caller: Caller) -> str:
    return caller.headers["Authorization"].removeprefix("Bearer ")


@pytest.fixture
async def net(api: Api) -> Network:
    return Network(api)


async def client_for(caller: Caller, net: Network, **options: Any) -> AsyncClient:
    no_wait = options.pop("sleep", None) or _no_sleep
    return AsyncClient(
        "http://valueos.test", token=token_of(caller), transport=net, sleep=no_wait, **options
    )


async def _no_sleep(_: float) -> None:
    await asyncio.sleep(0)


async def operations_keyed(api: Api, prefix: str) -> int:
    async with api.services.ledger.engine.connect() as conn:
        return int(
            (
                await conn.execute(
                    text("SELECT count(*) FROM operations WHERE idempotency_key LIKE :p"),
                    {"p": f"http:%:{prefix}%"},
                )
            ).scalar_one()
        )


async def test_writes_queued_while_the_server_is_down_are_sent_in_order_once(
    api: Api, net: Network, tmp_path: Path
) -> None:
    asset = await api.asset()
    alice, a_acc = await api.funded_user(asset, "10.00")
    bob, b_acc = await api.funded_user(asset, "0")
    client = await client_for(alice, net)
    queue = OfflineQueue(client, SQLiteStore(tmp_path / "q.db"))
    net.up = False
    prefix = f"q-{uuid.uuid4().hex[:8]}-"
    amounts = ["1.00", "2.00", "50.00", "3.00", "4.00"]  # the third cannot be paid
    for i, amount in enumerate(amounts):
        record = await queue.submit(
            "POST",
            TRANSFER,
            {"from_account_id": a_acc, "to_user_id": str(bob.user_id), "amount": amount},
            key=f"{prefix}{i}",
        )
        assert record.state == "PENDING"
    report = await queue.sync()
    assert report.sent == [] and report.pending == 5
    net.up = True
    report = await queue.sync()
    assert [r.key for r in report.sent] == [f"{prefix}{i}" for i in (0, 1, 3, 4)]
    assert [r.key for r in report.failed] == [f"{prefix}2"]
    states = {r.key: r for r in queue.store.records()}
    assert (
        states[f"{prefix}2"].state == FAILED
        and states[f"{prefix}2"].response["code"] == "INSUFFICIENT_FUNDS"
    )
    ops = [states[f"{prefix}{i}"].response["id"] for i in (0, 1, 3, 4)]
    assert ops == sorted(ops), "sent in the order they were queued"
    # syncing again (twice, concurrently, from two processes' worth of queues on the same file)
    # sends nothing new
    other = OfflineQueue(client, SQLiteStore(tmp_path / "q.db"))
    await asyncio.gather(queue.sync(), other.sync(), queue.sync())
    assert await operations_keyed(api, prefix) == 4  # the four transfers, once each
    assert (await api.balance(b_acc))["posted"] == "10.00"
    assert (await api.balance(a_acc))["posted"] == "0.00"


async def test_records_resent_after_a_crash_or_reordered_replays_have_one_effect(
    api: Api, net: Network
) -> None:
    asset = await api.asset()
    alice, a_acc = await api.funded_user(asset, "10.00")
    bob, b_acc = await api.funded_user(asset, "0")
    client = await client_for(alice, net)
    store = MemoryStore()
    queue = OfflineQueue(client, store)
    prefix = f"r-{uuid.uuid4().hex[:8]}-"
    for i in range(3):
        queue.enqueue(
            "POST",
            TRANSFER,
            {"from_account_id": a_acc, "to_user_id": str(bob.user_id), "amount": "1.00"},
            key=f"{prefix}{i}",
        )
    await queue.sync()
    # a client that crashed before recording its answers sends them again, in another order
    for record in reversed(store.records()):
        again = await client.request(
            record.method, record.path, json=record.body, idempotency_key=record.key
        )
        assert again == record.response
    assert (await api.balance(b_acc))["posted"] == "3.00"


async def test_a_lost_response_is_retried_under_the_same_key(api: Api, net: Network) -> None:
    asset = await api.asset()
    alice, a_acc = await api.funded_user(asset, "10.00")
    bob, b_acc = await api.funded_user(asset, "0")
    client = await client_for(alice, net)
    net.lose = 2
    op = await client.transfer(a_acc, bob.user_id, "2.50")
    assert len(net.keys) == 3 and len(set(net.keys)) == 1 and net.keys[0]
    assert op.entries and (await api.balance(b_acc))["posted"] == "2.50"
    # a business error is typed and carries the stable code; not retried
    with pytest.raises(InsufficientFunds) as caught:
        await client.transfer(a_acc, bob.user_id, "100.00")
    assert (
        caught.value.code == "INSUFFICIENT_FUNDS"
        and caught.value.status == 409
        and caught.value.trace_id
    )
    with pytest.raises(NotFound):
        await client.allowance(999_999_999)
    net.up = False
    with pytest.raises(Unreachable):
        await client.me()


async def test_api_key_auth_refreshes_its_token_and_pages_through_entries(
    api: Api, net: Network
) -> None:
    asset = await api.asset()
    alice, a_acc = await api.funded_user(asset, "10.00")
    bob, _ = await api.funded_user(asset, "0")
    _, key = await Credentials(api.services.ledger.engine).create_api_key(
        user_id=alice.user_id, name="sdk", scopes=("*",), actor=BOOTSTRAP
    )
    client = AsyncClient("http://valueos.test", api_key=key, use_tokens=True, transport=net)
    for _ in range(5):
        await client.transfer(a_acc, bob.user_id, "1.00")
    client._token = "not-a-token"  # noqa: S105 - expired or revoked: one 401, a fresh token, the call again
    assert (await client.me()).user_id == alice.user_id
    seqs = [e.seq async for e in client.iter_entries(a_acc, limit=2)]
    assert len(seqs) == 6 and seqs == sorted(seqs, reverse=True)


async def payee(api: Api, asset: str, net: Network) -> tuple[Caller, int, Terminal, AsyncClient]:
    shop, account = await api.funded_user(asset, "0")
    client = await client_for(shop, net)
    issuer = unb64((await client.issuer()).public_key)
    return (
        shop,
        account,
        Terminal(client, MemoryStore(), payee_id=shop.user_id, issuer_key=issuer),
        client,
    )


async def test_three_offline_payments_then_sync(api: Api, net: Network, tmp_path: Path) -> None:
    asset = await api.asset()
    alice, a_acc = await api.funded_user(asset, "100.00")
    wallet = Wallet(await client_for(alice, net), SQLiteStore(tmp_path / "wallet.db"))
    shop, s_acc, pos, _ = await payee(api, asset, net)
    allowance = await wallet.reserve(a_acc, "30.00")
    assert allowance.status == "OPEN"
    net.up = False  # the network is cut
    for amount in ("5.00", "7.50", "2.25"):
        pos.accept(wallet.pay(shop.user_id, amount))
    with pytest.raises(Exception, match="ALLOWANCE_EXCEEDED"):
        wallet.pay(shop.user_id, "20.00")
    assert [a.status for a in await pos.sync()] == ["ACCEPTED"] * 3  # still offline: queued
    net.up = True
    done = await pos.sync()
    assert [(a.status, a.amount) for a in done] == [
        ("HONOURED", 500),
        ("HONOURED", 750),
        ("HONOURED", 225),
    ]
    assert [a.status for a in await pos.sync()] == ["HONOURED"] * 3  # again: nothing changes
    assert (await api.balance(s_acc))["posted"] == "14.75"
    released = await wallet.release()
    assert released.status == "RELEASED"
    balance = await api.balance(a_acc)
    assert (balance["posted"], balance["pending"]) == ("85.25", "0.00")


async def test_a_revoked_device_pays_what_it_promised_and_reserves_nothing_more(
    api: Api, net: Network
) -> None:
    asset = await api.asset()
    alice, a_acc = await api.funded_user(asset, "100.00")
    client = await client_for(alice, net)
    wallet = Wallet(client, MemoryStore())
    shop, s_acc, pos, _ = await payee(api, asset, net)
    await wallet.reserve(a_acc, "30.00")
    pos.accept(wallet.pay(shop.user_id, "5.00"))
    device_id = await wallet.register()
    revoked = await client.revoke_device(device_id, reason="phone lost")
    assert isinstance(revoked, DeviceRead) and revoked.status == "REVOKED"
    assert revoked.revoked_at is not None
    assert [d.status for d in await client.devices()] == ["REVOKED"]
    with pytest.raises(DeviceRevoked) as refused:
        await wallet.reserve(a_acc, "10.00")
    assert refused.value.code == "DEVICE_REVOKED"
    assert [a.status for a in await pos.sync()] == ["HONOURED"]
    assert (await api.balance(s_acc))["posted"] == "5.00"


async def test_two_payees_and_a_device_that_double_spends(
    api: Api, net: Network, tmp_path: Path
) -> None:
    asset = await api.asset()
    alice, a_acc = await api.funded_user(asset, "100.00")
    store = SQLiteStore(tmp_path / "wallet.db")
    wallet = Wallet(await client_for(alice, net), store)
    shop1, acc1, pos1, _ = await payee(api, asset, net)
    shop2, acc2, pos2, _ = await payee(api, asset, net)
    await wallet.reserve(a_acc, "10.00")
    net.up = False
    # the same payment shown to the wrong terminal is refused offline
    p1 = wallet.pay(shop1.user_id, "8.00")
    with pytest.raises(Exception, match="VOUCHER_WRONG_PAYEE"):
        pos2.accept(p1)
    pos1.accept(p1)
    # a cheating device rewinds its counter and pays the same 8.00 to shop 2
    store.put("wallet.allowance", store.get("wallet.allowance") | {"counter": 0, "cumulative": 0})
    pos2.accept(wallet.pay(shop2.user_id, "8.00"))  # shop 2 cannot know offline
    net.up = True
    r1, r2 = await asyncio.gather(pos1.sync(), pos2.sync())
    outcomes = sorted([(r1[0].status, r1[0].code), (r2[0].status, r2[0].code)], key=str)
    assert outcomes == [("HONOURED", None), ("REFUSED", "VOUCHER_COUNTER_REUSED")]
    paid = [(await api.balance(acc))["posted"] for acc in (acc1, acc2)]
    assert sorted(paid) == ["0.00", "8.00"]
    # the allowance bounds what leaves the user: one of the two is paid, the other told why


async def test_clock_skew_the_server_decides_and_the_payee_learns_why(
    api: Api, net: Network
) -> None:
    asset = await api.asset()
    alice, a_acc = await api.funded_user(asset, "100.00")
    wallet = Wallet(await client_for(alice, net), MemoryStore())
    shop, _, _, client = await payee(api, asset, net)
    allowance = await wallet.reserve(a_acc, "10.00", expires_in=86400)
    issuer = unb64((await client.issuer()).public_key)
    # the terminal's clock runs two days behind: the allowance looks fresh to it
    slow = Terminal(
        client,
        MemoryStore(),
        payee_id=shop.user_id,
        issuer_key=issuer,
        clock=lambda: allowance.expires_at.timestamp() - 2 * 86400,
    )
    payment = wallet.pay(shop.user_id, "1.00")
    slow.accept(payment)
    async with api.services.ledger.engine.begin() as conn:  # the allowance's day has passed
        for table, col in (("holds", "id"), ("offline_allowances", "hold_id")):
            await conn.execute(
                text(
                    f"UPDATE {table} SET expires_at = clock_timestamp() - interval '1 second' WHERE {col} = :h"
                ),
                {"h": allowance.hold_id},
            )
    (outcome,) = await slow.sync()
    assert (outcome.status, outcome.code) == ("REFUSED", "ALLOWANCE_EXPIRED")
    # a terminal whose clock shows the allowance's last half hour refuses it offline
    late = Terminal(
        client,
        MemoryStore(),
        payee_id=shop.user_id,
        issuer_key=issuer,
        clock=lambda: allowance.expires_at.timestamp() - 1800,
    )
    with pytest.raises(Exception, match="ALLOWANCE_EXPIRING"):
        late.accept(payment)


async def test_forged_and_replayed_vouchers(api: Api, net: Network) -> None:
    asset = await api.asset()
    alice, a_acc = await api.funded_user(asset, "100.00")
    wallet = Wallet(await client_for(alice, net), MemoryStore())
    shop, s_acc, pos, client = await payee(api, asset, net)
    await wallet.reserve(a_acc, "10.00")
    payment = wallet.pay(shop.user_id, "4.00")
    pos.accept(payment)
    await pos.sync()
    voucher = pos.accepted()[0].voucher
    # replayed: by this terminal (a second sync) and by another terminal of the same payee
    other = Terminal(client, MemoryStore(), payee_id=shop.user_id, issuer_key=pos.issuer_key)
    other.accept(payment)
    (again,) = await other.sync()
    assert again.status == "HONOURED"
    result = await client.redeem([voucher])
    assert result.results[0].replayed and result.honoured == 1
    # forged: a voucher signed by a key that is not the allowance's device
    forger = Wallet(await client_for(shop, net), MemoryStore())
    forger.store.put("wallet.allowance", wallet.store.get("wallet.allowance"))
    with pytest.raises(Exception, match="VOUCHER_SIGNATURE_INVALID"):
        pos.accept(forger.pay(shop.user_id, "1.00"))
    forged_voucher = decode_payment(forger.pay(shop.user_id, "1.00"))[1].encode()
    result = await client.redeem([forged_voucher])  # presented to the server anyway
    assert (result.results[0].status, result.results[0].code) == (
        "REFUSED",
        "VOUCHER_SIGNATURE_INVALID",
    )
    assert (await api.balance(s_acc))["posted"] == "4.00"


class Tampering(Network):
    """Rewrites one entry's ``balance_after`` in every history page (a lying server)."""

    def __init__(self, api: Api, seq: int) -> None:
        super().__init__(api)
        self.seq = seq

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        if "/entries" not in request.url.path:
            return response
        body = json.loads(await response.aread())
        for e in body["entries"]:
            if e["seq"] == self.seq:
                e["balance_after"] = "999.00"
        return httpx.Response(200, json=body)


async def test_the_mirror_pulls_incrementally_and_refuses_a_broken_chain(
    api: Api, net: Network
) -> None:
    asset = await api.asset()
    alice, a_acc = await api.funded_user(asset, "10.00")
    bob, _ = await api.funded_user(asset, "0")
    client = await client_for(alice, net)
    for _ in range(3):
        await client.transfer(a_acc, bob.user_id, "1.00")
    store = MemoryStore()
    mirror = Mirror(client, store)
    first = await mirror.check_balance(a_acc)
    assert [e[3] for e in first.entries] == [1000, -100, -100, -100] and first.balance == 700
    for _ in range(2):
        await client.transfer(a_acc, bob.user_id, "2.00")
    requests = len(net.keys)
    second = await mirror.pull(a_acc, page=3)
    assert len(net.keys) - requests == 1, "one page of new entries, not the whole history"
    assert second.entries[:4] == first.entries and second.balance == 300
    assert (await mirror.check_balance(a_acc)).balance == 300
    # a server that lies about one entry is caught, and nothing of it is stored
    lying = Tampering(api, second.entries[2][0])
    fresh = Mirror(await client_for(alice, lying), MemoryStore())
    with pytest.raises(MirrorMismatch, match="balance_after"):
        await fresh.pull(a_acc)
    assert fresh.account(a_acc) is None


async def test_a_batch_refused_for_its_credentials_is_sent_again_later(
    api: Api, net: Network
) -> None:
    asset = await api.asset()
    alice, a_acc = await api.funded_user(asset, "100.00")
    wallet = Wallet(await client_for(alice, net), MemoryStore())
    shop, s_acc, _, good = await payee(api, asset, net)
    await wallet.reserve(a_acc, "10.00")
    issuer = unb64((await good.issuer()).public_key)
    # a credential that cannot redeem (read scope only)
    weak = AsyncClient(
        "http://valueos.test",
        token=token_of(await api.caller(Role.USER, scopes=("read",))),
        transport=net,
    )
    pos = Terminal(weak, MemoryStore(), payee_id=shop.user_id, issuer_key=issuer)
    pos.accept(wallet.pay(shop.user_id, "3.00"))
    (waiting,) = await pos.sync()
    assert (waiting.status, waiting.batch) == ("ACCEPTED", None)  # 403: queued again, not lost
    pos.queue.client = good
    (done,) = await pos.sync()
    assert done.status == "HONOURED"
    assert (await api.balance(s_acc))["posted"] == "3.00"
