"""A wallet pays a POS terminal three times with the network cut, then both sync.

    python examples/offline_pos.py          # an in-process server on DATABASE_URL, or the
                                            # embedded PostgreSQL in .valueos/pgdata
    VALUEOS_URL=http://127.0.0.1:8000 VALUEOS_ADMIN_KEY=vo_... python examples/offline_pos.py
                                            # against a running `make run`

What happens:
1. online: an admin makes an asset, a shopper (the wallet) and a shop (the POS terminal),
   each with an API key, and mints 100.00 to the shopper; the wallet registers its device
   key and reserves a 30.00 offline allowance; the terminal pins the issuer key;
2. the network is cut: the wallet pays 4.50, 12.00 and 7.25, each a signed voucher the
   terminal checks offline (a QR code or NFC payload in real life);
3. the network is back: the terminal redeems the three vouchers, the wallet releases the
   rest of its allowance; final balances are printed.

The client side uses only the SDK (``sdk/valueos_sdk``); the in-process server is there so
the example runs on a fresh checkout without anything else started.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "sdk")]

from valueos_sdk import AsyncClient, SQLiteStore, Terminal, Wallet  # noqa: E402
from valueos_sdk.vouchers import unb64  # noqa: E402


class Network(httpx.AsyncBaseTransport):
    """The client's network, with a switch: cut, every request fails to connect."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.up = True

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not self.up:
            raise httpx.ConnectError("network unreachable", request=request)
        return await self.inner.handle_async_request(request)


@contextlib.asynccontextmanager
async def server() -> AsyncIterator[tuple[httpx.AsyncBaseTransport, str]]:
    """A transport to the API and an admin API key: a running server's, or an in-process one."""
    if os.environ.get("VALUEOS_URL"):
        yield httpx.AsyncHTTPTransport(), os.environ["VALUEOS_ADMIN_KEY"]
        return
    from api.app import create_app  # noqa: PLC0415 - only for the in-process server
    from api.settings import ApiSettings  # noqa: PLC0415
    from core.credentials import Credentials  # noqa: PLC0415
    from core.db import migrate_async, resolve_url  # noqa: PLC0415
    from core.settings import database_settings  # noqa: PLC0415
    from core.types import Actor, Role  # noqa: PLC0415

    database = database_settings()
    await migrate_async(await asyncio.to_thread(resolve_url, database))
    app = create_app(
        ApiSettings(jwt_secret=os.urandom(32).hex(), webhook_secret=None, database=database)
    )
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    task = asyncio.create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, inbox.get, outbox.put)
    )  # type: ignore[arg-type]
    await inbox.put({"type": "lifespan.startup"})
    await outbox.get()
    try:
        creds = Credentials(app.state.services.ledger.engine)
        actor = Actor("offline-pos-example", Role.SYSTEM)
        admin = await creds.create_user(email=None, role=Role.ADMIN, actor=actor)
        _, key = await creds.create_api_key(
            user_id=admin.id, name="example", scopes=("*",), actor=actor
        )
        yield httpx.ASGITransport(app=app), key
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        await outbox.get()
        await task


async def main() -> int:
    base = os.environ.get("VALUEOS_URL", "http://valueos.local")
    async with server() as (transport, admin_key):
        admin = AsyncClient(base, api_key=admin_key, transport=transport)
        asset = "POS" + uuid.uuid4().hex[:6].upper()
        await admin.request(
            "POST",
            "/api/v1/assets",
            json={"code": asset, "name": "example credit", "scale": 2, "kind": "POINTS"},
        )
        keys = {}
        for name in ("shopper", "shop"):
            user = await admin.request("POST", "/api/v1/users", json={"role": "USER"})
            made = await admin.request(
                "POST",
                "/api/v1/api-keys",
                json={"user_id": user["id"], "name": name, "scopes": ["read", "payments"]},
            )
            keys[name] = (uuid.UUID(user["id"]), made["key"])
        await admin.request(
            "POST",
            "/api/v1/credits/mint",
            json={"user_id": str(keys["shopper"][0]), "asset": asset, "amount": "100.00"},
        )

        network = Network(transport)
        shopper = AsyncClient(base, api_key=keys["shopper"][1], transport=network)
        shop = AsyncClient(base, api_key=keys["shop"][1], transport=network)
        shopper_account = (
            next(w for w in await shopper.wallets(keys["shopper"][0]) if w.asset == asset)
            .compartments[0]
            .account_id
        )
        with tempfile.TemporaryDirectory() as tmp:
            wallet = Wallet(shopper, SQLiteStore(Path(tmp) / "wallet.db"))
            allowance = await wallet.reserve(shopper_account, "30.00")
            print(
                f"online : allowance {allowance.id} reserves {allowance.amount} {asset} "
                f"until {allowance.expires_at:%Y-%m-%d %H:%M} UTC"
            )
            issuer = unb64((await shop.issuer()).public_key)
            pos = Terminal(
                shop, SQLiteStore(Path(tmp) / "pos.db"), payee_id=keys["shop"][0], issuer_key=issuer
            )

            network.up = False
            print("offline: the network is cut")
            for amount in ("4.50", "12.00", "7.25"):
                payment = wallet.pay(keys["shop"][0], amount)
                accepted = pos.accept(payment)
                print(
                    f"offline: paid {amount:>6} -> voucher #{accepted.counter} accepted by the "
                    f"terminal ({len(payment)}-character QR payload)"
                )
            waiting = await pos.sync()
            print(
                f"offline: terminal sync: {sum(a.status == 'ACCEPTED' for a in waiting)} "
                "vouchers still queued"
            )

            network.up = True
            print("online : the network is back")
            for a in await pos.sync():
                amount = f"{a.amount // 10**a.scale}.{a.amount % 10**a.scale:0{a.scale}d}"
                print(
                    f"online : voucher #{a.counter} {amount:>6} {a.status} {a.code or ''}".rstrip()
                )
            released = await wallet.release()
            print(f"online : allowance {released.id} {released.status}: the unspent rest returns")

            print("final balances:")
            for name, client in (("shopper", shopper), ("shop", shop)):
                wallet_read = next(
                    w for w in await client.wallets(keys[name][0]) if w.asset == asset
                )
                available = wallet_read.compartments[0]
                print(
                    f"  {name:8} posted {available.posted:>7} pending {available.pending:>5} "
                    f"available {available.available:>7} {asset}"
                )
        for c in (admin, shopper, shop):
            await c.aclose()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
