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
from sqlalchemy import text

from core.bridges.erc20 import BridgeOutState, bridge_id_of, get_bridge_out
from core.bridges.stellar import StellarBridgeOuts, StellarToken
from core.types import SystemAccount
from tests.conftest import ADMIN, World
from tests.stellar.net import StellarNet
from tests.stellar.test_stellar_in import bridged, linked
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


def in_driver(database_url: str, net: StellarNet, die_after: str | None = None) -> int:
    command = [sys.executable, "-m", "tests.stellar.stellar_in_driver", "--db", database_url,
               "--rpc", net.served.url, "--passphrase", net.passphrase]  # fmt: skip
    if die_after:
        command += ["--die-after", die_after]
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    return subprocess.run(command, env=env, cwd=ROOT, timeout=120, check=False).returncode  # noqa: S603


@pytest.mark.parametrize("point", ["recorded", "credited", "settled"])
async def test_watcher_killed_after_each_step_credits_once(
    database_url: str, world: World, net: StellarNet, token: StellarToken,
    bridge: StellarBridgeOuts, point: str,
) -> None:  # fmt: skip
    """One linked burn and one unlinked: after the kill and a clean run, the linked one is
    credited once, the unlinked one parked once, value conserved."""
    user, account = await funded_user(world)
    kp = await net.user()
    stranger = await net.user()
    await linked(world, user, kp)
    await bridged(world, net, bridge, user, kp, "10.00", f"cin-{point}")
    await net.classic(kp, lambda b: b.append_payment_op(stranger.public_key, net.asset, "4"))
    await net.burn(kp, 3 * 10**7)
    await net.burn(stranger, 1 * 10**7)
    assert in_driver(database_url, net, die_after=point) == -signal.SIGKILL
    assert in_driver(database_url, net) == 0
    suspense = await world.ledger.accounts.system_account(
        world.asset, SystemAccount.SUSPENSE, actor=ADMIN
    )
    got = await world.ledger.queries.balances([account, suspense])
    assert got[account].posted == FUNDED - 10_00 + 3_00, "the linked burn credited once"
    assert got[suspense].posted == 1_00, "the unlinked burn parked once"
    async with world.ledger.engine.connect() as conn:
        ops = (await conn.execute(text(
            "SELECT type, count(*) FROM operations WHERE type IN ('BRIDGE_IN', "
            "'BRIDGE_IN_SUSPENSE') AND metadata -> 'redemption' ->> 'token' = :t GROUP BY type"),
            {"t": token.contract})).all()  # fmt: skip
    assert dict(ops) == {"BRIDGE_IN": 1, "BRIDGE_IN_SUSPENSE": 1}
    assert await world.total() == 0
