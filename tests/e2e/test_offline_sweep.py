"""Allowances a crash left OPENING, finished by the worker's sweep exactly once; device keys
revoked (no new allowance, open ones still honoured).

The crashes are real: ``tests.e2e.offline_open_driver`` opens an allowance in its own process
and SIGKILLs itself before or after the ledger committed the hold."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from core.errors import AllowanceAbandoned, DeviceRevoked
from core.offline import opening
from core.offline.vouchers import release_message
from core.types import Actor, Role
from jobs import housekeeping
from tests.e2e.conftest import Api
from tests.e2e.test_ledger_api import problem
from tests.e2e.test_offline_api import OFF, Wallet, allowance, b64, redeem, wallet

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
NOW = timedelta(0)


async def crash_opening(
    api: Api, db: str, w: Wallet, point: str, *, amount: str = "10.00", key: str | None = None
) -> tuple[int, datetime]:
    """Run the driver until it kills itself at ``point``; the OPENING allowance's id and the
    expiry it asked for."""
    expires_at = datetime.now(UTC) + timedelta(days=1)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.e2e.offline_open_driver", "--db", db,
        "--user", str(w.user.user_id), "--account", str(w.account), "--device",
        str(w.device_id), "--amount", amount, "--expires-at", expires_at.isoformat(),
        "--die", point, *(["--key", key] if key else []),
        env=dict(os.environ) | {"PYTHONPATH": str(ROOT)}, cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await proc.communicate()
    assert proc.returncode == -signal.SIGKILL, out.decode()
    rows = await rows_of(api, w)
    assert [r["status"] for r in rows] == ["OPENING"], rows
    return int(rows[0]["id"]), expires_at


async def rows_of(api: Api, w: Wallet) -> list[dict[str, Any]]:
    async with api.services.ledger.engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT id, status, failure, hold_id FROM offline_allowances "
                "WHERE device_id = :d ORDER BY id"
            ),
            {"d": w.device_id},
        )
        return [dict(r._mapping) for r in rows]


async def holds_of(api: Api, allowance_id: int) -> list[str]:
    """The statuses of every hold made for the allowance (by its ledger key's metadata)."""
    async with api.services.ledger.engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT status FROM holds "
                "WHERE (metadata->>'offline_allowance')::bigint = :a ORDER BY id"
            ),
            {"a": allowance_id},
        )
        return [r.status for r in rows]


async def audits(api: Api, action: str, entity: object) -> int:
    async with api.services.ledger.engine.connect() as conn:
        return int(
            (
                await conn.execute(
                    text("SELECT count(*) FROM audit_log WHERE action = :a AND entity_id = :e"),
                    {"a": action, "e": str(entity)},
                )
            ).scalar_one()
        )


async def reopen(w: Wallet, api: Api, key: str, expires_at: datetime) -> Any:
    """The allowance request again, in-process, as a retry under its key would send it."""
    return await api.services.offline.allowances.open(
        w.user.user_id, Actor(f"u:{w.user.user_id}", Role.USER), account_id=w.account,
        device_id=w.device_id, amount="10.00", expires_at=expires_at, idempotency_key=key,
    )  # fmt: skip


@pytest.mark.parametrize("point", ["before-hold", "after-hold"])
async def test_an_allowance_left_opening_without_a_key_is_abandoned_once(
    api: Api, database_url: str, point: str
) -> None:
    asset = await api.asset()
    w = await wallet(api, asset, "100.00")
    shop, _ = await api.funded_user(asset, "0")
    allowance_id, _ = await crash_opening(api, database_url, w, point)
    reserved = "10.00" if point == "after-hold" else "0.00"
    assert (await api.balance(w.account))["pending"] == reserved
    assert await api.services.ledger.expire_holds() == 0  # the hold is not due for a day

    assert await opening.sweep(api.services.ledger) == (0, 0)  # too young to be abandoned
    assert await opening.sweep(api.services.ledger, older_than=NOW) == (1, 0)
    [row] = await rows_of(api, w)
    assert (row["status"], row["failure"]) == ("FAILED", "ABANDONED")
    assert await holds_of(api, allowance_id) == ["VOIDED"]  # one hold, whoever made it
    assert (await api.balance(w.account))["available"] == "100.00"
    assert await opening.sweep(api.services.ledger, older_than=NOW) == (0, 0)
    assert await audits(api, "offline.allowance.failed", allowance_id) == 1
    # no certificate was issued: a voucher naming it is refused as unknown
    outcome = await redeem(api, shop, w.voucher(allowance_id, shop, 100, 1, 100))
    assert outcome["results"][0]["code"] == "UNKNOWN_ALLOWANCE"
    r = await api.http.get(f"{OFF}/allowances/{allowance_id}", headers=w.user.headers)
    assert (r.json()["status"], r.json()["certificate"]) == ("FAILED", "")
    assert await api.services.ledger.reconcile() == []


async def test_an_allowance_left_opening_under_a_key_is_finished_for_its_retry(
    api: Api, database_url: str
) -> None:
    w = await wallet(api, await api.asset(), "100.00")
    key = "k-" + uuid.uuid4().hex
    allowance_id, expires_at = await crash_opening(api, database_url, w, "after-hold", key=key)
    assert await housekeeping.offline_sweep(api.services.ledger) == (0, 0)  # too young
    assert await opening.sweep(api.services.ledger, older_than=NOW) == (1, 0)
    [row] = await rows_of(api, w)
    assert row["status"] == "OPEN"
    again = await reopen(w, api, key, expires_at)
    assert (again.id, again.status.value, again.replayed) == (allowance_id, "OPEN", True)
    assert again.certificate.startswith("VC1.")
    assert await holds_of(api, allowance_id) == ["PENDING"]
    assert await audits(api, "offline.allowance.opened", allowance_id) == 1
    assert await api.services.ledger.reconcile() == []


async def test_the_sweep_racing_the_request_it_sweeps_decides_once(
    api: Api, database_url: str
) -> None:
    """The sweep and a retry under the key (or the slow request itself) finish the same
    OPENING allowances at once: one hold each, one decision each, nothing left reserved by
    a FAILED one."""
    asset = await api.asset()
    keyed = [await wallet(api, asset, "100.00") for _ in range(3)]
    keyless = [await wallet(api, asset, "100.00") for _ in range(3)]
    keys = {id(w): "k-" + uuid.uuid4().hex for w in keyed}
    opened = {}
    for w in keyed:
        opened[id(w)] = await crash_opening(api, database_url, w, "before-hold", key=keys[id(w)])
    bare = [(await crash_opening(api, database_url, w, "before-hold"))[0] for w in keyless]
    ledger = api.services.ledger
    actor = Actor("slow-request", Role.USER)
    results = await asyncio.gather(
        opening.sweep(ledger, older_than=NOW),
        *(reopen(w, api, keys[id(w)], opened[id(w)][1]) for w in keyed),
        *(opening.finish(ledger, a, actor) for a in bare),
        return_exceptions=True,
    )
    assert not [r for r in results if isinstance(r, BaseException)], results
    for w in keyed:
        allowance_id = opened[id(w)][0]
        assert [r["status"] for r in await rows_of(api, w)] == ["OPEN"]
        assert await holds_of(api, allowance_id) == ["PENDING"]
        assert await audits(api, "offline.allowance.opened", allowance_id) == 1
    for w, allowance_id in zip(keyless, bare, strict=True):
        [row] = await rows_of(api, w)
        decided = await audits(api, "offline.allowance.opened", allowance_id) + await audits(
            api, "offline.allowance.failed", allowance_id
        )
        assert decided == 1
        expected = {"OPEN": ["PENDING"], "FAILED": ["VOIDED"]}[row["status"]]
        assert await holds_of(api, allowance_id) == expected
    assert await ledger.reconcile() == []


async def test_a_device_revoked_while_an_allowance_was_opening_gets_it_failed(
    api: Api, database_url: str
) -> None:
    w = await wallet(api, await api.asset(), "100.00")
    key = "k-" + uuid.uuid4().hex
    allowance_id, expires_at = await crash_opening(api, database_url, w, "after-hold", key=key)
    r = await api.http.post(f"{OFF}/devices/{w.device_id}/revoke", json={}, headers=w.user.headers)
    assert r.status_code == 200, r.text
    with pytest.raises(DeviceRevoked):
        await reopen(w, api, key, expires_at)
    [row] = await rows_of(api, w)
    assert (row["status"], row["failure"]) == ("FAILED", "DEVICE_REVOKED")
    assert await holds_of(api, allowance_id) == ["VOIDED"]
    assert (await api.balance(w.account))["available"] == "100.00"
    with pytest.raises(DeviceRevoked):  # and again: the stored failure
        await reopen(w, api, key, expires_at)


async def test_a_retry_of_an_abandoned_allowance_is_told_so(api: Api, database_url: str) -> None:
    """Opened under a key, then abandoned (as a keyless one is): the retry learns it."""
    w = await wallet(api, await api.asset(), "100.00")
    key = "k-" + uuid.uuid4().hex
    allowance_id, expires_at = await crash_opening(api, database_url, w, "after-hold", key=key)
    await opening.finish(api.services.ledger, allowance_id, Actor("t", Role.SYSTEM), abandon=True)
    with pytest.raises(AllowanceAbandoned):
        await reopen(w, api, key, expires_at)


async def test_a_revoked_device_gets_no_new_allowance_and_its_open_ones_still_pay(
    api: Api,
) -> None:
    asset = await api.asset()
    w = await wallet(api, asset, "100.00")
    shop, _ = await api.funded_user(asset, "0")
    a = await allowance(api, w, "50.00")
    before = w.voucher(a["id"], shop, 1000, 1, 1000)
    url = f"{OFF}/devices/{w.device_id}/revoke"
    headers = w.user.headers | {"Idempotency-Key": "revoke-" + uuid.uuid4().hex}
    r = await api.http.post(url, json={"reason": "phone lost"}, headers=headers)
    assert r.status_code == 200, r.text
    revoked = r.json()
    assert revoked["status"] == "REVOKED" and revoked["revoked_at"] is not None
    replay = await api.http.post(url, json={"reason": "phone lost"}, headers=headers)
    assert replay.json() == revoked and replay.headers["Idempotent-Replayed"] == "true"
    again = await api.http.post(url, json={}, headers=w.user.headers)  # another key
    assert again.status_code == 200 and again.json() == revoked
    assert await audits(api, "offline.device.revoked", w.device_id) == 1
    listed = await api.http.get(f"{OFF}/devices", headers=w.user.headers)
    assert [d["status"] for d in listed.json()] == ["REVOKED"]

    r = await api.http.post(
        f"{OFF}/allowances",
        json={"from_account_id": w.account, "device_id": w.device_id, "amount": "1.00"},
        headers=w.user.headers,
    )
    problem(r, 409, "DEVICE_REVOKED")
    # vouchers against the allowance it had are honoured, within it (no signing time: one
    # signed after the revocation looks the same)
    after = w.voucher(a["id"], shop, 500, 2, 1500)
    done = await redeem(api, shop, before, after)
    assert [x["status"] for x in done["results"]] == ["HONOURED", "HONOURED"]
    over = w.voucher(a["id"], shop, 4000, 3, 5500)
    refused = await redeem(api, shop, over)
    assert refused["results"][0]["code"] == "ALLOWANCE_EXCEEDED"
    # the device may still release it: the rest returns
    signature = w.key.sign(release_message(a["id"], 1500))
    r = await api.http.post(
        f"{OFF}/allowances/{a['id']}/release",
        json={"final_cumulative": 1500, "signature": b64(signature)},
        headers=w.user.headers,
    )
    assert r.status_code == 200 and r.json()["status"] == "RELEASED", r.text
    assert (await api.balance(w.account))["available"] == "85.00"
    assert await api.services.ledger.reconcile() == []


async def test_staff_revoke_any_device_and_a_user_only_their_own(api: Api) -> None:
    asset = await api.asset()
    w = await wallet(api, asset, "1.00")
    stranger, _ = await api.funded_user(asset, "0")
    url = f"{OFF}/devices/{w.device_id}/revoke"
    problem(await api.http.post(url, json={}, headers=stranger.headers), 404, "UNKNOWN_DEVICE")
    ops = await api.caller(Role.OPS)
    r = await api.http.post(url, json={"reason": "fraud report"}, headers=ops.headers)
    assert r.status_code == 200 and r.json()["status"] == "REVOKED", r.text
    problem(
        await api.http.post(f"{OFF}/devices/999999999/revoke", json={}, headers=ops.headers),
        404,
        "UNKNOWN_DEVICE",
    )
