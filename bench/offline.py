"""Voucher redemption: N vouchers redeemed in batches (``POST /offline/redemptions`` with up
to 100 vouchers) next to the same number redeemed one per request, in the same run, each
against an allowance of its own, on a fresh database, through the real application (httpx's
ASGI transport: no sockets, so the figure is the server's work per voucher).

    python -m bench.offline [--vouchers N] [--batch B]

A reference line: the same number of plain transfers, one per request, on the same app.

Uses DATABASE_URL when set, else an embedded PostgreSQL. Prints one line per mode and the
ratio; the last line is a JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import time
from dataclasses import replace

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from core.offline.vouchers import Voucher, device_message
from core.types import Role
from tests.e2e.conftest import Api, Caller, make_settings, running
from tests.support import create_database, drop_database


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


async def allowance(api: Api, asset: str, units: int) -> tuple[int, Ed25519PrivateKey]:
    user, account = await api.funded_user(asset, f"{units // 100}.{units % 100:02d}")
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    body = {
        "public_key": b64(public),
        "proof": b64(key.sign(device_message(user.user_id, public))),
        "name": "bench",
    }
    device = (
        await api.http.post("/api/v1/offline/devices", json=body, headers=user.headers)
    ).json()
    body = {
        "from_account_id": account,
        "device_id": device["id"],
        "amount": f"{units // 100}.{units % 100:02d}",
    }
    r = await api.http.post("/api/v1/offline/allowances", json=body, headers=user.headers)
    if r.status_code != 201:
        raise RuntimeError(r.text)
    return r.json()["id"], key


def vouchers(allowance_id: int, key: Ed25519PrivateKey, payee: Caller, n: int) -> list[str]:
    out = []
    for counter in range(1, n + 1):
        v = Voucher(allowance_id, payee.user_id, 1, counter, counter)
        out.append(replace(v, signature=key.sign(v.message())).encode())
    return out


async def redeem(api: Api, payee: Caller, items: list[str], batch: int) -> float:
    start = time.perf_counter()
    for i in range(0, len(items), batch):
        r = await api.http.post(
            "/api/v1/offline/redemptions",
            json={"vouchers": items[i : i + batch]},
            headers=payee.headers,
        )
        if r.status_code != 200 or r.json()["honoured"] != len(items[i : i + batch]):
            raise RuntimeError(r.text)
    return time.perf_counter() - start


async def main(n: int, batch: int) -> dict[str, float]:
    from api.app import create_app  # noqa: PLC0415

    url = await create_database()
    try:
        app = create_app(make_settings(url))
        async with running(app) as http:
            from api.auth import Principal, issue_token  # noqa: PLC0415
            from core.credentials import Credentials  # noqa: PLC0415
            from tests.e2e.conftest import BOOTSTRAP  # noqa: PLC0415

            admin = await Credentials(app.state.services.ledger.engine).create_user(
                email=None, role=Role.ADMIN, actor=BOOTSTRAP
            )
            token = issue_token(
                app.state.jwt_auth,
                Principal(admin.id, Role.ADMIN, frozenset({"*"}), f"u:{admin.id}"),
            )
            api = Api(app, http, Caller(admin.id, Role.ADMIN, {"Authorization": f"Bearer {token}"}))
            asset = await api.asset()
            payee, _ = await api.funded_user(asset, "0")
            results = {}
            for mode, size in (("one per request", 1), (f"batches of {batch}", batch)):
                allowance_id, key = await allowance(api, asset, n)
                items = vouchers(allowance_id, key, payee, n)
                seconds = await redeem(api, payee, items, size)
                results[mode] = n / seconds
                print(
                    f"{mode:>18}: {n} vouchers in {seconds:6.2f} s = {n / seconds:7.1f} vouchers/s"
                )
            # reference: plain transfers, one per request, on the same app and database
            payer, account = await api.funded_user(asset, f"{n}.00")
            start = time.perf_counter()
            for _ in range(n):
                r = await api.http.post(
                    "/api/v1/credits/transfer",
                    json={"from_account_id": account, "to_user_id": str(payee.user_id),
                          "amount": "1.00"},
                    headers=payer.headers,
                )  # fmt: skip
                if r.status_code != 201:
                    raise RuntimeError(r.text)
            seconds = time.perf_counter() - start
            results["transfers"] = n / seconds
            print(
                f"{'transfers (ref.)':>18}: {n} transfers in {seconds:6.2f} s = "
                f"{n / seconds:7.1f} /s"
            )
            one, batched = results["one per request"], results[f"batches of {batch}"]
            print(f"batched / one per request: {batched / one:.2f}x")
            return {
                "vouchers": n,
                "one_per_request_per_s": round(one, 1),
                "batched_per_s": round(batched, 1),
                "ratio": round(batched / one, 2),
                "transfers_per_s": round(results["transfers"], 1),
            }
    finally:
        await drop_database(url)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vouchers", type=int, default=500)
    parser.add_argument("--batch", type=int, default=100)
    ns = parser.parse_args()
    print(json.dumps(asyncio.run(main(ns.vouchers, ns.batch))))
