"""Anchors and proof bundles over HTTP, each bundle verified offline by ``chain.evm.verify`` (the
code of ``valueos verify``), with ownership for USERs and the integrity alarm.

Sealing is global to a ledger, so this module runs its own application on its own
database (as ``tests/integration/test_epochs.py`` does)."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.app import create_app
from api.auth import Principal, issue_token
from api.controllers.anchors import PROOF_READERS
from api.services import Services
from chain.evm.verify import VerificationError, check_offline, main
from core.credentials import Credentials
from core.epochs import compute_roots, seal_open_epoch
from core.settings import epoch_settings
from core.types import Role
from tests.e2e.conftest import BOOTSTRAP, Api, Caller, make_settings, running
from tests.support import create_database, drop_database, raw_connect

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

LEDGER_ID = epoch_settings().ledger_id


@dataclass
class Sealed:
    api: Api
    url: str
    asset: str
    alice: Caller
    bob: Caller
    a: int
    b: int
    #: alice's entries in epoch 1, and the one posted in epoch 2
    alice_seqs: list[int]
    later_seq: int


def problem(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    body: dict[str, Any] = r.json()
    assert r.status_code == status, body
    assert r.headers["content-type"].startswith("application/problem+json")
    assert body["code"] == code
    return body


async def seal(api: Api) -> int:
    engine = api.services.ledger.engine
    epoch = await seal_open_epoch(engine)
    assert epoch is not None
    await compute_roots(engine, epoch, LEDGER_ID)
    return epoch


async def entries_of(api: Api, who: Caller, account: int) -> list[dict[str, Any]]:
    r = await api.http.get(f"/api/v1/accounts/{account}/entries", headers=who.headers)
    assert r.status_code == 200, r.text
    return r.json()["entries"]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
async def sealed() -> AsyncIterator[Sealed]:
    url = await create_database()
    app = create_app(make_settings(url))
    try:
        async with running(app) as http:
            services: Services = app.state.services
            creds = Credentials(services.ledger.engine)
            user = await creds.create_user(email=None, role=Role.ADMIN, actor=BOOTSTRAP)
            token = issue_token(
                app.state.jwt_auth,
                Principal(user.id, Role.ADMIN, frozenset({"*"}), f"u:{user.id}"),
            )
            api = Api(app, http, Caller(user.id, Role.ADMIN, {"Authorization": f"Bearer {token}"}))
            asset = await api.asset()
            alice, a = await api.funded_user(asset, "100.00")
            bob, b = await api.funded_user(asset, "5.00")
            for amount in ("12.34", "0.66"):
                r = await http.post(
                    "/api/v1/credits/transfer",
                    json={"from_account_id": a, "to_user_id": str(bob.user_id), "amount": amount},
                    headers=alice.headers,
                )
                assert r.status_code == 201, r.text
            assert await seal(api) == 1
            alice_seqs = [e["seq"] for e in await entries_of(api, alice, a)]
            r = await http.post(
                "/api/v1/credits/transfer",
                json={"from_account_id": b, "to_user_id": str(alice.user_id), "amount": "1.00"},
                headers=bob.headers,
            )
            assert r.status_code == 201, r.text
            # bob's answer hides alice's side; her own history shows it (newest first)
            later = (await entries_of(api, alice, a))[0]["seq"]
            assert await seal(api) == 2
            yield Sealed(api, url, asset, alice, bob, a, b, alice_seqs, later)
    finally:
        await drop_database(url)


def verified(bundle: dict[str, Any], tmp: Path) -> str:
    """Offline verification, and the ``valueos verify`` entry point on the saved file."""
    summary = check_offline(bundle)
    path = tmp / "bundle.json"
    path.write_text(json.dumps(bundle))
    assert main("verify", [str(path)]) == 0
    return summary


async def test_anchor_list_pages_by_epoch(sealed: Sealed) -> None:
    api = sealed.api
    auditor = await api.caller(Role.AUDITOR)
    r = await api.http.get("/api/v1/anchors", headers=auditor.headers)
    assert r.status_code == 200, r.text
    page = r.json()
    assert [x["epoch"] for x in page["anchors"]] == [2, 1] and page["next_cursor"] is None
    two, one = page["anchors"]
    assert two["prev_header"] == one["header_hash"]
    assert one["prev_header"] == "0x" + "00" * 32
    assert one["ledger_id"] == "0x" + LEDGER_ID.hex()
    assert one["status"] == "SEALED" and one["tx_hash"] is None
    first = (await api.http.get("/api/v1/anchors?limit=1", headers=auditor.headers)).json()
    assert [x["epoch"] for x in first["anchors"]] == [2] and first["next_cursor"] == 2
    rest = await api.http.get("/api/v1/anchors?limit=1&before_epoch=2", headers=auditor.headers)
    assert [x["epoch"] for x in rest.json()["anchors"]] == [1]
    assert rest.json()["next_cursor"] is None
    # who may list: the staff who audit, not a user, not OPS
    for role in (Role.ADMIN, Role.COMPLIANCE, Role.READ_ONLY):
        who = await api.caller(role)
        assert (await api.http.get("/api/v1/anchors", headers=who.headers)).status_code == 200
    for role in (Role.USER, Role.OPS):
        who = await api.caller(role)
        problem(await api.http.get("/api/v1/anchors", headers=who.headers), 403, "FORBIDDEN")
    assert {Role.ADMIN, Role.COMPLIANCE, Role.READ_ONLY, Role.AUDITOR} == PROOF_READERS


async def test_entry_bundle_over_http_verifies_offline(sealed: Sealed, tmp_path: Path) -> None:
    api = sealed.api
    anchors = (await api.http.get("/api/v1/anchors", headers=api.admin.headers)).json()
    headers_by_epoch = {x["epoch"]: x["header_hash"] for x in anchors["anchors"]}
    for seq in [*sealed.alice_seqs, sealed.later_seq]:
        r = await api.http.get(f"/api/v1/proofs/entries/{seq}", headers=sealed.alice.headers)
        assert r.status_code == 200, r.text
        bundle = r.json()
        assert bundle["kind"] == "entry" and bundle["leaf"]["seq"] == seq
        assert bundle["leaf"]["account_id"] == sealed.a
        assert "balance" not in bundle["leaf"]
        assert bundle["header"]["header_hash"] == headers_by_epoch[bundle["leaf"]["epoch"]]
        assert {"chain_id", "contract_address", "tx_hash"} <= bundle["anchor"].keys()
        assert "entries root" in verified(bundle, tmp_path)
    # the transfer of 12.34 is in the leaf as minor units
    amounts = set()
    for seq in sealed.alice_seqs:
        r = await api.http.get(f"/api/v1/proofs/entries/{seq}", headers=api.admin.headers)
        amounts.add(r.json()["leaf"]["amount"])
    assert {"10000", "-1234", "-66"} <= amounts

    # any change to the bundle and it no longer verifies
    bundle = (
        await api.http.get(
            f"/api/v1/proofs/entries/{sealed.alice_seqs[0]}", headers=sealed.alice.headers
        )
    ).json()
    for path, value in (
        (("leaf", "amount"), "99999"),
        (("leaf", "account_id"), sealed.b),
        (("header", "prev_header"), "0x" + "11" * 32),
        (("proof",), ["0x" + "22" * 32]),
    ):
        forged = copy.deepcopy(bundle)
        target = forged
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        with pytest.raises(VerificationError):
            check_offline(forged)


async def test_balance_bundle_over_http_verifies_offline(sealed: Sealed, tmp_path: Path) -> None:
    api = sealed.api
    auditor = await api.caller(Role.AUDITOR)
    r = await api.http.get(f"/api/v1/proofs/balances/{sealed.a}?epoch=1", headers=auditor.headers)
    assert r.status_code == 200, r.text
    bundle = r.json()
    assert bundle["kind"] == "balance"
    assert bundle["leaf"]["balance"] == "8700"  # 100.00 - 12.34 - 0.66, in minor units
    assert "amount" not in bundle["leaf"]
    assert "balances root" in verified(bundle, tmp_path)
    mine = await api.http.get(
        f"/api/v1/proofs/balances/{sealed.a}?epoch=2", headers=sealed.alice.headers
    )
    assert mine.status_code == 200, mine.text
    assert mine.json()["leaf"]["balance"] == "8800"
    verified(mine.json(), tmp_path)
    # a balance leaf cannot pass as an entry leaf
    swapped = copy.deepcopy(bundle) | {"kind": "entry"}
    with pytest.raises(VerificationError):
        check_offline(swapped)


async def test_history_bundle_over_http_verifies_complete(sealed: Sealed, tmp_path: Path) -> None:
    api = sealed.api
    url = f"/api/v1/proofs/history/{sealed.a}"
    r = await api.http.get(f"{url}?from_epoch=1&to_epoch=2", headers=sealed.alice.headers)
    assert r.status_code == 200, r.text
    bundle = r.json()
    assert (bundle["from"]["leaf"]["epoch"], bundle["to"]["leaf"]["epoch"]) == (1, 2)
    assert [e["seq"] for e in bundle["entries"]] == [sealed.later_seq]
    assert bundle["to"]["leaf"]["entry_count"] == bundle["from"]["leaf"]["entry_count"] + 1
    path = tmp_path / "history.json"
    path.write_text(json.dumps(bundle))
    assert main("verify", [str(path)]) == 0
    whole = await api.http.get(f"{url}?to_epoch=2", headers=sealed.alice.headers)
    assert whole.status_code == 200, whole.text
    assert whole.json()["from"] is None
    assert [e["seq"] for e in whole.json()["entries"]][-1] == sealed.later_seq
    problem(await api.http.get(f"{url}?to_epoch=2", headers=sealed.bob.headers), 404,
            "UNKNOWN_ACCOUNT")  # fmt: skip
    r = await api.http.get(f"{url}?from_epoch=2&to_epoch=2", headers=api.admin.headers)
    assert r.status_code == 422, r.text


async def test_users_get_proofs_of_their_own_only(sealed: Sealed) -> None:
    api, bob = sealed.api, sealed.bob
    seq = sealed.alice_seqs[0]
    stranger = await api.http.get(f"/api/v1/proofs/entries/{seq}", headers=bob.headers)
    nowhere = await api.http.get("/api/v1/proofs/entries/987654321", headers=bob.headers)
    assert problem(stranger, 404, "UNKNOWN_ENTRY")["detail"] == f"entry {seq} does not exist"
    problem(nowhere, 404, "UNKNOWN_ENTRY")
    r = await api.http.get(f"/api/v1/proofs/balances/{sealed.a}?epoch=1", headers=bob.headers)
    problem(r, 404, "UNKNOWN_ACCOUNT")
    ops = await api.caller(Role.OPS)
    r = await api.http.get(f"/api/v1/proofs/entries/{seq}", headers=ops.headers)
    problem(r, 403, "FORBIDDEN")


async def test_proof_errors(sealed: Sealed) -> None:
    api = sealed.api
    h = api.admin.headers
    # an entry of the open epoch: not sealed yet
    r = await api.http.post(
        "/api/v1/credits/transfer",
        json={"from_account_id": sealed.a, "to_user_id": str(sealed.bob.user_id),
              "amount": "0.01"},
        headers=sealed.alice.headers,
    )  # fmt: skip
    assert r.status_code == 201, r.text
    fresh = r.json()["entries"][0]["seq"]
    problem(await api.http.get(f"/api/v1/proofs/entries/{fresh}", headers=h), 409,
            "EPOCH_NOT_SEALED")  # fmt: skip
    problem(await api.http.get(f"/api/v1/proofs/balances/{sealed.a}?epoch=3", headers=h), 409,
            "EPOCH_NOT_SEALED")  # fmt: skip
    problem(await api.http.get(f"/api/v1/proofs/balances/{sealed.a}?epoch=99", headers=h), 404,
            "UNKNOWN_EPOCH")  # fmt: skip
    problem(await api.http.get("/api/v1/proofs/balances/987654321?epoch=1", headers=h), 404,
            "UNKNOWN_ACCOUNT")  # fmt: skip
    r = await api.http.get(f"/api/v1/proofs/balances/{sealed.a}", headers=h)
    assert "epoch" in problem(r, 400, "BAD_REQUEST")["detail"]


async def test_tampered_entry_is_a_ledger_integrity_alarm(sealed: Sealed) -> None:
    """Runs last in this module: it rewrites history in the module's own database."""
    api = sealed.api
    seq = sealed.alice_seqs[-1]
    good = (await api.http.get(f"/api/v1/proofs/entries/{seq}", headers=api.admin.headers)).json()
    conn = await raw_connect(sealed.url)
    try:
        await conn.execute("SET session_replication_role = replica")
        await conn.execute("UPDATE ledger_entries SET amount = amount - 1 WHERE seq = $1", seq)
    finally:
        await conn.close()
    r = await api.http.get(f"/api/v1/proofs/entries/{seq}", headers=api.admin.headers)
    body = problem(r, 500, "LEDGER_INTEGRITY")
    assert "no longer matches the sealed root" in body["detail"]
    # the bundle served before the rewrite still verifies; one built from the rewritten
    # row (what a lying operator would have to serve) does not
    check_offline(good)
    lying = copy.deepcopy(good)
    lying["leaf"]["amount"] = str(int(good["leaf"]["amount"]) - 1)
    lying.pop("leaf_hash")
    with pytest.raises(VerificationError):
        check_offline(lying)
