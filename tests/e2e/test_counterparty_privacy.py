"""A caller sees ids and balances only of accounts it may read: a USER its own, staff
readers all. The other side of a posting shows the asset and the signed amount only — in
a transfer's answer, in ``GET /operations/{id}``, in the dry run and in a P2P payment."""

from __future__ import annotations

from typing import Any

import pytest

from core.types import Role
from tests.e2e.conftest import Api

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


def _sides(entries: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    debit = next(e for e in entries if e["amount"].startswith("-"))
    credit = next(e for e in entries if not e["amount"].startswith("-"))
    return debit, credit


async def test_transfer_answers_hide_the_counterpartys_account_and_balance(api: Api) -> None:
    asset = await api.asset()
    payer, payer_account = await api.funded_user(asset, "100.00")
    payee, _ = await api.funded_user(asset, "7.00")
    body = {"from_account_id": payer_account, "to_user_id": str(payee.user_id), "amount": "3.00"}
    r = await api.http.post("/api/v1/credits/transfer", json=body, headers=payer.headers)
    assert r.status_code == 201, r.text
    debit, credit = _sides(r.json()["entries"])
    assert (debit["account_id"], debit["balance_after"]) == (payer_account, "97.00")
    assert (credit["account_id"], credit["balance_after"], credit["amount"]) == (None, None, "3.00")

    operation = r.json()["id"]
    seen = (await api.http.get(f"/api/v1/operations/{operation}", headers=payee.headers)).json()
    debit, credit = _sides(seen["entries"])
    assert (debit["account_id"], debit["balance_after"], debit["amount"]) == (None, None, "-3.00")
    assert credit["balance_after"] == "10.00" and credit["account_id"] is not None

    staff = await api.caller(Role.AUDITOR)
    seen = (await api.http.get(f"/api/v1/operations/{operation}", headers=staff.headers)).json()
    assert {e["balance_after"] for e in seen["entries"]} == {"97.00", "10.00"}


async def test_the_dry_run_hides_the_payees_account_and_balance(api: Api) -> None:
    asset = await api.asset()
    payer, payer_account = await api.funded_user(asset, "50.00")
    payee, _ = await api.funded_user(asset, "20.00")
    body = {"from_account_id": payer_account, "to_user_id": str(payee.user_id), "amount": "5.00"}
    r = await api.http.post("/api/v1/policies/dry-run", json=body, headers=payer.headers)
    assert r.status_code == 200, r.text
    debit, credit = _sides(r.json()["postings"])
    assert (debit["account_id"], debit["balance_after"]) == (payer_account, "45.00")
    assert (credit["account_id"], credit["balance_after"], credit["amount"]) == (None, None, "5.00")
    staff = await api.caller(Role.COMPLIANCE)
    r = await api.http.post("/api/v1/policies/dry-run", json=body, headers=staff.headers)
    assert {p["balance_after"] for p in r.json()["postings"]} == {"45.00", "25.00"}
