"""P2P requests over HTTP: create (idempotent), list and read, settle exactly once under
concurrent calls, decline, cancel, expiry, ownership, staff reads."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from sqlalchemy import text

from core.types import Role
from tests.e2e.conftest import Api, Caller
from tests.e2e.test_ledger_api import problem

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

P = "/api/v1/p2p/requests"


async def ask(
    api: Api, requester: Caller, payer: Caller, asset: str, amount: str, **extra: Any
) -> dict[str, Any]:
    body = {"payer_id": str(payer.user_id), "asset": asset, "amount": amount} | extra
    r = await api.http.post(P, json=body, headers=requester.headers)
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


async def settlements_of(api: Api, request_id: int) -> int:
    async with api.services.ledger.engine.connect() as conn:
        return int(
            (
                await conn.execute(
                    text(
                        "SELECT count(*) FROM operations WHERE type = 'P2P_SETTLEMENT' "
                        "AND (metadata->>'p2p_request')::bigint = :id"
                    ),
                    {"id": request_id},
                )
            ).scalar_one()
        )


async def backdate(api: Api, request_id: int) -> None:
    """Move a request's deadline into the past (instead of waiting for it)."""
    async with api.services.ledger.engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE p2p_requests SET expires_at = clock_timestamp() - interval '1 second' "
                "WHERE id = :id"
            ),
            {"id": request_id},
        )


async def test_create_is_idempotent_and_settle_pays_once(api: Api) -> None:
    asset = await api.asset()
    requester, r_acc = await api.funded_user(asset, "0")
    payer, p_acc = await api.funded_user(asset, "50.00")
    body = {"payer_id": str(payer.user_id), "asset": asset, "amount": "12.50", "memo": "pizza",
            "expires_in": 3600}  # fmt: skip
    key = {"Idempotency-Key": "ask-" + uuid.uuid4().hex, **requester.headers}
    first = await api.http.post(P, json=body, headers=key)
    assert first.status_code == 201, first.text
    created = first.json()
    assert (created["status"], created["amount"], created["memo"]) == ("PENDING", "12.50", "pizza")
    assert created["expires_at"] is not None and created["operation_id"] is None
    again = await api.http.post(P, json=body, headers=key)
    assert again.status_code == 201 and again.json() == created
    assert again.headers["idempotent-replayed"] == "true"
    problem(await api.http.post(P, json=body | {"amount": "13.00"}, headers=key), 409,
            "IDEMPOTENCY_CONFLICT")  # fmt: skip
    mine = (await api.http.get(P, params={"role": "requester"}, headers=requester.headers)).json()
    assert [r["id"] for r in mine["requests"]] == [created["id"]]

    r = await api.http.post(f"{P}/{created['id']}/settle", headers=payer.headers)
    assert r.status_code == 200, r.text
    done = r.json()
    assert done["request"]["status"] == "SETTLED"
    assert done["operation"]["type"] == "P2P_SETTLEMENT"
    assert done["request"]["operation_id"] == done["operation"]["id"]
    assert (await api.balance(p_acc))["posted"] == "37.50"
    assert (await api.balance(r_acc))["posted"] == "12.50"
    problem(await api.http.post(f"{P}/{created['id']}/settle", headers=payer.headers), 409,
            "P2P_REQUEST_NOT_PENDING")  # fmt: skip
    got = (await api.http.get(f"{P}/{created['id']}", headers=requester.headers)).json()
    assert got["status"] == "SETTLED" and got["operation_id"] == done["operation"]["id"]
    assert await settlements_of(api, created["id"]) == 1
    # validation: asking yourself, an unknown payer, too many decimals
    problem(await api.http.post(P, json=body | {"payer_id": str(requester.user_id)},
                                headers=requester.headers), 422, "VALIDATION_ERROR")  # fmt: skip
    problem(await api.http.post(P, json=body | {"payer_id": str(uuid.uuid4())},
                                headers=requester.headers), 404, "UNKNOWN_USER")  # fmt: skip
    problem(await api.http.post(P, json=body | {"amount": "1.001"}, headers=requester.headers),
            422, "INVALID_AMOUNT")  # fmt: skip


async def test_concurrent_settles_exactly_one_wins(api: Api) -> None:
    asset = await api.asset()
    requester, r_acc = await api.funded_user(asset, "0")
    payer, p_acc = await api.funded_user(asset, "100.00")
    created = await ask(api, requester, payer, asset, "60.00")
    url = f"{P}/{created['id']}/settle"
    answers = await asyncio.gather(*(api.http.post(url, headers=payer.headers) for _ in range(16)))
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [200] + [409] * 15, [r.text for r in answers]
    for r in answers:
        if r.status_code == 409:
            problem(r, 409, "P2P_REQUEST_NOT_PENDING")
    assert await settlements_of(api, created["id"]) == 1
    # conserved: exactly one transfer of 60.00 (the payer could afford only one anyway)
    assert (await api.balance(p_acc))["posted"] == "40.00"
    assert (await api.balance(r_acc))["posted"] == "60.00"
    # the same with distinct Idempotency-Keys per call
    again = await ask(api, requester, payer, asset, "1.00")
    url = f"{P}/{again['id']}/settle"
    answers = await asyncio.gather(
        *(
            api.http.post(url, headers={**payer.headers, "Idempotency-Key": f"s-{i}-{again['id']}"})
            for i in range(16)
        )
    )
    assert sorted(r.status_code for r in answers) == [200] + [409] * 15
    assert await settlements_of(api, again["id"]) == 1
    assert (await api.balance(p_acc))["posted"] == "39.00"


async def test_refused_settle_stays_pending(api: Api) -> None:
    asset = await api.asset()
    requester, r_acc = await api.funded_user(asset, "0")
    payer, p_acc = await api.funded_user(asset, "5.00")
    created = await ask(api, requester, payer, asset, "8.00")
    url = f"{P}/{created['id']}/settle"
    problem(await api.http.post(url, headers=payer.headers), 409, "INSUFFICIENT_FUNDS")
    got = (await api.http.get(f"{P}/{created['id']}", headers=payer.headers)).json()
    assert got["status"] == "PENDING"
    r = await api.http.post(
        "/api/v1/credits/mint",
        json={"user_id": str(payer.user_id), "asset": asset, "amount": "3.00"},
        headers=api.admin.headers,
    )
    assert r.status_code == 201, r.text
    assert (await api.http.post(url, headers=payer.headers)).status_code == 200
    assert (await api.balance(p_acc))["posted"] == "0.00"
    assert (await api.balance(r_acc))["posted"] == "8.00"


async def test_decline_cancel_and_expiry(api: Api) -> None:
    asset = await api.asset()
    requester, r_acc = await api.funded_user(asset, "0")
    payer, p_acc = await api.funded_user(asset, "10.00")
    declined = await ask(api, requester, payer, asset, "1.00")
    cancelled = await ask(api, requester, payer, asset, "2.00")
    lapsed = await ask(api, requester, payer, asset, "3.00", expires_in=3600)
    swept = await ask(api, requester, payer, asset, "4.00", expires_in=3600)

    # the other party may not do it (they know the request: 403, not 404)
    problem(await api.http.post(f"{P}/{declined['id']}/decline", json={},
                                headers=requester.headers), 403, "FORBIDDEN")  # fmt: skip
    problem(await api.http.post(f"{P}/{cancelled['id']}/cancel", json={},
                                headers=payer.headers), 403, "FORBIDDEN")  # fmt: skip
    problem(await api.http.post(f"{P}/{declined['id']}/settle", headers=requester.headers),
            403, "FORBIDDEN")  # fmt: skip
    r = await api.http.post(f"{P}/{declined['id']}/decline", json={"reason": "no"},
                            headers=payer.headers)  # fmt: skip
    assert r.status_code == 200 and r.json()["status"] == "DECLINED", r.text
    r = await api.http.post(f"{P}/{cancelled['id']}/cancel", json={}, headers=requester.headers)
    assert r.status_code == 200 and r.json()["status"] == "CANCELLED", r.text
    for done in (declined, cancelled):
        for action, who in (("settle", payer), ("decline", payer), ("cancel", requester)):
            r = await api.http.post(f"{P}/{done['id']}/{action}", json={}, headers=who.headers)
            problem(r, 409, "P2P_REQUEST_NOT_PENDING")

    # past its deadline a request cannot be settled: it expires on the spot
    await backdate(api, lapsed["id"])
    problem(await api.http.post(f"{P}/{lapsed['id']}/settle", headers=payer.headers), 409,
            "P2P_REQUEST_EXPIRED")  # fmt: skip
    assert (await api.http.get(f"{P}/{lapsed['id']}", headers=payer.headers)).json()[
        "status"
    ] == "EXPIRED"
    # or the sweep (ops; the worker runs it too) expires it
    await backdate(api, swept["id"])
    ops = await api.caller(Role.OPS)
    r = await api.http.post("/api/v1/p2p/expire", headers=ops.headers)
    assert r.status_code == 200 and r.json()["expired"] >= 1, r.text
    assert (await api.http.get(f"{P}/{swept['id']}", headers=requester.headers)).json()[
        "status"
    ] == "EXPIRED"
    problem(await api.http.post(f"{P}/{swept['id']}/cancel", json={}, headers=requester.headers),
            409, "P2P_REQUEST_EXPIRED")  # fmt: skip
    assert (await api.balance(p_acc))["posted"] == "10.00"
    assert (await api.balance(r_acc))["posted"] == "0.00"

    # listing: per side, per status, newest first, cursor pages
    incoming = (await api.http.get(P, params={"role": "payer"}, headers=payer.headers)).json()
    assert [r["id"] for r in incoming["requests"]] == [
        swept["id"], lapsed["id"], cancelled["id"], declined["id"],
    ]  # fmt: skip
    assert (await api.http.get(P, params={"role": "requester"}, headers=payer.headers)).json()[
        "requests"
    ] == []
    expired = await api.http.get(P, params={"status": "EXPIRED"}, headers=requester.headers)
    assert {r["id"] for r in expired.json()["requests"]} == {swept["id"], lapsed["id"]}
    seen: list[int] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        page = (await api.http.get(P, params=params, headers=requester.headers)).json()
        seen += [r["id"] for r in page["requests"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [swept["id"], lapsed["id"], cancelled["id"], declined["id"]]
    problem(await api.http.get(P, params={"status": "LOST"}, headers=payer.headers), 422,
            "VALIDATION_ERROR")  # fmt: skip


async def test_others_requests_look_nonexistent(api: Api) -> None:
    asset = await api.asset()
    requester, _ = await api.funded_user(asset, "0")
    payer, p_acc = await api.funded_user(asset, "10.00")
    mallory, _ = await api.funded_user(asset, "0")
    created = await ask(api, requester, payer, asset, "5.00")
    for rid in (created["id"], 987654321):
        problem(await api.http.get(f"{P}/{rid}", headers=mallory.headers), 404,
                "P2P_REQUEST_NOT_FOUND")  # fmt: skip
        for action in ("settle", "decline", "cancel"):
            r = await api.http.post(f"{P}/{rid}/{action}", json={}, headers=mallory.headers)
            problem(r, 404, "P2P_REQUEST_NOT_FOUND")
    assert (await api.http.get(P, headers=mallory.headers)).json()["requests"] == []
    r = await api.http.get(P, params={"user_id": str(payer.user_id)}, headers=mallory.headers)
    problem(r, 404, "UNKNOWN_USER")
    assert (await api.balance(p_acc))["posted"] == "10.00"

    # staff readers read any request and a named user's list; they settle nothing
    for role in (Role.READ_ONLY, Role.AUDITOR, Role.COMPLIANCE):
        staff = await api.caller(role)
        got = await api.http.get(f"{P}/{created['id']}", headers=staff.headers)
        assert got.status_code == 200 and got.json()["status"] == "PENDING", got.text
        listed = await api.http.get(P, params={"user_id": str(payer.user_id)},
                                    headers=staff.headers)  # fmt: skip
        assert [r["id"] for r in listed.json()["requests"]] == [created["id"]]
        problem(await api.http.get(P, headers=staff.headers), 422, "VALIDATION_ERROR")
        problem(await api.http.post(f"{P}/{created['id']}/settle", headers=staff.headers), 403,
                "FORBIDDEN")  # fmt: skip
    assert await settlements_of(api, created["id"]) == 0
