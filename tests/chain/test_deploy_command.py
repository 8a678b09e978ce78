"""``valueos deploy-anchor`` on a real anvil: deploys once, the worker's settings find it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_account import Account
from web3 import Web3

from chain.evm.artifacts import load_artifact
from chain.evm.settings import AnchorSettings, anchor_settings
from core.settings import epoch_settings
from jobs.deploy import main

pytestmark = pytest.mark.chain


@pytest.fixture
def env(anvil: str, dev_keys: list[str], monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The deploy command's environment; the cached settings are re-read around the test."""
    monkeypatch.setenv("ETH_RPC_URL", anvil)
    monkeypatch.setenv("VALUEOS_ANCHOR_KEY", dev_keys[0])
    monkeypatch.delenv("VALUEOS_ANCHOR_CONTRACT", raising=False)
    anchor_settings.cache_clear()
    yield Account.from_key(dev_keys[0]).address
    anchor_settings.cache_clear()


def test_deploys_once_and_the_worker_reads_the_address_file(
    env: str, w3: Web3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "anchor-contract"
    assert main("deploy-anchor", ["--out", str(out)]) == 0
    address = out.read_text().strip()
    assert w3.eth.get_code(Web3.to_checksum_address(address))
    contract = w3.eth.contract(address=address, abi=load_artifact("LedgerAnchor").abi)
    assert contract.functions.ledgerId().call() == epoch_settings().ledger_id

    nonce = w3.eth.get_transaction_count(env)
    assert main("deploy-anchor", ["--out", str(out)]) == 0  # a restart of the deploy step
    assert w3.eth.get_transaction_count(env) == nonce, "nothing deployed again"
    assert out.read_text().strip() == address

    monkeypatch.setenv("VALUEOS_ANCHOR_CONTRACT_FILE", str(out))
    assert AnchorSettings.from_env().contract_address == address


def test_refuses_without_a_signer(
    env: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("VALUEOS_ANCHOR_KEY")
    anchor_settings.cache_clear()
    assert main("deploy-anchor", []) == 1
    assert "no anchor signer" in capsys.readouterr().out
