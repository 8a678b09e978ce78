"""The ops price push over HTTP: a round is recorded only with a configured signer's valid
Ed25519 signature over its canonical message; every tampered field, an unknown signer, a
wrong key, a missing or malformed signature, another ledger's signature and an unconfigured
server are refused with stable codes and nothing is written; a replay is a DUPLICATE."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from core.risk.price_signing import PriceSigners, SignedRound, sign_round
from core.settings import epoch_settings
from core.types import Role
from tests.e2e.conftest import PRICE_SIGNER, PRICE_SIGNER_SEED, Api, Caller
from tests.e2e.test_credit_api import make_assets, problem, signed_price

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

OTHER_SEED = bytes(range(1, 33))


def resign(body: dict[str, Any], *, seed: bytes = PRICE_SIGNER_SEED,
           ledger_id: bytes | None = None) -> dict[str, Any]:  # fmt: skip
    """``body`` with its signature made again over its own fields."""
    r = SignedRound(body["asset"], body["round_id"], body["answer"], body["decimals"],
                    datetime.fromisoformat(body["updated_at"]))  # fmt: skip
    lid = epoch_settings().ledger_id if ledger_id is None else ledger_id
    return body | {"signature": sign_round(seed, lid, body["signer"], r)}


async def state(api: Api, *assets: str) -> tuple[Any, ...]:
    """Every price round and price state of ``assets`` and the audit log's length."""
    async with api.services.ledger.engine.connect() as conn:
        rounds = (
            await conn.execute(
                text("SELECT asset, source, round_id, answer, verdict, signer FROM price_rounds "
                     "WHERE asset = ANY(:a) ORDER BY asset, round_id"),
                {"a": list(assets)},
            )
        ).all()  # fmt: skip
        prices = (
            await conn.execute(
                text("SELECT asset, price_answer, price_at, frozen, frozen_reason, updated_at "
                     "FROM risk_assets WHERE asset = ANY(:a) ORDER BY asset"),
                {"a": list(assets)},
            )
        ).all()  # fmt: skip
        audit = (await conn.execute(text("SELECT count(*) FROM audit_log"))).scalar_one()
    return tuple(map(tuple, rounds)), tuple(map(tuple, prices)), audit


async def post(api: Api, body: dict[str, Any], caller: Caller | None = None) -> Any:
    caller = caller or await api.caller(Role.OPS)
    return await api.http.post(
        "/api/v1/risk/prices", json=body,
        headers=caller.headers | {"Idempotency-Key": uuid.uuid4().hex},
    )  # fmt: skip


async def test_a_signed_round_is_recorded_with_its_signer(api: Api) -> None:
    _, coll = await make_assets(api)
    r = await post(api, signed_price(coll, 2, 2_100))
    assert r.status_code == 200 and r.json()["verdict"] == "ACCEPTED", r.text
    rounds, prices, _ = await state(api, coll)
    assert [(x[2], x[4], x[5]) for x in rounds] == [(1, "ACCEPTED", PRICE_SIGNER),
                                                    (2, "ACCEPTED", PRICE_SIGNER)]  # fmt: skip
    assert prices[0][1] == 2_100 * 10**8 and prices[0][3] is False
    # a signed round that freezes the asset names its signer in the audit record
    r = await post(api, signed_price(coll, 3, 0))
    assert r.status_code == 200 and r.json()["verdict"] == "NON_POSITIVE", r.text
    async with api.services.ledger.engine.connect() as conn:
        after = (
            await conn.execute(
                text("SELECT after FROM audit_log WHERE action = 'risk_asset.frozen' "
                     "AND entity_id = :a ORDER BY id DESC LIMIT 1"),
                {"a": coll},
            )
        ).scalar_one()  # fmt: skip
    assert after == {"reason": "NON_POSITIVE", "signer": PRICE_SIGNER}
    rounds, _, _ = await state(api, coll)
    assert rounds[-1][4:] == ("NON_POSITIVE", PRICE_SIGNER)


async def test_tampered_unknown_wrong_key_and_missing_signatures_write_nothing(api: Api) -> None:
    _, coll = await make_assets(api)
    _, other = await make_assets(api)
    good = signed_price(coll, 2, 2_100)
    at = datetime.fromisoformat(good["updated_at"])
    ops, user = await api.caller(Role.OPS), await api.caller(Role.USER)
    before = await state(api, coll, other)
    cases: list[tuple[dict[str, Any], int, str]] = [
        (good | {"answer": good["answer"] + 1}, 401, "PRICE_SIGNATURE_INVALID"),
        (good | {"asset": other}, 401, "PRICE_SIGNATURE_INVALID"),
        (good | {"round_id": 3}, 401, "PRICE_SIGNATURE_INVALID"),
        (good | {"decimals": 9}, 401, "PRICE_SIGNATURE_INVALID"),
        (good | {"updated_at": (at + timedelta(microseconds=1)).isoformat()}, 401,
         "PRICE_SIGNATURE_INVALID"),
        (resign(good, seed=OTHER_SEED), 401, "PRICE_SIGNATURE_INVALID"),  # wrong key
        (resign(good, ledger_id=bytes(32)), 401, "PRICE_SIGNATURE_INVALID"),  # another ledger
        (good | {"signature": "not base64!"}, 401, "PRICE_SIGNATURE_INVALID"),
        ({k: v for k, v in good.items() if k != "signature"}, 401, "PRICE_SIGNATURE_INVALID"),
        ({k: v for k, v in good.items() if k != "signer"}, 401, "PRICE_SIGNATURE_INVALID"),
        (resign(good | {"signer": "mallory"}, seed=OTHER_SEED), 403, "UNKNOWN_PRICE_SIGNER"),
    ]  # fmt: skip
    for body, status, code in cases:
        problem(await post(api, body, ops), status, code)
    assert await state(api, coll, other) == before
    # the ADMIN/OPS guard stays: a USER's bearer with a good signature is refused
    assert (await post(api, good, user)).status_code == 403
    assert await state(api, coll, other) == before
    # the untampered round is still accepted afterwards
    assert (await post(api, good)).json()["verdict"] == "ACCEPTED"


async def test_a_replayed_round_is_a_duplicate_and_changes_nothing(api: Api) -> None:
    _, coll = await make_assets(api)
    first = signed_price(coll, 2, 2_100)
    assert (await post(api, first)).json()["verdict"] == "ACCEPTED"
    assert (await post(api, signed_price(coll, 3, 2_200))).json()["verdict"] == "ACCEPTED"
    ops = await api.caller(Role.OPS)
    before = await state(api, coll)
    for replayed in (first, first):  # an older signed round sent again, twice
        r = await post(api, replayed, ops)
        assert r.status_code == 200 and r.json()["verdict"] == "DUPLICATE", r.text
    after = await state(api, coll)
    assert after == before  # no row, no freeze, no audit record
    assert after[1][0][1] == 2_200 * 10**8 and after[1][0][3] is False


async def test_without_signers_every_push_is_refused(api: Api) -> None:
    _, coll = await make_assets(api)
    desk = api.services.credit_desk
    configured = desk.price_signers
    desk.price_signers = PriceSigners({}, configured.ledger_id)
    ops = await api.caller(Role.OPS)
    try:
        before = await state(api, coll)
        problem(await post(api, signed_price(coll, 2, 2_100), ops), 503,
                "PRICE_SIGNERS_NOT_CONFIGURED")  # fmt: skip
        assert await state(api, coll) == before
    finally:
        desk.price_signers = configured
