"""The SDK's queue killed (SIGKILL, a real client process) while queueing and mid-sync against
a real ``valueos serve``: after the restarts every queued transfer happened exactly once, and
none was lost."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from core.credentials import Credentials
from core.ledger import Ledger
from core.reconcile import reconcile
from core.types import AccountKind, OperationType, Role
from tests.conftest import make_world, settings_for
from tests.e2e.test_serve_killed import ACTOR, Server, db_url  # noqa: F401 - the fixture
from valueos_sdk import ApiError, Client, SQLiteStore
from valueos_sdk.store import DONE, PENDING

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
COUNT = 8
ROOT = Path(__file__).resolve().parents[2]


async def run_client(env: dict[str, str], *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.e2e.sdk_sync_driver", *args,
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


async def test_a_client_killed_while_queueing_and_mid_sync_loses_and_duplicates_nothing(
    db_url: str,  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    ledger = Ledger.connect(settings_for(db_url))
    server = Server(db_url, tmp_path)
    try:
        world = await make_world(ledger)
        creds = Credentials(ledger.engine)
        alice = await creds.create_user(email=None, role=Role.USER, actor=ACTOR)
        bob = await creds.create_user(email=None, role=Role.USER, actor=ACTOR)
        _, api_key = await creds.create_api_key(
            user_id=alice.id, name="sdk", scopes=("*",), actor=ACTOR
        )
        source = (await ledger.accounts.ensure_wallet(alice.id, world.asset, actor=ACTOR))[
            AccountKind.AVAILABLE
        ]
        target = (await ledger.accounts.ensure_wallet(bob.id, world.asset, actor=ACTOR))[
            AccountKind.AVAILABLE
        ]
        await ledger.transfer(
            source=world.issuance,
            destination=source,
            asset=world.asset,
            amount=100 * COUNT,
            type_=OperationType.MINT,
        )
        await server.start()
        store_path = tmp_path / "client.db"
        env = dict(os.environ) | {
            "SDK_TEST_KEY": api_key,
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "sdk")]),
        }
        common = ["--url", server.url, "--store", str(store_path), "--to", str(bob.id),
                  "--from", str(source), "--count", str(COUNT), "--tag", uuid.uuid4().hex[:8]]  # fmt: skip

        # 1. killed while queueing: what was appended stays, the rest was never queued
        code, out = await run_client(env, *common, "--die-after-append", "3")
        assert code == -signal.SIGKILL, out
        store = SQLiteStore(store_path)
        assert [r.state for r in store.records()] == [PENDING] * 3
        store.close()

        # 2. killed after the server answered the 2nd request, before the answer was recorded
        code, out = await run_client(env, *common, "--die-after-response", "2")
        assert code == -signal.SIGKILL, out
        store = SQLiteStore(store_path)
        assert [r.state for r in store.records()] == [DONE, PENDING, PENDING]
        store.close()
        assert (await ledger.queries.balance(target)).posted == 200, (
            "the 2nd was done on the server"
        )

        # 3. the restarted client re-sends the 2nd under its key (replayed), then the 3rd
        code, out = await run_client(env, *common)
        assert code == 0 and "synced" in out, out
        store = SQLiteStore(store_path)
        records = store.records()
        store.close()
        assert [r.state for r in records] == [DONE] * 3
        assert len({r.response["id"] for r in records}) == 3
        assert (await ledger.queries.balance(target)).posted == 300, "each queued transfer once"
        assert await reconcile(ledger.engine) == []

        # the blocking facade against the same server: reads, pages, a typed refusal
        def blocking() -> tuple[int, str]:
            with Client(server.url, api_key=api_key, use_tokens=True) as vo:
                assert vo.me().user_id == alice.id
                seqs = [e.seq for e in vo.iter_entries(source, limit=2)]
                try:
                    vo.transfer(source, bob.id, "1000.00")
                except ApiError as refused:
                    return len(seqs), refused.code
                return len(seqs), ""

        assert await asyncio.to_thread(blocking) == (4, "INSUFFICIENT_FUNDS")
    finally:
        server.stop()
        await ledger.close()
