"""Ledger flows over HTTP: ownership, idempotency, holds and expiry, deposits and
compliance release, reversals and adjustments, history, errors."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import text

from core.types import Role
from tests.e2e.conftest import Api

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


def problem(r: object, status: int, code: str) -> dict[str, object]:
    body = r.json()  # type: ignore[attr-defined]
    assert r.status_code == status, body  # type: ignore[attr-defined]
    assert r.headers["content-type"].startswith("application/problem+json")  # type: ignore[attr-defined]
    assert body["code"] == code and body["status"] == status
    assert body["trace_id"] == r.headers["x-request-id"]  # type: ignore[attr-defined]
    assert {"type", "title", "detail"} <= body.keys()
    return body  # type: ignore[no-any-return]


async def test_ownership_guessing_ids_reveals_and_moves_nothing(api: Api) -> None:
    asset = await api.asset()
    alice, a = await api.funded_user(asset, "50.00")
    mallory, m = await api.funded_user(asset, "1.00")
    for path in (
        f"/api/v1/accounts/{a}",
        f"/api/v1/accounts/{a}/entries",
        f"/api/v1/accounts/{a}/balance?seq=1",
        f"/api/v1/users/{alice.user_id}",
        f"/api/v1/users/{alice.user_id}/wallets",
    ):
        r = await api.http.get(path, headers=mallory.headers)
        assert r.status_code == 404, (path, r.text)
    # a nonexistent account answers exactly the same
    other = await api.http.get("/api/v1/accounts/987654321", headers=mallory.headers)
    assert (
        other.json()["code"]
        == (await api.http.get(f"/api/v1/accounts/{a}", headers=mallory.headers)).json()["code"]
    )
    r = await api.http.post(
        "/api/v1/credits/transfer",
        json={"from_account_id": a, "to_user_id": str(mallory.user_id), "amount": "50.00"},
        headers=mallory.headers,
    )
    problem(r, 404, "UNKNOWN_ACCOUNT")
    r = await api.http.post(
        "/api/v1/holds",
        json={"from_account_id": a, "to_user_id": str(mallory.user_id), "amount": "5.00"},
        headers=mallory.headers,
    )
    problem(r, 404, "UNKNOWN_ACCOUNT")
    r = await api.http.post(
        "/api/v1/credits/burn", json={"account_id": a, "amount": "1.00"}, headers=mallory.headers
    )
    problem(r, 404, "UNKNOWN_ACCOUNT")
    r = await api.http.post(
        "/api/v1/credits/move",
        json={"user_id": str(alice.user_id), "asset": asset, "from_kind": "AVAILABLE",
              "to_kind": "LOCKED", "amount": "1.00"},
        headers=mallory.headers,
    )  # fmt: skip
    assert r.status_code == 404, r.text
    # an operation that touched only alice's accounts is invisible to mallory
    hist = (await api.http.get(f"/api/v1/accounts/{a}/entries", headers=alice.headers)).json()
    op = hist["entries"][0]["operation_id"]
    assert (
        await api.http.get(f"/api/v1/operations/{op}", headers=mallory.headers)
    ).status_code == 404
    assert (
        await api.http.get(f"/api/v1/operations/{op}", headers=alice.headers)
    ).status_code == 200
    assert (await api.balance(a))["posted"] == "50.00"
    assert (await api.balance(m))["posted"] == "1.00"
    # staff readers see everything
    auditor = await api.caller(Role.AUDITOR)
    assert (await api.http.get(f"/api/v1/accounts/{a}", headers=auditor.headers)).status_code == 200


async def test_idempotent_replay_and_conflict(api: Api) -> None:
    asset = await api.asset()
    alice, a = await api.funded_user(asset, "100.00")
    bob, _ = await api.funded_user(asset, "0")
    body = {"from_account_id": a, "to_user_id": str(bob.user_id), "amount": "10.00"}
    key = {"Idempotency-Key": "pay-" + uuid.uuid4().hex, **alice.headers}
    first = await api.http.post("/api/v1/credits/transfer", json=body, headers=key)
    assert first.status_code == 201, first.text
    again = await api.http.post("/api/v1/credits/transfer", json=body, headers=key)
    assert again.status_code == 201 and again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    changed = await api.http.post(
        "/api/v1/credits/transfer", json=body | {"amount": "11.00"}, headers=key
    )
    problem(changed, 409, "IDEMPOTENCY_CONFLICT")
    assert (await api.balance(a))["posted"] == "90.00"
    # concurrent identical requests: one effect, identical answers
    key2 = {"Idempotency-Key": "pay-" + uuid.uuid4().hex, **alice.headers}
    answers = await asyncio.gather(
        *(api.http.post("/api/v1/credits/transfer", json=body, headers=key2) for _ in range(8))
    )
    assert {r.status_code for r in answers} == {201}
    assert len({r.json()["id"] for r in answers}) == 1
    assert (await api.balance(a))["posted"] == "80.00"
    # another client using the same key string does not collide
    carol, c = await api.funded_user(asset, "5.00")
    r = await api.http.post(
        "/api/v1/credits/transfer",
        json={"from_account_id": c, "to_user_id": str(bob.user_id), "amount": "1.00"},
        headers={**carol.headers, "Idempotency-Key": key["Idempotency-Key"]},
    )
    assert r.status_code == 201 and "idempotent-replayed" not in r.headers
    # a business failure is remembered; a validation failure is not
    poor = {"Idempotency-Key": "poor-" + uuid.uuid4().hex, **carol.headers}
    too_much = {"from_account_id": c, "to_user_id": str(bob.user_id), "amount": "999.00"}
    problem(
        await api.http.post("/api/v1/credits/transfer", json=too_much, headers=poor),
        409,
        "INSUFFICIENT_FUNDS",
    )
    problem(
        await api.http.post("/api/v1/credits/transfer", json=too_much, headers=poor),
        409,
        "INSUFFICIENT_FUNDS",
    )
    bad = {"Idempotency-Key": "bad-" + uuid.uuid4().hex, **carol.headers}
    r = await api.http.post(
        "/api/v1/credits/transfer", json=too_much | {"amount": "1.001"}, headers=bad
    )
    problem(r, 422, "INVALID_AMOUNT")
    r = await api.http.post(
        "/api/v1/credits/transfer", json=too_much | {"amount": "1.00"}, headers=bad
    )
    assert r.status_code == 201, r.text


async def test_validation_errors_name_the_field(api: Api) -> None:
    asset = await api.asset(scale=2)
    alice, a = await api.funded_user(asset, "10.00")
    cases = [
        (
            {"from_account_id": a, "to_user_id": str(alice.user_id), "amount": "1.234"},
            "amount",
            "INVALID_AMOUNT",
        ),
        (
            {"from_account_id": a, "to_user_id": str(alice.user_id), "amount": 1.5},
            "amount",
            "VALIDATION_ERROR",
        ),
        (
            {"from_account_id": a, "to_user_id": "nope", "amount": "1.00"},
            "to_user_id",
            "VALIDATION_ERROR",
        ),
        ({"from_account_id": a, "amount": "1.00"}, "to_user_id", "VALIDATION_ERROR"),
        (
            {"from_account_id": a, "to_user_id": str(alice.user_id), "amount": "1e3"},
            "amount",
            "VALIDATION_ERROR",
        ),
        (
            {
                "from_account_id": a,
                "to_user_id": str(alice.user_id),
                "amount": "99999999999999999999",
            },
            "amount",
            "AMOUNT_OVERFLOW",
        ),
    ]
    for body, field, code in cases:
        r = await api.http.post("/api/v1/credits/transfer", json=body, headers=alice.headers)
        found = problem(r, 422, code)
        assert any(field in e["field"] for e in found["errors"]), (body, found)  # type: ignore[attr-defined]
    r = await api.http.post(
        "/api/v1/credits/transfer",
        content=b"{not json",
        headers={**alice.headers, "content-type": "application/json"},
    )
    assert r.status_code in {400, 422} and r.json()["code"] in {"BAD_REQUEST", "VALIDATION_ERROR"}
    problem(await api.http.get("/api/v1/nowhere", headers=alice.headers), 404, "NOT_FOUND")
    problem(
        await api.http.delete("/api/v1/assets", headers=alice.headers), 405, "METHOD_NOT_ALLOWED"
    )
    assert (await api.balance(a))["posted"] == "10.00"


async def test_holds_capture_void_and_expiry(api: Api) -> None:
    asset = await api.asset()
    payer, p = await api.funded_user(asset, "100.00")
    shop, s = await api.funded_user(asset, "0")
    hold = {"from_account_id": p, "to_user_id": str(shop.user_id), "amount": "30.00"}
    key = {"Idempotency-Key": "h-" + uuid.uuid4().hex, **payer.headers}
    r = await api.http.post("/api/v1/holds", json=hold, headers=key)
    assert r.status_code == 201, r.text
    h = r.json()
    again = await api.http.post("/api/v1/holds", json=hold, headers=key)
    assert again.json() == h  # the deadline was pinned: the same hold, not a conflict
    assert (await api.balance(p))["available"] == "70.00"
    # the payee captures part; the rest is released
    r = await api.http.post(
        f"/api/v1/holds/{h['id']}/capture", json={"amount": "12.50"}, headers=shop.headers
    )
    assert r.status_code == 201, r.text
    # the whole reservation ended: 12.50 moved, the other 17.50 is available again
    bal = await api.balance(p)
    assert (bal["posted"], bal["pending"], bal["available"]) == ("87.50", "0.00", "87.50")
    assert (await api.balance(s))["posted"] == "12.50"
    problem(
        await api.http.post(f"/api/v1/holds/{h['id']}/void", json={}, headers=payer.headers),
        409,
        "HOLD_NOT_PENDING",
    )
    # a stranger cannot see or touch the hold
    stranger, _ = await api.funded_user(asset, "1.00")
    assert (
        await api.http.get(f"/api/v1/holds/{h['id']}", headers=stranger.headers)
    ).status_code == 404
    # void: the reservation is given back
    r = await api.http.post("/api/v1/holds", json=hold | {"amount": "5.00"}, headers=payer.headers)
    assert r.status_code == 201, r.text
    assert (await api.balance(p))["available"] == "82.50"
    r = await api.http.post(
        f"/api/v1/holds/{r.json()['id']}/void", json={"reason": "cancelled"}, headers=payer.headers
    )
    assert r.status_code == 200 and r.json()["status"] == "VOIDED"
    bal = await api.balance(p)
    assert (bal["posted"], bal["pending"], bal["available"]) == ("87.50", "0.00", "87.50")
    # expiry: a hold past its deadline cannot be captured, and the sweep expires it. The
    # deadline (default 15 minutes) is moved into the past in the database, not waited out.
    r = await api.http.post("/api/v1/holds", json=hold, headers=payer.headers)
    assert r.status_code == 201, r.text
    short = r.json()
    assert (await api.balance(p))["available"] == "57.50"
    async with api.services.ledger.engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE holds SET expires_at = clock_timestamp() - interval '1 second' "
                "WHERE id = :id"
            ),
            {"id": short["id"]},
        )
    r = await api.http.post(f"/api/v1/holds/{short['id']}/capture", json={}, headers=shop.headers)
    assert "expired" in str(problem(r, 409, "HOLD_NOT_PENDING")["detail"])
    assert (await api.balance(s))["posted"] == "12.50"  # nothing was captured
    assert (await api.balance(p))["available"] == "57.50"  # reserved until the sweep runs
    ops = await api.caller(Role.OPS)
    r = await api.http.post("/api/v1/holds/expire", headers=ops.headers)
    assert r.status_code == 200 and r.json()["expired"] >= 1
    r = await api.http.get(f"/api/v1/holds/{short['id']}", headers=payer.headers)
    assert r.json()["status"] == "EXPIRED"
    bal = await api.balance(p)
    assert (bal["posted"], bal["pending"], bal["available"]) == ("87.50", "0.00", "87.50")


async def test_deposit_webhook_release_and_saga(api: Api) -> None:
    asset = await api.asset()
    user, a = await api.funded_user(asset, "0")
    body = {
        "user_id": str(user.user_id),
        "asset": asset,
        "amount": "40.00",
        "reference": "bank-" + uuid.uuid4().hex,
    }
    raw, headers = api.signed(body)
    r = await api.http.post("/api/v1/webhooks/deposits", content=raw, headers=headers)
    assert r.status_code == 201, r.text
    tx = r.json()["transaction"]
    assert tx["status"] == "COMPLIANCE_REVIEW"
    # the provider retrying the same deposit credits it once
    raw2, headers2 = api.signed(body)
    assert (
        await api.http.post("/api/v1/webhooks/deposits", content=raw2, headers=headers2)
    ).status_code == 201
    # forged or unsigned: refused, nothing written
    raw3, headers3 = api.signed(body | {"reference": "forged"}, secret="wrong")  # noqa: S106
    problem(
        await api.http.post("/api/v1/webhooks/deposits", content=raw3, headers=headers3),
        401,
        "INVALID_SIGNATURE",
    )
    wallet = (
        await api.http.get(f"/api/v1/users/{user.user_id}/wallets", headers=user.headers)
    ).json()[0]
    kinds = {c["kind"]: c for c in wallet["compartments"]}
    assert kinds["BLOCKED"]["posted"] == "40.00" and kinds["AVAILABLE"]["posted"] == "0.00"
    # compliance releases with a reason
    compliance = await api.caller(Role.COMPLIANCE)
    r = await api.http.post(
        f"/api/v1/transactions/{tx['id']}/release", json={"reason": ""}, headers=compliance.headers
    )
    assert r.status_code == 422, r.text
    r = await api.http.post(
        f"/api/v1/transactions/{tx['id']}/release",
        json={"reason": "KYC ok"},
        headers=compliance.headers,
    )
    assert r.status_code == 201, r.text
    r = await api.http.get(f"/api/v1/transactions/{tx['id']}", headers=user.headers)
    assert r.json()["status"] == "AVAILABLE" and len(r.json()["operations"]) == 2
    assert (await api.balance(a))["posted"] == "40.00"


async def test_reverse_adjust_history_and_audit(api: Api) -> None:
    asset = await api.asset()
    alice, a = await api.funded_user(asset, "20.00")
    bob, b = await api.funded_user(asset, "0")
    r = await api.http.post(
        "/api/v1/credits/transfer",
        json={"from_account_id": a, "to_user_id": str(bob.user_id), "amount": "5.00"},
        headers=alice.headers,
    )
    op = r.json()
    problem(
        await api.http.post(
            f"/api/v1/operations/{op['id']}/reverse",
            json={"reason": " "},
            headers=api.admin.headers,
        ),
        422,
        "VALIDATION_ERROR",
    )
    r = await api.http.post(
        f"/api/v1/operations/{op['id']}/reverse",
        json={"reason": "disputed"},
        headers=api.admin.headers,
    )
    assert r.status_code == 201 and r.json()["reverses"] == op["id"]
    problem(
        await api.http.post(
            f"/api/v1/operations/{op['id']}/reverse",
            json={"reason": "twice"},
            headers=api.admin.headers,
        ),
        409,
        "ALREADY_REVERSED",
    )
    ops = await api.caller(Role.OPS)
    r = await api.http.post(
        "/api/v1/adjustments",
        json={"entries": [{"account_id": a, "side": "DEBIT", "amount": "1.00"},
                          {"account_id": b, "side": "CREDIT", "amount": "1.00"}], "reason": "goodwill"},
        headers=ops.headers,
    )  # fmt: skip
    assert r.status_code == 201, r.text
    # history, newest first, with balance_after and a cursor
    page = (
        await api.http.get(f"/api/v1/accounts/{a}/entries?limit=2", headers=alice.headers)
    ).json()
    assert [e["balance_after"] for e in page["entries"]] == ["19.00", "20.00"]
    rest = (
        await api.http.get(
            f"/api/v1/accounts/{a}/entries?limit=2&cursor={page['next_cursor']}",
            headers=alice.headers,
        )
    ).json()
    assert [e["balance_after"] for e in rest["entries"]] == ["15.00", "20.00"] and rest[
        "next_cursor"
    ] is None
    seq = rest["entries"][0]["seq"]
    r = await api.http.get(f"/api/v1/accounts/{a}/balance?seq={seq}", headers=alice.headers)
    assert r.json()["posted"] == "15.00"
    # every write is audited with the actor and the client IP
    async with api.services.ledger.engine.connect() as conn:
        rows = (await conn.execute(text(
            "SELECT actor_id, actor_role, ip FROM audit_log WHERE actor_id LIKE :a"
        ), {"a": f"user:{ops.user_id}%"})).all()  # fmt: skip
    assert rows and all(r.ip == "203.0.113.7" and r.actor_role == "OPS" for r in rows)
