"""A real worker process SIGKILLed after each step of a Stellar bridge-out (subprocess driver
``tests/stellar/stellar_driver.py``, the stand-in a test double in this process), then run
again: exactly one mint on the network, one settlement, value conserved."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from core.bridges.erc20 import BridgeOutState, bridge_id_of, get_bridge_out
from core.bridges.stellar import StellarToken
from tests.conftest import World
from tests.stellar.net import StellarNet
from tests.stellar.test_stellar_out import FUNDED, balances, funded_user

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
POINTS = ["debited", "signed", "sent", "broadcast", "finalized"]


def driver(
    database_url: str,
    net: StellarNet,
    asset: str,
    key: str,
    to: str,
    *,
    user: str | None = None,
    die_after: str | None = None,
) -> int:
    env = os.environ | {
        "PYTHONPATH": str(ROOT),
        "STELLAR_TEST_ADMIN": net.issuer.secret,
        "STELLAR_TEST_CHANNELS": ",".join(k.secret for k in net.channels),
    }
    command = [sys.executable, "-m", "tests.stellar.stellar_driver", "--db", database_url,
               "--rpc", net.served.url, "--passphrase", net.passphrase, "--asset", asset,
               "--key", key, "--to", to]  # fmt: skip
    if user:
        command += ["--user", user]
    if die_after:
        command += ["--die-after", die_after]
    return subprocess.run(command, env=env, cwd=ROOT, timeout=120, check=False).returncode  # noqa: S603


@pytest.mark.parametrize("point", POINTS)
async def test_killed_after_each_step_mints_once(
    database_url: str, world: World, net: StellarNet, token: StellarToken, point: str
) -> None:
    user, account = await funded_user(world)
    dest = (await net.user()).public_key
    key = f"crash-{point}"
    code = driver(database_url, net, world.asset, key, dest, user=str(user), die_after=point)
    assert code == -signal.SIGKILL
    assert driver(database_url, net, world.asset, key, dest) == 0
    view = await get_bridge_out(world.ledger, bridge_id_of(key).hex(), user=None)
    assert view.state is BridgeOutState.MINTED
    assert net.standin.balance(net.contract, dest) == 123_400_000, "exactly one mint"
    mints = [e for e in net.standin.events if e.topics[0] == "AAAADwAAAARtaW50"]
    assert len(mints) == 1
    assert await balances(world, account) == (FUNDED - 12_34, 0, 12_34)
    assert await world.total() == 0
