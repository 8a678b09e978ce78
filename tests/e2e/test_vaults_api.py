"""Vaults and the forensic ledger view over HTTP: lifecycle, members and their roles,
atomic moves, ownership (others' vaults look nonexistent), staff reads, pagination."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from core.types import Role
from tests.e2e.conftest import Api, Caller
from tests.e2e.test_ledger_api import problem

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

V = "/api/v1/vaults"


async def open_vault(api: Api, who: Caller, asset: str, name: str = "") -> dict[str, Any]:
    r = await api.http.post(
        V, json={"asset": asset, "name": name or f"v-{uuid.uuid4().hex[:8]}"}, headers=who.headers
    )
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


async def move(api: Api, who: Caller, src: int, dst: int, asset: str, amount: str) -> Any:
    return await api.http.post(
        f"{V}/moves",
        json={"from_account_id": src, "to_account_id": dst, "asset": asset, "amount": amount},
        headers=who.headers,
    )


async def test_vault_lifecycle_and_atomic_moves(api: Api) -> None:
    asset = await api.asset()
    alice, a = await api.funded_user(asset, "100.00")
    key = {"Idempotency-Key": "vault-" + uuid.uuid4().hex, **alice.headers}
    body = {"asset": asset, "name": "  Holiday  "}
    first = await api.http.post(V, json=body, headers=key)
    assert first.status_code == 201, first.text
    vault = first.json()
    assert (vault["name"], vault["role"], vault["posted"]) == ("Holiday", "OWNER", "0.00")
    assert vault["owner_id"] == str(alice.user_id)
    again = await api.http.post(V, json=body, headers=key)
    assert again.json() == vault and again.headers["idempotent-replayed"] == "true"
    problem(await api.http.post(V, json=body, headers=alice.headers), 409, "ALREADY_EXISTS")
    problem(
        await api.http.post(V, json={"asset": "NOPE", "name": "x"}, headers=alice.headers),
        404,
        "UNKNOWN_ASSET",
    )
    savings = await open_vault(api, alice, asset, "Savings")

    r = await move(api, alice, a, vault["id"], asset, "30.00")
    assert r.status_code == 201, r.text
    assert r.json()["type"] == "INTERNAL_MOVE" and len(r.json()["entries"]) == 2
    assert (await move(api, alice, vault["id"], savings["id"], asset, "12.50")).status_code == 201
    problem(await move(api, alice, vault["id"], a, asset, "17.51"), 409, "INSUFFICIENT_FUNDS")
    problem(await move(api, alice, a, a, asset, "1.00"), 422, "VALIDATION_ERROR")
    problem(await move(api, alice, a, vault["id"], asset, "1.001"), 422, "INVALID_AMOUNT")

    got = (await api.http.get(f"{V}/{vault['id']}", headers=alice.headers)).json()
    assert (got["posted"], got["available"]) == ("17.50", "17.50")
    mine = (await api.http.get(V, headers=alice.headers)).json()
    assert [v["name"] for v in mine] == ["Holiday", "Savings"]
    assert (await api.http.get(V, params={"asset": "OTHER"}, headers=alice.headers)).json() == []
    hist = (await api.http.get(f"{V}/{vault['id']}/entries", headers=alice.headers)).json()
    assert [(e["amount"], e["balance_after"]) for e in hist["entries"]] == [
        ("-12.50", "17.50"),
        ("30.00", "30.00"),
    ]
    # conserved: nothing created or lost by the moves
    posted = [(await api.balance(x))["posted"] for x in (a, vault["id"], savings["id"])]
    assert posted == ["70.00", "17.50", "12.50"]


async def test_members_and_their_roles(api: Api) -> None:
    asset = await api.asset()
    owner, o = await api.funded_user(asset, "50.00")
    helper, h = await api.funded_user(asset, "20.00")
    watcher, w = await api.funded_user(asset, "5.00")
    vault = await open_vault(api, owner, asset)
    vid = vault["id"]
    members = f"{V}/{vid}/members"
    for who, role in ((helper, "CONTRIBUTOR"), (watcher, "VIEWER")):
        r = await api.http.put(
            f"{members}/{who.user_id}", json={"role": role}, headers=owner.headers
        )
        assert r.status_code == 200 and r.json()["role"] == role, r.text
    listed = (await api.http.get(members, headers=watcher.headers)).json()
    assert {m["role"] for m in listed} == {"OWNER", "CONTRIBUTOR", "VIEWER"}

    # a contributor moves in and out; a viewer reads but may not move
    assert (await move(api, helper, h, vid, asset, "8.00")).status_code == 201
    assert (await move(api, helper, vid, h, asset, "3.00")).status_code == 201
    assert (await api.http.get(f"{V}/{vid}", headers=watcher.headers)).json()["role"] == "VIEWER"
    problem(await move(api, watcher, w, vid, asset, "1.00"), 403, "FORBIDDEN")
    problem(await move(api, watcher, vid, w, asset, "1.00"), 403, "FORBIDDEN")
    # only the owner manages members; the creator cannot be demoted or removed
    problem(
        await api.http.put(
            f"{members}/{watcher.user_id}", json={"role": "OWNER"}, headers=helper.headers
        ),
        403,
        "FORBIDDEN",
    )
    problem(
        await api.http.put(
            f"{members}/{owner.user_id}", json={"role": "VIEWER"}, headers=owner.headers
        ),
        403,
        "FORBIDDEN",
    )
    problem(
        await api.http.delete(f"{members}/{owner.user_id}", headers=owner.headers),
        403,
        "FORBIDDEN",
    )
    problem(
        await api.http.put(
            f"{members}/{uuid.uuid4()}", json={"role": "VIEWER"}, headers=owner.headers
        ),
        404,
        "UNKNOWN_USER",
    )
    problem(
        await api.http.put(
            f"{members}/{watcher.user_id}", json={"role": "KING"}, headers=owner.headers
        ),
        422,
        "VALIDATION_ERROR",
    )
    # a member may leave; removed, the vault is gone for them
    r = await api.http.delete(f"{members}/{watcher.user_id}", headers=watcher.headers)
    assert r.status_code == 204, r.text
    problem(await api.http.get(f"{V}/{vid}", headers=watcher.headers), 404, "VAULT_NOT_FOUND")
    r = await api.http.delete(f"{members}/{helper.user_id}", headers=owner.headers)
    assert r.status_code == 204, r.text
    problem(await move(api, helper, vid, h, asset, "1.00"), 404, "UNKNOWN_ACCOUNT")
    assert (await api.http.get(f"{V}/{vid}", headers=owner.headers)).json()["posted"] == "5.00"
    assert (await api.balance(o))["posted"] == "50.00"


async def test_others_vaults_look_nonexistent(api: Api) -> None:
    asset = await api.asset()
    alice, a = await api.funded_user(asset, "40.00")
    mallory, m = await api.funded_user(asset, "1.00")
    vault = await open_vault(api, alice, asset)
    assert (await move(api, alice, a, vault["id"], asset, "40.00")).status_code == 201
    missing = 987654321
    for vid in (vault["id"], missing):
        for path in (f"{V}/{vid}", f"{V}/{vid}/entries", f"{V}/{vid}/members"):
            problem(await api.http.get(path, headers=mallory.headers), 404, "VAULT_NOT_FOUND")
        problem(
            await api.http.put(
                f"{V}/{vid}/members/{mallory.user_id}",
                json={"role": "OWNER"},
                headers=mallory.headers,
            ),
            404,
            "VAULT_NOT_FOUND",
        )
        problem(
            await api.http.delete(f"{V}/{vid}/members/{alice.user_id}", headers=mallory.headers),
            404,
            "VAULT_NOT_FOUND",
        )
        # moving out of (or into) somebody else's vault: the same answer as no account
        problem(await move(api, mallory, vid, m, asset, "1.00"), 404, "UNKNOWN_ACCOUNT")
        problem(await move(api, mallory, m, vid, asset, "1.00"), 404, "UNKNOWN_ACCOUNT")
    # naming another user as a USER is a 404 too (staff only)
    r = await api.http.get(V, params={"user_id": str(alice.user_id)}, headers=mallory.headers)
    problem(r, 404, "UNKNOWN_USER")
    r = await api.http.get(
        f"{V}/{vault['id']}", params={"user_id": str(alice.user_id)}, headers=mallory.headers
    )
    problem(r, 404, "UNKNOWN_USER")
    # another user's AVAILABLE compartment is no destination either
    problem(await move(api, mallory, m, a, asset, "1.00"), 404, "UNKNOWN_ACCOUNT")
    assert (await api.http.get(f"{V}/{vault['id']}", headers=alice.headers)).json()[
        "posted"
    ] == "40.00"
    assert (await api.balance(m))["posted"] == "1.00"


async def test_staff_read_vaults_but_do_not_move(api: Api) -> None:
    asset = await api.asset()
    alice, a = await api.funded_user(asset, "10.00")
    vault = await open_vault(api, alice, asset)
    assert (await move(api, alice, a, vault["id"], asset, "4.00")).status_code == 201
    for role in (Role.READ_ONLY, Role.AUDITOR, Role.COMPLIANCE):
        staff = await api.caller(role)
        got = await api.http.get(f"{V}/{vault['id']}", headers=staff.headers)
        assert got.status_code == 200 and got.json()["posted"] == "4.00", got.text
        listed = await api.http.get(
            V, params={"user_id": str(alice.user_id)}, headers=staff.headers
        )
        assert [v["id"] for v in listed.json()] == [vault["id"]]
        problem(await api.http.get(V, headers=staff.headers), 422, "VALIDATION_ERROR")
        entries = await api.http.get(f"{V}/{vault['id']}/entries", headers=staff.headers)
        assert len(entries.json()["entries"]) == 1
        # a named non-member sees no such vault
        r = await api.http.get(
            f"{V}/{vault['id']}", params={"user_id": str(staff.user_id)}, headers=staff.headers
        )
        problem(r, 404, "VAULT_NOT_FOUND")
        # a plain account id is not a vault
        problem(await api.http.get(f"{V}/{a}", headers=staff.headers), 404, "VAULT_NOT_FOUND")
        problem(await move(api, staff, vault["id"], a, asset, "1.00"), 403, "FORBIDDEN")


async def test_forensic_ledger_pagination(api: Api) -> None:
    asset = await api.asset()
    alice, a = await api.funded_user(asset, "100.00")
    bob, _ = await api.funded_user(asset, "0")
    vault = await open_vault(api, alice, asset, "Rainy day")
    for amount in ("1.00", "2.00", "3.00"):
        assert (await move(api, alice, a, vault["id"], asset, amount)).status_code == 201
    r = await api.http.post(
        "/api/v1/credits/transfer",
        json={"from_account_id": a, "to_user_id": str(bob.user_id), "amount": "4.00"},
        headers=alice.headers,
    )
    assert r.status_code == 201, r.text
    # mint (1 entry on alice's side) + 3 moves (2 each) + transfer (1) = 8 entries
    seen: list[dict[str, Any]] = []
    cursor: int | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        page = (
            await api.http.get("/api/v1/me/ledger", params=params, headers=alice.headers)
        ).json()
        assert page["user_id"] == str(alice.user_id)
        seen += page["entries"]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3 and len(seen) == 8
    seqs = [e["seq"] for e in seen]
    assert seqs == sorted(seqs, reverse=True) and len(set(seqs)) == 8
    assert seen[0]["operation_type"] == "TRANSFER" and seen[0]["amount"] == "-4.00"
    assert seen[-1]["operation_type"] == "MINT" and seen[-1]["balance_after"] == "100.00"
    vault_rows = [e for e in seen if e["account_id"] == vault["id"]]
    assert {e["vault_name"] for e in vault_rows} == {"Rainy day"}
    assert all(e["counterparties"] == [a] for e in vault_rows)
    assert [e["balance_after"] for e in vault_rows] == ["6.00", "3.00", "1.00"]
    # filters: one account; and bob's view holds only his entry
    only = await api.http.get(
        "/api/v1/me/ledger", params={"account_id": vault["id"]}, headers=alice.headers
    )
    assert len(only.json()["entries"]) == 3
    bobs = (await api.http.get("/api/v1/me/ledger", headers=bob.headers)).json()["entries"]
    assert [(e["amount"], e["counterparties"]) for e in bobs] == [("4.00", [a])]
    # staff readers read a named user's view; a USER only their own
    auditor = await api.caller(Role.AUDITOR)
    theirs = await api.http.get(
        f"/api/v1/users/{alice.user_id}/ledger", params={"limit": 8}, headers=auditor.headers
    )
    assert [e["seq"] for e in theirs.json()["entries"]] == seqs
    own = await api.http.get(f"/api/v1/users/{alice.user_id}/ledger", headers=alice.headers)
    assert own.status_code == 200
    problem(
        await api.http.get(f"/api/v1/users/{alice.user_id}/ledger", headers=bob.headers),
        404,
        "UNKNOWN_USER",
    )
    problem(
        await api.http.get(f"/api/v1/users/{uuid.uuid4()}/ledger", headers=auditor.headers),
        404,
        "UNKNOWN_USER",
    )
    r = await api.http.get("/api/v1/me/ledger", params={"limit": 0}, headers=alice.headers)
    problem(r, 422, "VALIDATION_ERROR")
