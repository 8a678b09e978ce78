"""The credit desk over HTTP: a line, collateral, card spends through holds, the assessment,
bad input refused with stable codes and nothing written, a staff liquidation, and fiat
repayments reported by the payment provider's test double (signed webhook, replayed once,
overpayment, reconciliation)."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text

from api.provider_double import PaymentProviderDouble
from core.risk import params as risk_params
from core.risk.price_signing import SignedRound, sign_round
from core.risk.repayments import ProviderPayout, RepaymentStatus
from core.settings import epoch_settings
from core.types import Role
from tests.e2e.conftest import PRICE_SIGNER, PRICE_SIGNER_SEED, WEBHOOK_SECRET, Api
from tests.integration.risk_support import ADMIN

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


def problem(r: Any, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["code"] == code, r.text


async def create_assets(api: Api) -> tuple[str, str]:
    """A fresh debt asset (scale 2) and collateral asset (scale 9), created over HTTP."""
    tag = uuid.uuid4().hex[:8].upper()
    debt, coll = f"USD{tag}", f"WETH{tag}"
    for code, scale, kind in ((debt, 2, "FIAT_CREDIT"), (coll, 9, "COLLATERAL")):
        r = await api.http.post(
            "/api/v1/assets", json={"code": code, "name": code, "scale": scale, "kind": kind},
            headers=api.admin.headers,
        )  # fmt: skip
        assert r.status_code == 201, r.text
    return debt, coll


async def make_assets(api: Api) -> tuple[str, str]:
    debt, coll = await create_assets(api)
    engine = api.services.ledger.engine
    draft = risk_params.RiskParameterDraft(
        asset=coll, debt_asset=debt, initial_bps=5_000, margin_call_bps=6_500,
        partial_bps=7_500, full_bps=9_000, target_bps=6_000, penalty_bps=500,
        min_leftover=10_000,
    )  # fmt: skip
    draft_id = await risk_params.create_draft(engine, draft, ADMIN)
    await push(api, coll, 1, 2_000)
    await risk_params.activate(engine, draft_id, ADMIN, "e2e")
    return debt, coll


def signed_price(asset: str, round_id: int, dollars: int) -> dict[str, Any]:
    """A round signed by the e2e app's ops signer: the body of ``POST /risk/prices``."""
    r = SignedRound(asset, round_id, dollars * 10**8, 8, datetime.now(UTC))
    return {"asset": r.asset, "round_id": r.round_id, "answer": r.answer,
            "decimals": r.decimals, "updated_at": r.updated_at.isoformat(),
            "signer": PRICE_SIGNER,
            "signature": sign_round(PRICE_SIGNER_SEED, epoch_settings().ledger_id, PRICE_SIGNER,
                                    r)}  # fmt: skip


async def push(api: Api, asset: str, round_id: int, dollars: int) -> str:
    ops = await api.caller(Role.OPS)
    r = await api.http.post(
        "/api/v1/risk/prices", json=signed_price(asset, round_id, dollars),
        headers=ops.headers | {"Idempotency-Key": uuid.uuid4().hex},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    return str(r.json()["verdict"])


async def snapshot(api: Api) -> tuple[int, int, int]:
    async with api.services.ledger.engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT (SELECT count(*) FROM ledger_entries), "
                    "(SELECT count(*) FROM credit_lines), (SELECT count(*) FROM repayments)"
                )
            )
        ).one()
    return int(row[0]), int(row[1]), int(row[2])


async def test_the_card_backend_over_http(api: Api) -> None:
    debt, coll = await make_assets(api)
    user, _ = await api.funded_user(coll, "2.000000000")
    h = user.headers

    def key() -> dict[str, str]:
        return h | {"Idempotency-Key": uuid.uuid4().hex}

    r = await api.http.post(
        "/api/v1/credit/issue",
        json={"user_id": str(user.user_id), "collateral_asset": coll, "debt_asset": debt},
        headers=key(),
    )
    assert r.status_code == 201, r.text
    line = r.json()
    line_id = line["id"]
    r = await api.http.post(
        "/api/v1/collateral/deposit", json={"line_id": line_id, "amount": "2"}, headers=key()
    )
    assert r.status_code == 201, r.text
    r = await api.http.get(f"/api/v1/credit/{line_id}", headers=h)
    assert r.json()["credit_limit"] == "2000.00" and r.json()["collateral_value"] == "4000.00"

    # a card spend: authorization (hold on the credit account), then capture
    r = await api.http.post(
        f"/api/v1/credit/{line_id}/authorize", json={"amount": "1500.00"}, headers=key()
    )
    assert r.status_code == 201, r.text
    hold_id = r.json()["id"]
    r = await api.http.post(
        f"/api/v1/holds/{hold_id}/capture", json={}, headers=api.admin.headers
        | {"Idempotency-Key": uuid.uuid4().hex},
    )  # fmt: skip
    assert r.status_code == 201, r.text

    # bad input: stable codes, nothing written
    before = await snapshot(api)
    for path, body, status, code in [
        ("/api/v1/collateral/withdraw", {"line_id": line_id, "amount": "0.6"}, 409, "LTV_BREACH"),
        ("/api/v1/collateral/withdraw", {"line_id": line_id, "amount": "-1"}, 422, None),
        ("/api/v1/collateral/deposit", {"line_id": line_id, "amount": "0.0000000001"}, 422,
         "INVALID_AMOUNT"),
        ("/api/v1/collateral/deposit", {"line_id": line_id, "amount": "5"}, 409,
         "INSUFFICIENT_FUNDS"),
        ("/api/v1/collateral/deposit", {"line_id": 999_999_999, "amount": "1"}, 404,
         "UNKNOWN_CREDIT_LINE"),
        ("/api/v1/credit/issue", {"user_id": str(user.user_id), "collateral_asset": "NOPE",
                                  "debt_asset": debt}, 404, "UNKNOWN_ASSET"),
        ("/api/v1/credit/issue", {"user_id": str(user.user_id), "collateral_asset": coll,
                                  "debt_asset": debt}, 409, "CREDIT_LINE_EXISTS"),
        ("/api/v1/repayment/initiate", {"line_id": line_id, "amount": "10", "method": "GOLD"},
         422, "VALIDATION_ERROR"),
        (f"/api/v1/credit/{line_id}/authorize", {"amount": "600.00"}, 409, "INSUFFICIENT_FUNDS"),
    ]:  # fmt: skip
        r = await api.http.post(path, json=body, headers=key())
        assert r.status_code == status, (path, body, r.text)
        if code:
            problem(r, status, code)
    assert await snapshot(api) == before

    # a stop-loss: set (and its price shown), a non-positive one refused
    r = await api.http.post(f"/api/v1/credit/{line_id}/stop-loss", json={"answer": 0},
                            headers=key())  # fmt: skip
    problem(r, 422, "VALIDATION_ERROR")
    r = await api.http.post(f"/api/v1/credit/{line_id}/stop-loss",
                            json={"answer": 1_000 * 10**8}, headers=key())  # fmt: skip
    assert r.status_code == 200, r.text
    assert await snapshot(api) == before  # no ledger entry, line or repayment written

    # another user sees nothing of this line
    other = await api.caller(Role.USER)
    problem(await api.http.get(f"/api/v1/credit/{line_id}", headers=other.headers), 404,
            "UNKNOWN_CREDIT_LINE")  # fmt: skip

    # the assessment: LTV 37.5%, HF 2.0
    r = await api.http.get(f"/api/v1/risk/assessment/{line['collateral_account_id']}", headers=h)
    assert r.status_code == 200, r.text
    a = r.json()
    assert (a["ltv_bps"], a["health_factor_bps"], a["next_action"]) == (3_750, 20_000, "NONE")
    assert [t["debt_room"] for t in a["thresholds"]] == ["500.00", "1100.00", "1500.00",
                                                         "2100.00"]  # fmt: skip

    # a staff liquidation needs ADMIN and a reason; on a healthy line the ladder does nothing
    admin = api.admin.headers | {"Idempotency-Key": uuid.uuid4().hex}
    r = await api.http.post(
        "/api/v1/risk/liquidation", json={"line_id": line_id, "reason": " "}, headers=admin
    )
    assert r.status_code in {400, 422}, r.text
    r = await api.http.post(
        "/api/v1/risk/liquidation", json={"line_id": line_id, "reason": "ladder check"},
        headers=api.admin.headers | {"Idempotency-Key": uuid.uuid4().hex},
    )  # fmt: skip
    assert r.status_code == 200 and r.json()["action"] == "NONE", r.text

    # repayments through the provider's test double
    provider = PaymentProviderDouble(api.http, WEBHOOK_SECRET)
    r = await api.http.post(
        "/api/v1/repayment/initiate", json={"line_id": line_id, "amount": "400.00",
                                            "method": "SEPA"}, headers=key())  # fmt: skip
    assert r.status_code == 201, r.text
    first = uuid.UUID(r.json()["id"])
    # its signature checks out with an independent HMAC computation
    raw, headers = provider.event(first, "400.00", succeeded=True, event_id="evt-check")
    expected = hmac.new(WEBHOOK_SECRET.encode(), headers["X-Webhook-Timestamp"].encode() + b"."
                        + raw, hashlib.sha256).hexdigest()  # fmt: skip
    assert headers["X-Webhook-Signature"] == "sha256=" + expected
    r = await provider.collect(first, "400.00", 40_000, event_id="evt-1")
    assert r.status_code == 200 and r.json()["status"] == "SUCCEEDED", r.text
    assert r.json()["repaid"] == "400.00"
    before = await snapshot(api)
    r = await provider.collect(first, "400.00", 40_000, event_id="evt-1")  # replayed
    assert r.status_code == 200 and r.json()["status"] == "SUCCEEDED"
    provider.payouts.pop()  # the provider reports a retried event once
    assert await snapshot(api) == before
    # overpayment: what exceeds the debt lands in AVAILABLE
    r = await api.http.post(
        "/api/v1/repayment/initiate", json={"line_id": line_id, "amount": "1200.00",
                                            "method": "card"}, headers=key())  # fmt: skip
    second = uuid.UUID(r.json()["id"])
    r = await provider.collect(second, "1200.00", 120_000, event_id="evt-2")
    assert (r.json()["repaid"], r.json()["overpaid"]) == ("1100.00", "100.00"), r.text
    r = await api.http.get(f"/api/v1/repayment/{second}", headers=h)
    assert r.json()["status"] == "SUCCEEDED"
    # a forged webhook is refused
    raw, headers = provider.event(second, "1.00", succeeded=True)
    headers["X-Webhook-Signature"] = "sha256=" + "0" * 64
    problem(await api.http.post("/api/v1/repayment/webhook", content=raw, headers=headers), 401,
            "INVALID_SIGNATURE")  # fmt: skip

    # reconciliation: the provider's report against the ledger
    repayments = api.services.credit_desk.repayments
    mine = [p for p in provider.payouts if p.provider_ref in {str(first), str(second)}]
    assert [m for m in await repayments.reconcile(mine) if m.provider_ref in
            {str(first), str(second)}] == []  # fmt: skip
    tampered = [ProviderPayout(str(first), 40_001, RepaymentStatus.SUCCEEDED), mine[1],
                ProviderPayout("ghost", 5, RepaymentStatus.SUCCEEDED)]  # fmt: skip
    found = {(m.provider_ref, m.kind) for m in await repayments.reconcile(tampered)}
    assert {(str(first), "AMOUNT"), ("ghost", "MISSING_IN_LEDGER")} <= found
    assert await api.services.ledger.reconcile() == []


async def test_a_line_of_two_collateral_assets_over_http(api: Api) -> None:
    """A second asset deposited into a line: its holdings, the weighted limit and thresholds,
    a withdrawal of it, its own stop-loss; an asset without parameters for the line's debt, or
    one the line does not hold, is refused with nothing written."""
    debt, coll = await make_assets(api)
    tag = uuid.uuid4().hex[:8].upper()
    btc, bare = f"WBTC{tag}", f"WSOL{tag}"
    for code in (btc, bare):
        r = await api.http.post(
            "/api/v1/assets", json={"code": code, "name": code, "scale": 8, "kind": "COLLATERAL"},
            headers=api.admin.headers,
        )  # fmt: skip
        assert r.status_code == 201, r.text
    engine = api.services.ledger.engine
    draft = risk_params.RiskParameterDraft(
        asset=btc, debt_asset=debt, initial_bps=6_000, margin_call_bps=7_000, partial_bps=8_000,
        full_bps=9_200, target_bps=6_500, penalty_bps=300, min_leftover=10_000,
    )  # fmt: skip
    draft_id = await risk_params.create_draft(engine, draft, ADMIN)
    await push(api, btc, 1, 60_000)
    await risk_params.activate(engine, draft_id, ADMIN, "e2e")
    user, _ = await api.funded_user(coll, "1.000000000")
    for asset in (btc, bare):
        r = await api.http.post(
            "/api/v1/credits/mint",
            json={"user_id": str(user.user_id), "asset": asset, "amount": "1.00000000"},
            headers=api.admin.headers,
        )
        assert r.status_code == 201, r.text

    def key() -> dict[str, str]:
        return user.headers | {"Idempotency-Key": uuid.uuid4().hex}

    r = await api.http.post(
        "/api/v1/credit/issue",
        json={"user_id": str(user.user_id), "collateral_asset": coll, "debt_asset": debt},
        headers=key(),
    )
    line_id = r.json()["id"]

    async def move(kind: str, amount: str, asset: str | None) -> Any:
        body = {"line_id": line_id, "amount": amount} | ({"asset": asset} if asset else {})
        return await api.http.post(f"/api/v1/collateral/{kind}", json=body, headers=key())

    for asset, amount in ((None, "1"), (btc, "0.10000000")):
        r = await move("deposit", amount, asset)
        assert r.status_code == 201, r.text

    before = await snapshot(api)
    problem(await move("deposit", "0.1", bare), 409, "NO_RISK_PARAMETERS")
    problem(await move("withdraw", "0.1", bare), 422, "VALIDATION_ERROR")
    problem(await move("deposit", "0.000000001", btc), 422, "INVALID_AMOUNT")  # 8 decimals
    assert await snapshot(api) == before

    r = await api.http.get(f"/api/v1/credit/{line_id}", headers=user.headers)
    line = r.json()
    assert [(h["asset"], h["amount"], h["value"]) for h in line["holdings"]] == [
        (coll, "1.000000000", "2000.00"), (btc, "0.10000000", "6000.00")
    ]  # fmt: skip
    # $2,000 x 50% + $6,000 x 60% (each under its haircut value)
    assert line["credit_limit"] == "4600.00" and line["collateral_value"] == "8000.00"
    r = await api.http.get(f"/api/v1/collateral/{line['holdings'][1]['account_id']}",
                           headers=user.headers)  # fmt: skip
    assert r.status_code == 200 and r.json()["id"] == line_id

    r = await api.http.post(
        f"/api/v1/credit/{line_id}/authorize", json={"amount": "4000.00"}, headers=key()
    )
    assert r.status_code == 201, r.text
    r = await api.http.get(
        f"/api/v1/risk/assessment/{line['credit_account_id']}", headers=user.headers
    )
    thresholds = {t["name"]: t for t in r.json()["thresholds"]}
    # margin call: ($2,000 x 65% + $6,000 x 70%) / $8,000 = 68.75%; room $5,500 - $4,000
    assert thresholds["margin_call"]["ltv_bps"] == 6_875
    assert thresholds["margin_call"]["debt_room"] == "1500.00"
    assert r.json()["ltv_bps"] == 5_000

    # the most wBTC that keeps the line under its weighted initial LTV: $4,000 of debt needs
    # $1,000 + 0.6 x (wBTC value) >= $4,000, so $5,000 of wBTC stays
    problem(await move("withdraw", "0.01666667", btc), 409, "LTV_BREACH")
    r = await move("withdraw", "0.01666666", btc)
    assert r.status_code == 201, r.text
    r = await api.http.post(
        f"/api/v1/credit/{line_id}/stop-loss", json={"answer": 40_000 * 10**8, "asset": btc},
        headers=key(),
    )  # fmt: skip
    assert r.status_code == 200, r.text
    assert [h["stop_loss_answer"] for h in r.json()["holdings"]] == [None, 40_000 * 10**8]
    # a price move shows at once in the limit an authorization meets (before any refresh):
    # $2,000 x 50% + 0.08333334 wBTC x $30,000 x 60%
    await push(api, btc, 2, 30_000)
    r = await api.http.get(f"/api/v1/credit/{line_id}", headers=user.headers)
    assert r.json()["credit_limit"] == "2500.00" and r.json()["available_credit"] == "0.00"
