"""Offline allowances over HTTP against the real database: device keys, allowances (a hold
on AVAILABLE bound to a device key), vouchers redeemed exactly once, every refusal with its
stable code, concurrent double spends, release and expiry.

Vouchers are signed here with ``cryptography`` over the core's message format (the SDK's own
codec is checked against it in tests/unit/test_offline_vouchers.py)."""

from __future__ import annotations

import asyncio
import base64
import uuid
from dataclasses import dataclass, replace
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import text

from core.offline.vouchers import Voucher, device_message, release_message
from core.types import Role
from tests.e2e.conftest import Api, Caller
from tests.e2e.test_ledger_api import problem

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

OFF = "/api/v1/offline"


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass
class Wallet:
    user: Caller
    account: int
    key: Ed25519PrivateKey
    device_id: int = 0

    @property
    def public(self) -> bytes:
        return self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def voucher(self, allowance: int, payee: Caller, amount: int, counter: int, cum: int) -> str:
        v = Voucher(allowance, payee.user_id, amount, counter, cum)
        return replace(v, signature=self.key.sign(v.message())).encode()


async def wallet(api: Api, asset: str, funds: str = "100.00") -> Wallet:
    user, account = await api.funded_user(asset, funds)
    w = Wallet(user, account, Ed25519PrivateKey.generate())
    r = await api.http.post(
        f"{OFF}/devices",
        json={
            "public_key": b64(w.public),
            "proof": b64(w.key.sign(device_message(user.user_id, w.public))),
            "name": "phone",
        },
        headers=user.headers,
    )
    assert r.status_code == 201, r.text
    w.device_id = r.json()["id"]
    return w


async def allowance(api: Api, w: Wallet, amount: str = "50.00", **extra: Any) -> dict[str, Any]:
    body = {"from_account_id": w.account, "device_id": w.device_id, "amount": amount} | extra
    r = await api.http.post(f"{OFF}/allowances", json=body, headers=w.user.headers)
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


async def redeem(api: Api, payee: Caller, *vouchers: str) -> dict[str, Any]:
    r = await api.http.post(
        f"{OFF}/redemptions", json={"vouchers": list(vouchers)}, headers=payee.headers
    )
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


async def captures_of(api: Api, allowance_id: int) -> list[tuple[int, int]]:
    """(counter, amount) of every HOLD_CAPTURE posted for the allowance."""
    async with api.services.ledger.engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT (o.metadata->>'counter')::int AS c, e.amount FROM operations o "
                "JOIN ledger_entries e ON e.operation_id = o.id AND e.amount > 0 "
                "WHERE o.type = 'HOLD_CAPTURE' AND (o.metadata->>'offline_allowance')::bigint = :a "
                "ORDER BY c"
            ),
            {"a": allowance_id},
        )
        return [(r.c, r.amount) for r in rows]


async def test_device_registration_needs_a_proof_of_possession(api: Api) -> None:
    user, _ = await api.funded_user(await api.asset(), "0")
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    forged = other.sign(device_message(user.user_id, public))
    r = await api.http.post(
        f"{OFF}/devices",
        json={"public_key": b64(public), "proof": b64(forged), "name": "x"},
        headers=user.headers,
    )
    problem(r, 422, "INVALID_DEVICE_KEY")
    good = key.sign(device_message(user.user_id, public))
    r = await api.http.post(
        f"{OFF}/devices",
        json={"public_key": b64(public), "proof": b64(good), "name": "x"},
        headers=user.headers,
    )
    assert r.status_code == 201, r.text
    r = await api.http.post(
        f"{OFF}/devices",
        json={"public_key": b64(public), "proof": b64(good), "name": "x"},
        headers=user.headers,
    )
    problem(r, 409, "DEVICE_KEY_EXISTS")
    r = await api.http.get(f"{OFF}/devices", headers=user.headers)
    assert [d["public_key"] for d in r.json()] == [b64(public)]


async def test_an_allowance_reserves_available_funds_and_vouchers_are_captured_once(
    api: Api,
) -> None:
    asset = await api.asset()
    w = await wallet(api, asset)
    shop, shop_account = await api.funded_user(asset, "0")
    r = await api.http.post(
        f"{OFF}/allowances",
        json={"from_account_id": w.account, "device_id": w.device_id, "amount": "50.00"},
        headers=w.user.headers | {"Idempotency-Key": "allow-1"},
    )
    assert r.status_code == 201, r.text
    a = r.json()
    assert a["status"] == "OPEN" and a["amount"] == "50.00" and a["certificate"].startswith("VC1.")
    again = await api.http.post(
        f"{OFF}/allowances",
        json={"from_account_id": w.account, "device_id": w.device_id, "amount": "50.00"},
        headers=w.user.headers | {"Idempotency-Key": "allow-1"},
    )
    assert again.json()["id"] == a["id"] and again.headers["idempotent-replayed"] == "true"
    balance = await api.balance(w.account)
    assert (balance["posted"], balance["pending"], balance["available"]) == (
        "100.00",
        "50.00",
        "50.00",
    )
    # the user cannot spend the reservation online, nor move its hold by the generic routes
    r = await api.http.post(f"/api/v1/holds/{a['hold_id']}/void", json={}, headers=w.user.headers)
    problem(r, 409, "ALLOWANCE_HOLD")

    v1 = w.voucher(a["id"], shop, 1000, 1, 1000)
    v2 = w.voucher(a["id"], shop, 2550, 2, 3550)
    out = await redeem(api, shop, v1, v2)
    assert [(x["status"], x["amount"], x["replayed"]) for x in out["results"]] == [
        ("HONOURED", "10.00", False),
        ("HONOURED", "25.50", False),
    ]
    # replayed (reordered) redemptions answer the stored outcome and capture nothing more
    out = await redeem(api, shop, v2, v1)
    assert [(x["status"], x["counter"], x["replayed"]) for x in out["results"]] == [
        ("HONOURED", 2, True),
        ("HONOURED", 1, True),
    ]
    assert await captures_of(api, a["id"]) == [(1, 1000), (2, 2550)]
    assert (await api.balance(shop_account))["posted"] == "35.50"
    balance = await api.balance(w.account)
    assert (balance["posted"], balance["pending"]) == ("64.50", "14.50")
    r = await api.http.get(f"{OFF}/allowances/{a['id']}", headers=w.user.headers)
    assert r.json()["claimed"] == "35.50" and r.json()["status"] == "OPEN"
    # both parties list the redemptions; an outsider sees nothing of the allowance
    for who, role in ((shop, "payee"), (w.user, "payer")):
        r = await api.http.get(f"{OFF}/redemptions", params={"role": role}, headers=who.headers)
        assert [v["counter"] for v in r.json()["vouchers"]] == [2, 1]
    outsider, _ = await api.funded_user(asset, "0")
    problem(
        await api.http.get(f"{OFF}/allowances/{a['id']}", headers=outsider.headers),
        404,
        "UNKNOWN_ALLOWANCE",
    )
    assert (await api.http.get(f"{OFF}/redemptions", headers=outsider.headers)).json()[
        "vouchers"
    ] == []
    # every state change is audited
    async with api.services.ledger.engine.connect() as conn:
        actions = (
            (
                await conn.execute(
                    text(
                        "SELECT action FROM audit_log WHERE entity_type = 'offline_allowance' AND entity_id = :a ORDER BY id"
                    ),
                    {"a": str(a["id"])},
                )
            )
            .scalars()
            .all()
        )
    # (a batch's vouchers are all claimed, then captured together)
    assert actions == [
        "offline.allowance.opened",
        "offline.voucher.claimed",
        "offline.voucher.claimed",
        "offline.voucher.honoured",
        "offline.voucher.honoured",
    ]


async def test_every_refusal_has_its_stable_code(api: Api) -> None:
    asset = await api.asset()
    w = await wallet(api, asset)
    shop, shop_account = await api.funded_user(asset, "0")
    other, _ = await api.funded_user(asset, "0")
    a = await allowance(api, w, "50.00")
    forger = Ed25519PrivateKey.generate()
    forged = Voucher(a["id"], shop.user_id, 100, 1, 100)
    forged_text = replace(forged, signature=forger.sign(forged.message())).encode()
    tampered = w.voucher(a["id"], shop, 100, 2, 200)
    raw = bytearray(base64.urlsafe_b64decode(tampered[4:] + "=="))
    raw[31] ^= 1  # the amount: 100 -> 101
    tampered = "VV1." + b64(bytes(raw))
    out = await redeem(
        api, shop,
        forged_text,                                   # 0 forged signature
        tampered,                                      # 1 altered after signing
        w.voucher(a["id"], other, 100, 3, 300),        # 2 pays somebody else
        w.voucher(a["id"], shop, 6000, 4, 6000),       # 3 beyond the allowance
        "VV1.not-a-voucher",                           # 4 malformed
        w.voucher(999_999_999, shop, 100, 1, 100),     # 5 no such allowance
        w.voucher(a["id"], shop, 4000, 5, 4000),       # 6 fine
        w.voucher(a["id"], shop, 1500, 6, 5500),       # 7 fine alone, over 50.00 after 6
    )  # fmt: skip
    assert [(x["status"], x["code"]) for x in out["results"]] == [
        ("REFUSED", "VOUCHER_SIGNATURE_INVALID"),
        ("REFUSED", "VOUCHER_SIGNATURE_INVALID"),
        ("REFUSED", "VOUCHER_WRONG_PAYEE"),
        ("REFUSED", "ALLOWANCE_EXCEEDED"),
        ("REFUSED", "VOUCHER_MALFORMED"),
        ("REFUSED", "UNKNOWN_ALLOWANCE"),
        ("HONOURED", None),
        ("REFUSED", "ALLOWANCE_EXCEEDED"),
    ]
    assert (out["honoured"], out["refused"]) == (1, 7)
    # a reused counter with a different amount is refused, the original stays honoured
    out = await redeem(api, shop, w.voucher(a["id"], shop, 10, 5, 10))
    assert out["results"][0]["code"] == "VOUCHER_COUNTER_REUSED"
    assert await captures_of(api, a["id"]) == [(5, 4000)]
    assert (await api.balance(shop_account))["posted"] == "40.00"
    problem(
        await api.http.post(f"{OFF}/redemptions", json={"vouchers": []}, headers=shop.headers),
        422,
        "VALIDATION_ERROR",
    )


async def test_a_device_double_spending_across_two_payees_costs_the_payees_nothing_extra(
    api: Api,
) -> None:
    """The device signs counter 1 twice (fork) and then a third voucher that lies about the
    cumulative total; two payees redeem at the same time. The allowance bounds what leaves
    the user: exactly one of the conflicting vouchers wins, the other is refused with the
    exact reason, and the total captured never exceeds the allowance."""
    asset = await api.asset()
    for _ in range(3):
        w = await wallet(api, asset)
        a = await allowance(api, w, "50.00")
        shop1, acc1 = await api.funded_user(asset, "0")
        shop2, acc2 = await api.funded_user(asset, "0")
        same_counter_1 = w.voucher(a["id"], shop1, 3000, 1, 3000)
        same_counter_2 = w.voucher(a["id"], shop2, 3000, 1, 3000)
        r1, r2 = await asyncio.gather(
            redeem(api, shop1, same_counter_1), redeem(api, shop2, same_counter_2)
        )
        outcomes = sorted(
            [r1["results"][0]["code"] or "HONOURED", r2["results"][0]["code"] or "HONOURED"]
        )
        assert outcomes == ["HONOURED", "VOUCHER_COUNTER_REUSED"]
        # different counters, together beyond the allowance: one wins, the other ALLOWANCE_EXCEEDED
        # (each claims a cumulative total of 15.00: a lie, 30.00 went before)
        lie_1 = w.voucher(a["id"], shop1, 1500, 2, 1500)
        lie_2 = w.voucher(a["id"], shop2, 1500, 3, 1500)
        r1, r2 = await asyncio.gather(redeem(api, shop1, lie_1), redeem(api, shop2, lie_2))
        codes = sorted(
            [r1["results"][0]["code"] or "HONOURED", r2["results"][0]["code"] or "HONOURED"]
        )
        assert codes == ["ALLOWANCE_EXCEEDED", "HONOURED"]
        paid = int((await api.balance(acc1))["posted"].replace(".", "")) + int(
            (await api.balance(acc2))["posted"].replace(".", "")
        )
        assert paid == 3000 + 1500
        balance = await api.balance(w.account)
        assert (balance["posted"], balance["pending"]) == ("55.00", "5.00")
        assert sum(amount for _, amount in await captures_of(api, a["id"])) == 4500


async def test_the_same_voucher_presented_twice_at_once_is_captured_once(api: Api) -> None:
    asset = await api.asset()
    w = await wallet(api, asset)
    a = await allowance(api, w, "50.00")
    shop, acc = await api.funded_user(asset, "0")
    v = w.voucher(a["id"], shop, 700, 1, 700)
    results = await asyncio.gather(*(redeem(api, shop, v) for _ in range(5)))
    assert {r["results"][0]["status"] for r in results} == {"HONOURED"}
    assert sum(1 for r in results if not r["results"][0]["replayed"]) == 1
    assert await captures_of(api, a["id"]) == [(1, 700)]
    assert (await api.balance(acc))["posted"] == "7.00"


async def test_release_waits_for_outstanding_vouchers_then_returns_the_rest(api: Api) -> None:
    asset = await api.asset()
    w = await wallet(api, asset)
    a = await allowance(api, w, "50.00")
    shop, _ = await api.funded_user(asset, "0")
    v1 = w.voucher(a["id"], shop, 1000, 1, 1000)
    url = f"{OFF}/allowances/{a['id']}/release"
    body = {"final_cumulative": 1000, "signature": b64(w.key.sign(release_message(a["id"], 1000)))}
    problem(
        await api.http.post(url, json=body, headers=w.user.headers), 409, "VOUCHERS_OUTSTANDING"
    )
    bad = body | {
        "signature": b64(Ed25519PrivateKey.generate().sign(release_message(a["id"], 1000)))
    }
    problem(await api.http.post(url, json=bad, headers=w.user.headers), 422, "INVALID_DEVICE_KEY")
    await redeem(api, shop, v1)
    r = await api.http.post(url, json=body, headers=w.user.headers)
    assert r.status_code == 200 and r.json()["status"] == "RELEASED", r.text
    balance = await api.balance(w.account)
    assert (balance["posted"], balance["pending"], balance["available"]) == (
        "90.00",
        "0.00",
        "90.00",
    )
    # a later voucher (the device lied about its last total) is refused: released
    out = await redeem(api, shop, w.voucher(a["id"], shop, 500, 2, 1500))
    assert out["results"][0]["code"] == "ALLOWANCE_RELEASED"
    # the honoured one still answers honoured
    out = await redeem(api, shop, v1)
    assert out["results"][0]["status"] == "HONOURED" and out["results"][0]["replayed"]


async def test_an_expired_allowance_refuses_vouchers_and_returns_the_rest(api: Api) -> None:
    asset = await api.asset()
    w = await wallet(api, asset)
    a = await allowance(api, w, "50.00", expires_in=3600)
    shop, _ = await api.funded_user(asset, "0")
    await redeem(api, shop, w.voucher(a["id"], shop, 1000, 1, 1000))
    async with api.services.ledger.engine.begin() as conn:
        for table, col in (("holds", "id"), ("offline_allowances", "hold_id")):
            await conn.execute(
                text(
                    f"UPDATE {table} SET expires_at = clock_timestamp() - interval '1 second' WHERE {col} = :h"
                ),
                {"h": a["hold_id"]},
            )
    out = await redeem(api, shop, w.voucher(a["id"], shop, 1000, 2, 2000))
    assert out["results"][0]["code"] == "ALLOWANCE_EXPIRED"
    r = await api.http.post("/api/v1/holds/expire", headers=api.admin.headers)
    assert r.status_code == 200 and r.json()["expired"] >= 1
    balance = await api.balance(w.account)
    assert (balance["posted"], balance["pending"]) == ("90.00", "0.00")
    assert (await api.http.get(f"{OFF}/allowances/{a['id']}", headers=w.user.headers)).json()[
        "status"
    ] == "EXPIRED"


async def test_allowance_refusals(api: Api) -> None:
    asset = await api.asset()
    w = await wallet(api, asset, "10.00")
    body = {"from_account_id": w.account, "device_id": w.device_id, "amount": "50.00"}
    problem(
        await api.http.post(f"{OFF}/allowances", json=body, headers=w.user.headers),
        409,
        "INSUFFICIENT_FUNDS",
    )
    other = await wallet(api, asset)
    problem(
        await api.http.post(
            f"{OFF}/allowances",
            json=body | {"device_id": other.device_id, "amount": "1.00"},
            headers=w.user.headers,
        ),
        404,
        "UNKNOWN_DEVICE",
    )
    problem(
        await api.http.post(
            f"{OFF}/allowances",
            json=body | {"from_account_id": other.account, "amount": "1.00"},
            headers=w.user.headers,
        ),
        404,
        "UNKNOWN_ACCOUNT",
    )
    admin = api.admin
    r = await api.http.post(
        f"{OFF}/allowances", json=body | {"amount": "1.00"}, headers=admin.headers
    )
    assert r.status_code == 403
    # a failed opening leaves no row behind
    async with api.services.ledger.engine.connect() as conn:
        n = (
            await conn.execute(
                text("SELECT count(*) FROM offline_allowances WHERE user_id = :u"),
                {"u": w.user.user_id},
            )
        ).scalar_one()
    assert n == 0
    staff = await api.caller(Role.AUDITOR)
    r = await api.http.get(
        f"{OFF}/allowances", params={"user_id": str(other.user.user_id)}, headers=staff.headers
    )
    assert r.status_code == 200 and r.json()["allowances"] == []
    r = await api.http.get(f"{OFF}/issuer", headers=w.user.headers)
    assert len(base64.urlsafe_b64decode(r.json()["public_key"] + "=")) == 32
    assert uuid.UUID(str(w.user.user_id))
