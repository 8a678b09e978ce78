"""Risk parameters over HTTP: a DRAFT, its activation (the previous version retires, the
asset's limits follow, both audited), the list by asset, idempotent writes, and bad input
refused with stable codes and nothing written."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import text

from core.types import Role
from tests.e2e.conftest import Api
from tests.e2e.test_credit_api import create_assets as make_assets
from tests.e2e.test_credit_api import problem, push

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


def ladder(coll: str, debt: str, **overrides: Any) -> dict[str, Any]:
    return {
        "asset": coll, "debt_asset": debt, "initial_bps": 5_000, "margin_call_bps": 6_500,
        "partial_bps": 7_500, "full_bps": 9_000, "target_bps": 6_000, "penalty_bps": 500,
        "min_leftover": "100.00",
    } | overrides  # fmt: skip


def admin(api: Api, key: str | None = None) -> dict[str, str]:
    return api.admin.headers | {"Idempotency-Key": key or uuid.uuid4().hex}


async def written(api: Api) -> tuple[int, int]:
    async with api.services.ledger.engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT (SELECT count(*) FROM risk_parameters), (SELECT count(*) FROM "
                    "audit_log WHERE entity_type = 'risk_parameters')"
                )
            )
        ).one()
    return int(row[0]), int(row[1])


async def test_draft_activate_and_list(api: Api) -> None:
    debt, coll = await make_assets(api)
    key = uuid.uuid4().hex
    r = await api.http.post(
        "/api/v1/risk/parameters", json=ladder(coll, debt), headers=admin(api, key)
    )
    assert r.status_code == 201, r.text
    first = r.json()
    assert (first["status"], first["version"], first["min_leftover"]) == ("DRAFT", 1, "100.00")
    assert first["close_factor_min"] == "2000.00" and first["ewma_lambda"] == "0.94"
    # the same key and body: the stored answer, no second version
    again = await api.http.post(
        "/api/v1/risk/parameters", json=ladder(coll, debt), headers=admin(api, key)
    )
    assert again.status_code == 201 and again.json() == first

    await push(api, coll, 1, 2_000)
    r = await api.http.post(
        f"/api/v1/risk/parameters/{first['id']}/activate", json={"reason": "launch"},
        headers=admin(api),
    )  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "ACTIVE" and r.json()["activated_at"]
    assert r.json()["haircut_bps"] == 1_000  # one price: no volatility, the floor

    # a user's line under version 1: 1 wETH at $2,000 lends min($1,800, $1,000)
    user, _ = await api.funded_user(coll, "1.000000000")
    h = user.headers
    r = await api.http.post(
        "/api/v1/credit/issue",
        json={"user_id": str(user.user_id), "collateral_asset": coll, "debt_asset": debt},
        headers=h | {"Idempotency-Key": uuid.uuid4().hex},
    )
    line_id = r.json()["id"]
    r = await api.http.post(
        "/api/v1/collateral/deposit", json={"line_id": line_id, "amount": "1"},
        headers=h | {"Idempotency-Key": uuid.uuid4().hex},
    )  # fmt: skip
    assert r.status_code == 201, r.text
    assert (await api.http.get(f"/api/v1/credit/{line_id}", headers=h)).json()[
        "credit_limit"
    ] == "1000.00"

    # version 2 lends at most 40%: activating it retires version 1 and the limit follows
    r = await api.http.post(
        "/api/v1/risk/parameters",
        json=ladder(coll, debt, initial_bps=4_000, buffer="50.00"),
        headers=admin(api),
    )
    second = r.json()
    assert r.status_code == 201 and second["version"] == 2 and second["buffer"] == "50.00"
    r = await api.http.post(
        f"/api/v1/risk/parameters/{second['id']}/activate", json={"reason": "tighter"},
        headers=admin(api),
    )  # fmt: skip
    assert r.status_code == 200, r.text
    assert (await api.http.get(f"/api/v1/credit/{line_id}", headers=h)).json()[
        "credit_limit"
    ] == "800.00"

    ops = await api.caller(Role.OPS)
    r = await api.http.get(f"/api/v1/risk/parameters?asset={coll}", headers=ops.headers)
    assert r.status_code == 200, r.text
    assert [(p["version"], p["status"]) for p in r.json()] == [(1, "RETIRED"), (2, "ACTIVE")]
    r = await api.http.get(f"/api/v1/risk/parameters/{second['id']}", headers=ops.headers)
    assert r.json()["initial_bps"] == 4_000
    async with api.services.ledger.engine.connect() as conn:
        actions = (
            await conn.execute(
                text(
                    "SELECT action FROM audit_log WHERE entity_type = 'risk_parameters' "
                    "AND entity_id = ANY(:ids) ORDER BY id"
                ),
                {"ids": [str(first["id"]), str(second["id"])]},
            )
        ).scalars()
        assert list(actions) == [
            "risk_parameters.created", "risk_parameters.activated",
            "risk_parameters.created", "risk_parameters.activated",
        ]  # fmt: skip

    # an ACTIVE version cannot be activated again; an unknown one does not exist
    r = await api.http.post(
        f"/api/v1/risk/parameters/{second['id']}/activate", json={"reason": "again"},
        headers=admin(api),
    )  # fmt: skip
    problem(r, 409, "RISK_PARAMETERS_NOT_DRAFT")
    r = await api.http.post(
        "/api/v1/risk/parameters/999999999/activate", json={"reason": "x"}, headers=admin(api)
    )
    problem(r, 404, "UNKNOWN_RISK_PARAMETERS")
    problem(
        await api.http.get("/api/v1/risk/parameters/999999999", headers=ops.headers),
        404, "UNKNOWN_RISK_PARAMETERS",
    )  # fmt: skip


async def test_bad_parameters_are_refused_and_nothing_is_written(api: Api) -> None:
    debt, coll = await make_assets(api)
    other_debt, _ = await make_assets(api)
    r = await api.http.post("/api/v1/risk/parameters", json=ladder(coll, debt), headers=admin(api))
    assert r.status_code == 201, r.text
    before = await written(api)
    cases: list[tuple[dict[str, Any], int, str]] = [
        (ladder(coll, debt, margin_call_bps=7_500), 422, "INVALID_RISK_PARAMETERS"),  # = partial
        (ladder(coll, debt, full_bps=7_000), 422, "INVALID_RISK_PARAMETERS"),  # < partial
        (ladder(coll, debt, target_bps=7_500), 422, "INVALID_RISK_PARAMETERS"),
        (ladder(coll, debt, initial_bps=0), 422, "INVALID_RISK_PARAMETERS"),
        (ladder(coll, debt, haircut_floor_bps=6_000), 422, "INVALID_RISK_PARAMETERS"),
        (ladder(coll, debt, ewma_lambda="1.5"), 422, "INVALID_RISK_PARAMETERS"),
        (ladder(coll, other_debt), 422, "INVALID_RISK_PARAMETERS"),  # the asset lends `debt`
        (ladder(coll, debt, penalty_bps=-1), 422, "VALIDATION_ERROR"),
        (ladder(coll, debt, min_leftover="-5.00"), 422, "VALIDATION_ERROR"),
        (ladder(coll, debt, apr_bps=-100), 422, "VALIDATION_ERROR"),
        (ladder(coll, debt, full_bps=10_001), 422, "VALIDATION_ERROR"),
        (ladder(coll, debt, buffer="1.005"), 422, "INVALID_AMOUNT"),  # 3 decimals at scale 2
        (ladder(coll, debt, min_leftover="99999999999999999999"), 422, "AMOUNT_OVERFLOW"),
        (ladder(coll, debt, unknown_field=1), 422, "VALIDATION_ERROR"),
        (ladder("NOPE", debt), 404, "UNKNOWN_ASSET"),
        (ladder(coll, "NOPE"), 404, "UNKNOWN_ASSET"),
        (ladder(debt, debt), 404, "UNKNOWN_ASSET"),  # not a collateral asset
        (ladder(coll, coll), 404, "UNKNOWN_ASSET"),  # not a fiat credit asset
    ]
    for body, status, code in cases:
        r = await api.http.post("/api/v1/risk/parameters", json=body, headers=admin(api))
        problem(r, status, code)
    r = await api.http.post(
        "/api/v1/risk/parameters/1/activate", json={"reason": " "}, headers=admin(api)
    )
    problem(r, 422, "VALIDATION_ERROR")  # a reason is required
    assert await written(api) == before
