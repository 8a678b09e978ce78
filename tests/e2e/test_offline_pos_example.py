"""``examples/offline_pos.py`` runs as a newcomer would run it (its own process, a fresh
database) and prints the balances the three offline payments leave."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import create_database, drop_database

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


async def test_the_offline_pos_example_runs_and_prints_the_final_balances() -> None:
    url = await create_database(migrated=False)
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(ROOT / "examples" / "offline_pos.py"),
            env=dict(os.environ, DATABASE_URL=url), cwd=ROOT,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        out = (await proc.communicate())[0].decode()
    finally:
        await drop_database(url)
    assert proc.returncode == 0, out
    assert out.count("accepted by the terminal") == 3
    assert "3 vouchers still queued" in out
    assert [
        line.split()[-1] for line in out.splitlines() if line.startswith("online : voucher")
    ] == ["HONOURED"] * 3
    final = out.split("final balances:")[1].split()
    assert (
        final[final.index("shopper") + 2] == "76.25" and final[final.index("shop") + 2] == "23.75"
    )
