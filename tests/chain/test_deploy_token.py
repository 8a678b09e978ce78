"""``valueos deploy-token`` on a real anvil and a database of its own: deploys the asset's token
once, with the caps given, the minter and pauser granted, and records it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
from eth_account import Account
from web3 import Web3

from chain.evm.artifacts import load_artifact
from chain.evm.settings import anchor_settings
from core.bridges.tokens import get_token
from core.ledger import Ledger
from core.settings import database_settings
from core.types import AssetKind
from jobs.bridge_status import main as status_main
from jobs.deploy_token import main
from tests.conftest import ADMIN

pytestmark = pytest.mark.chain


@pytest.fixture
def env(
    ledger: Ledger, anvil: str, dev_keys: list[str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, str]]:
    """(admin, minter) addresses; the command's settings are re-read around the test."""
    monkeypatch.setenv("ETH_RPC_URL", anvil)
    monkeypatch.setenv("DATABASE_URL", ledger.engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("VALUEOS_ANCHOR_KEY", dev_keys[0])
    monkeypatch.setenv("VALUEOS_BRIDGE_KEY", dev_keys[1])
    anchor_settings.cache_clear()
    database_settings.cache_clear()
    yield Account.from_key(dev_keys[0]).address, Account.from_key(dev_keys[1]).address
    anchor_settings.cache_clear()
    database_settings.cache_clear()


CAPS = ["--per-transfer-cap", "1000.00", "--window-cap", "50000.00", "--window-seconds", "3600"]


async def test_deploys_once_with_its_caps_and_roles(
    env: tuple[str, str], ledger: Ledger, w3: Web3, capsys: pytest.CaptureFixture[str]
) -> None:
    admin, minter = env
    await ledger.accounts.create_asset(
        code="MILESX", name="Miles", scale=2, kind=AssetKind.MILES, actor=ADMIN
    )
    assert await asyncio.to_thread(main, "deploy-token", ["MILESX", *CAPS, "--decimals", "6"]) == 0
    token = await get_token(ledger, "MILESX")
    assert (token.decimals, token.chain_id, token.paused) == (6, w3.eth.chain_id, False)
    contract = w3.eth.contract(address=token.address, abi=load_artifact("BridgeToken").abi)
    assert contract.functions.decimals().call() == 6
    assert contract.functions.symbol().call() == "MILESX"
    assert contract.functions.perTransferCap().call() == 1000_000000  # 1000.00 at 6 decimals
    minter_role = contract.functions.MINTER_ROLE().call()
    pauser_role = contract.functions.PAUSER_ROLE().call()
    assert contract.functions.hasRole(minter_role, minter).call()
    assert contract.functions.hasRole(pauser_role, admin).call()
    assert not contract.functions.hasRole(minter_role, admin).call()

    nonce = w3.eth.get_transaction_count(admin)
    again = await asyncio.to_thread(main, "deploy-token", ["MILESX", *CAPS])
    assert again == 0 and w3.eth.get_transaction_count(admin) == nonce  # nothing deployed

    capsys.readouterr()
    assert await asyncio.to_thread(status_main, "bridge", ["status"]) == 0  # nothing paused
    [listed] = json.loads(capsys.readouterr().out)
    assert (listed["asset"], listed["address"], listed["paused"]) == (
        "MILESX",
        token.address,
        False,
    )


async def test_refuses_without_a_minter_or_an_asset(
    env: tuple[str, str], ledger: Ledger, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    assert await asyncio.to_thread(main, "deploy-token", ["NOSUCH", *CAPS]) == 1
    assert "NOSUCH" in capsys.readouterr().out
    await ledger.accounts.create_asset(
        code="PTSX", name="Points", scale=0, kind=AssetKind.POINTS, actor=ADMIN
    )
    monkeypatch.delenv("VALUEOS_BRIDGE_KEY")
    assert (
        await asyncio.to_thread(
            main, "deploy-token", ["PTSX", *CAPS[:2], "--window-cap", "5", "--window-seconds", "60"]
        )
        == 1
    )
    assert "VALUEOS_BRIDGE_KEY" in capsys.readouterr().out
