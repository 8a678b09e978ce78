"""Compliance attestations, policy versions, the dry run and policy denials over HTTP, and
the audit-log read."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from core.types import Role
from tests.e2e.conftest import Api, Caller

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

EVIDENCE = "ab" * 32
KYC_AND_FEE = {
    "description": "USD-style transfers: KYC level 2, a fee, at most 100.00 per transfer",
    "rules": [
        {"id": "kyc", "kind": "claims",
         "require": [{"claim": "kyc.level", "op": ">=", "value": 2}]},
        {"id": "max", "kind": "amount", "max": 10_000},
        {"id": "fee", "kind": "fee", "fixed": 10, "bps": 100},
    ],
}  # fmt: skip


def problem(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    body: dict[str, Any] = r.json()
    assert r.status_code == status, body
    assert r.headers["content-type"].startswith("application/problem+json")
    assert body["code"] == code and body["status"] == status
    assert body["trace_id"] == r.headers["x-request-id"]
    return body


async def attest(api: Api, who: Caller, subject: uuid.UUID, claim: str, value: Any) -> int:
    r = await api.http.post(
        "/api/v1/attestations",
        json={"subject_id": str(subject), "claim": claim, "value": value,
              "evidence_hash": EVIDENCE, "reason": "documents checked"},
        headers=who.headers,
    )  # fmt: skip
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


async def active_policy(api: Api, who: Caller, asset: str, op: str, doc: dict[str, Any]) -> int:
    r = await api.http.post(
        "/api/v1/policies",
        json={"asset": asset, "operation_type": op, "document": doc, "reason": "launch"},
        headers=who.headers,
    )
    assert r.status_code == 201, r.text
    policy_id = int(r.json()["id"])
    r = await api.http.post(
        f"/api/v1/policies/{policy_id}/activate", json={"reason": "go"}, headers=who.headers
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "ACTIVE"
    return policy_id


async def test_attestations_issue_list_claims_revoke(api: Api) -> None:
    officer = await api.caller(Role.COMPLIANCE)
    auditor = await api.caller(Role.AUDITOR)
    alice = await api.caller(Role.USER)
    bob = await api.caller(Role.USER)
    body = {
        "subject_id": str(alice.user_id), "claim": "kyc.level", "value": 2,
        "evidence_hash": EVIDENCE, "reason": "passport verified",
        "expires_at": "2999-01-01T00:00:00Z",
    }  # fmt: skip
    key = {"Idempotency-Key": f"att-{uuid.uuid4()}"}
    first = await api.http.post("/api/v1/attestations", json=body, headers=officer.headers | key)
    assert first.status_code == 201, first.text
    att = first.json()
    assert att["value"] == 2 and att["issued_by"].startswith("user:")
    # same key, same body: the stored answer, nothing issued twice
    again = await api.http.post("/api/v1/attestations", json=body, headers=officer.headers | key)
    assert again.status_code == 201 and again.json() == att
    assert again.headers.get("idempotent-replayed") == "true"
    other = await api.http.post(
        "/api/v1/attestations", json=body | {"value": 3}, headers=officer.headers | key
    )
    problem(other, 409, "IDEMPOTENCY_CONFLICT")
    await attest(api, officer, alice.user_id, "age.over18", True)

    # readers
    r = await api.http.get(f"/api/v1/users/{alice.user_id}/attestations", headers=auditor.headers)
    assert r.status_code == 200 and len(r.json()) == 2
    mine = await api.http.get(f"/api/v1/users/{alice.user_id}/claims", headers=alice.headers)
    assert mine.status_code == 200
    assert mine.json() == {
        "user_id": str(alice.user_id),
        "claims": {"kyc.level": 2, "age.over18": True},
    }
    # another user's claims look like a nonexistent user's
    problem(
        await api.http.get(f"/api/v1/users/{alice.user_id}/claims", headers=bob.headers),
        404,
        "UNKNOWN_USER",
    )
    problem(
        await api.http.get(f"/api/v1/users/{uuid.uuid4()}/attestations", headers=auditor.headers),
        404,
        "UNKNOWN_USER",
    )

    # revoke: counts no more at once; twice is a conflict
    r = await api.http.post(
        f"/api/v1/attestations/{att['id']}/revoke",
        json={"reason": "document forged"},
        headers=officer.headers,
    )
    assert r.status_code == 200 and r.json()["revoked_at"] is not None, r.text
    claims = await api.http.get(f"/api/v1/users/{alice.user_id}/claims", headers=auditor.headers)
    assert claims.json()["claims"] == {"age.over18": True}
    current = await api.http.get(
        f"/api/v1/users/{alice.user_id}/attestations?current_only=true", headers=officer.headers
    )
    assert [a["claim"] for a in current.json()] == ["age.over18"]
    problem(
        await api.http.post(
            f"/api/v1/attestations/{att['id']}/revoke", json={"reason": "again"},
            headers=officer.headers,
        ),
        409,
        "ALREADY_REVOKED",
    )  # fmt: skip
    problem(
        await api.http.post(
            "/api/v1/attestations/987654321/revoke", json={"reason": "x"}, headers=api.admin.headers
        ),
        404,
        "UNKNOWN_ATTESTATION",
    )


async def test_attestation_bad_input_is_422_naming_the_field(api: Api) -> None:
    officer = await api.caller(Role.COMPLIANCE)
    user = await api.caller(Role.USER)
    base = {
        "subject_id": str(user.user_id), "claim": "kyc.level", "value": 1,
        "evidence_hash": EVIDENCE, "reason": "checked",
    }  # fmt: skip
    for change, field in (
        ({"reason": " "}, "reason"),
        ({"claim": "KYC Level"}, "claim"),
        ({"evidence_hash": "XYZ"}, "evidence_hash"),
        ({"expires_at": "2030-01-01T00:00:00"}, "expires_at"),  # no offset
        ({"expires_at": "2000-01-01T00:00:00Z"}, "expires_at"),  # before issued_at
        ({"issued_at": "2999-01-01T00:00:00Z"}, "issued_at"),  # in the future
        ({"value": 2**63}, "value"),
    ):
        r = await api.http.post("/api/v1/attestations", json=base | change, headers=officer.headers)
        body = problem(r, 422, r.json()["code"])
        assert field in {e["field"] for e in body["errors"]}, (change, body)
    without = {k: v for k, v in base.items() if k != "reason"}
    r = await api.http.post("/api/v1/attestations", json=without, headers=officer.headers)
    assert problem(r, 422, "VALIDATION_ERROR")["errors"][0]["field"] == "reason"
    r = await api.http.post(
        "/api/v1/attestations", json=base | {"subject_id": str(uuid.uuid4())},
        headers=officer.headers,
    )  # fmt: skip
    problem(r, 404, "UNKNOWN_USER")


async def test_policy_versions_denials_and_fees_over_http(api: Api) -> None:
    officer = await api.caller(Role.COMPLIANCE)
    auditor = await api.caller(Role.AUDITOR)
    asset = await api.asset()
    alice, a = await api.funded_user(asset, "500.00")
    bob, b = await api.funded_user(asset, "0")

    # an invalid document names the exact path
    bad = {"rules": [{"id": "lim", "kind": "limit", "window": "week", "max_count": 1}]}
    r = await api.http.post(
        "/api/v1/policies",
        json={"asset": asset, "operation_type": "TRANSFER", "document": bad, "reason": "x"},
        headers=officer.headers,
    )
    body = problem(r, 422, "INVALID_POLICY")
    assert body["details"]["path"] == "$.rules[0].window"
    assert body["errors"][0]["field"] == "document.rules[0].window"
    # a USER, OPS, an AUDITOR may not write policies
    for role in (Role.USER, Role.OPS, Role.AUDITOR):
        who = await api.caller(role)
        r = await api.http.post(
            "/api/v1/policies",
            json={"asset": asset, "operation_type": "TRANSFER", "document": KYC_AND_FEE,
                  "reason": "x"},
            headers=who.headers,
        )  # fmt: skip
        problem(r, 403, "FORBIDDEN")

    policy_id = await active_policy(api, officer, asset, "TRANSFER", KYC_AND_FEE)
    got = await api.http.get(f"/api/v1/policies/{policy_id}", headers=auditor.headers)
    assert got.status_code == 200 and got.json()["version"] == 1
    assert got.json()["fee_account_id"] is not None
    listed = await api.http.get(
        f"/api/v1/policies?asset={asset}&active_only=true", headers=auditor.headers
    )
    assert [p["id"] for p in listed.json()] == [policy_id]

    # the denial reaches the client of the write endpoint: problem+json 403 with details
    transfer = {"from_account_id": a, "to_user_id": str(bob.user_id), "amount": "10.00"}
    key = {"Idempotency-Key": f"t-{uuid.uuid4()}"}
    r = await api.http.post("/api/v1/credits/transfer", json=transfer, headers=alice.headers | key)
    denied = problem(r, 403, "POLICY_DENIED")
    assert denied["details"] == {
        "policy_id": policy_id, "asset": asset, "operation_type": "TRANSFER", "version": 1,
        "rule": "kyc", "rule_kind": "claims", "claim": "kyc.level",
    }  # fmt: skip
    assert "kyc" in denied["detail"]
    # remembered under the key: the replay is the same denial, details included
    replay = await api.http.post(
        "/api/v1/credits/transfer", json=transfer, headers=alice.headers | key
    )
    assert problem(replay, 403, "POLICY_DENIED")["details"] == denied["details"]
    assert (await api.balance(a))["posted"] == "500.00"

    # the dry run says the same, and writes nothing
    dry = await api.http.post("/api/v1/policies/dry-run", json=transfer, headers=alice.headers)
    assert dry.status_code == 200, dry.text
    assert dry.json()["allowed"] is False and dry.json()["postings"] == []
    assert dry.json()["denial"] == {
        "code": "POLICY_DENIED", "message": denied["detail"], "policy_id": policy_id,
        "policy_version": 1, "rule": "kyc", "rule_kind": "claims",
    }  # fmt: skip

    await attest(api, officer, alice.user_id, "kyc.level", 2)
    dry = await api.http.post("/api/v1/policies/dry-run", json=transfer, headers=alice.headers)
    plan = dry.json()
    assert plan["allowed"] is True and plan["denial"] is None
    assert plan["policies"] == [{"policy_id": policy_id, "version": 1}]
    fee_account = got.json()["fee_account_id"]
    assert plan["fees"] == [{"asset": asset, "amount": "0.20", "fee_account_id": fee_account}]
    postings = {(p["account_id"], p["amount"]) for p in plan["postings"]}
    # the payee's and the fee account's sides show only their amounts to alice
    assert {(a, "-10.00"), (None, "10.00"), (a, "-0.20"), (None, "0.20")} == postings
    assert (await api.balance(a))["posted"] == "500.00"  # nothing written
    # above the amount rule: denied by "max", in the dry run and for real
    big = transfer | {"amount": "100.01"}
    dry = await api.http.post("/api/v1/policies/dry-run", json=big, headers=alice.headers)
    assert dry.json()["denial"]["rule"] == "max"
    r = await api.http.post("/api/v1/credits/transfer", json=big, headers=alice.headers)
    assert problem(r, 403, "POLICY_DENIED")["details"]["rule"] == "max"

    # for real: the fee is posted in the same operation
    r = await api.http.post("/api/v1/credits/transfer", json=transfer, headers=alice.headers)
    assert r.status_code == 201, r.text
    assert (await api.balance(a))["posted"] == "489.80"
    assert (await api.balance(b))["posted"] == "10.00"

    # ownership: a USER dry-runs only from their own account; staff from any
    r = await api.http.post(
        "/api/v1/policies/dry-run",
        json={"from_account_id": a, "to_user_id": str(bob.user_id), "amount": "1.00"},
        headers=bob.headers,
    )
    problem(r, 404, "UNKNOWN_ACCOUNT")
    r = await api.http.post("/api/v1/policies/dry-run", json=transfer, headers=auditor.headers)
    assert r.status_code == 200 and r.json()["allowed"] is True
    # a ledger refusal is a denial too (not enough funds)
    r = await api.http.post(
        "/api/v1/policies/dry-run",
        json={"from_account_id": b, "to_user_id": str(alice.user_id), "amount": "50.00"},
        headers=bob.headers,
    )
    assert r.json()["allowed"] is False
    assert r.json()["denial"]["code"] in {"POLICY_DENIED", "INSUFFICIENT_FUNDS"}

    # retire: no policy any more; retiring again is 404
    retire = {"asset": asset, "operation_type": "TRANSFER", "reason": "sunset"}
    r = await api.http.post("/api/v1/policies/retire", json=retire, headers=officer.headers)
    assert r.status_code == 200 and r.json()["status"] == "RETIRED", r.text
    r = await api.http.post("/api/v1/policies/retire", json=retire, headers=officer.headers)
    problem(r, 404, "UNKNOWN_POLICY")
    r = await api.http.post(
        "/api/v1/credits/transfer",
        json={"from_account_id": b, "to_user_id": str(alice.user_id), "amount": "1.00"},
        headers=bob.headers,
    )
    assert r.status_code == 201, r.text
    problem(
        await api.http.get("/api/v1/policies/987654321", headers=auditor.headers),
        404,
        "UNKNOWN_POLICY",
    )


async def test_policy_denied_on_mint(api: Api) -> None:
    """Staff write endpoints report a denial the same way."""
    asset = await api.asset()
    policy_id = await active_policy(
        api, api.admin, asset, "MINT", {"rules": [{"id": "cap", "kind": "amount", "max": 100}]}
    )
    user = await api.caller(Role.USER)
    mint = {"user_id": str(user.user_id), "asset": asset, "amount": "1.01"}
    r = await api.http.post("/api/v1/credits/mint", json=mint, headers=api.admin.headers)
    details = problem(r, 403, "POLICY_DENIED")["details"]
    assert details["policy_id"] == policy_id and details["rule"] == "cap"
    assert details["version"] == 1 and details["rule_kind"] == "amount"
    r = await api.http.post(
        "/api/v1/credits/mint", json=mint | {"amount": "1.00"}, headers=api.admin.headers
    )
    assert r.status_code == 201, r.text


async def test_remembered_failures_replay_with_their_details(api: Api) -> None:
    """A remembered 404 whose details carry a ``code`` key replays as the same problem: once
    the asset exists, the same key still answers the remembered UNKNOWN_ASSET (a replay, not
    a re-run), while a new key creates the policy."""
    asset = "N" + uuid.uuid4().hex[:10].upper()
    body = {"asset": asset, "operation_type": "TRANSFER", "reason": "x",
            "document": {"rules": [{"id": "f", "kind": "fee", "fixed": 1}]}}  # fmt: skip
    key = {"Idempotency-Key": f"p-{uuid.uuid4()}"}
    r = await api.http.post("/api/v1/policies", json=body, headers=api.admin.headers | key)
    first = problem(r, 404, "UNKNOWN_ASSET")
    r = await api.http.post(
        "/api/v1/assets",
        json={"code": asset, "name": "late", "scale": 2, "kind": "POINTS"},
        headers=api.admin.headers,
    )
    assert r.status_code == 201, r.text
    r = await api.http.post("/api/v1/policies", json=body, headers=api.admin.headers | key)
    replay = problem(r, 404, "UNKNOWN_ASSET")
    assert replay.pop("trace_id") != first.pop("trace_id")
    assert replay == first
    other = {"Idempotency-Key": f"p-{uuid.uuid4()}"}
    r = await api.http.post("/api/v1/policies", json=body, headers=api.admin.headers | other)
    assert r.status_code == 201, r.text


async def test_policy_schema_route(api: Api) -> None:
    user = await api.caller(Role.USER)
    r = await api.http.get("/api/v1/policies/schema", headers=user.headers)
    assert r.status_code == 200
    schema = r.json()
    assert "PolicyDocument" in schema["$defs"]
    assert {"ClaimsRule", "AmountRule", "LimitRule", "FeeRule"} <= schema["$defs"].keys()


async def test_audit_log_read_filters_and_cursor(api: Api) -> None:
    officer = await api.caller(Role.COMPLIANCE)
    auditor = await api.caller(Role.AUDITOR)
    asset = await api.asset()
    policy_id = await active_policy(
        api, officer, asset, "TRANSFER", {"rules": [{"id": "f", "kind": "fee", "fixed": 1}]}
    )
    r = await api.http.get(
        f"/api/v1/audit?entity_type=policy&entity_id={policy_id}", headers=auditor.headers
    )
    assert r.status_code == 200, r.text
    records = r.json()["records"]
    assert [x["action"] for x in records] == ["policy.activated", "policy.created"]
    created = records[1]
    assert created["actor_id"] == f"user:{officer.user_id}"
    assert created["actor_role"] == "COMPLIANCE" and created["reason"] == "launch"
    assert created["ip"] == "203.0.113.7"
    assert created["after"]["asset"] == asset
    assert r.json()["next_cursor"] is None

    # keyset paging by actor, one record per page, newest first
    seen: list[int] = []
    cursor: int | None = None
    while True:
        url = f"/api/v1/audit?actor_id=user:{officer.user_id}&limit=1"
        page = await api.http.get(
            url + (f"&cursor={cursor}" if cursor else ""), headers=auditor.headers
        )
        assert page.status_code == 200, page.text
        seen += [x["id"] for x in page.json()["records"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    whole = await api.http.get(
        f"/api/v1/audit?actor_id=user:{officer.user_id}", headers=auditor.headers
    )
    assert seen == [x["id"] for x in whole.json()["records"]]
    assert seen == sorted(seen, reverse=True) and len(seen) >= 2
    problem(
        await api.http.get("/api/v1/audit?entity_id=7", headers=auditor.headers),
        422,
        "VALIDATION_ERROR",
    )
    user = await api.caller(Role.USER)
    problem(await api.http.get("/api/v1/audit", headers=user.headers), 403, "FORBIDDEN")
