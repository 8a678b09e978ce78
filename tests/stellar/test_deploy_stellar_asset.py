"""``valueos deploy-stellar-asset``: the issuer's flags and the SAC made by real transactions
(against the stand-in, a test double closing ledgers on a clock), the SAC recorded once."""

from __future__ import annotations

import argparse

import pytest
from stellar_sdk import Keypair

from chain.stellar.settings import stellar_settings
from chain.stellar.standin import StandIn, serve_in_thread
from core.bridges.stellar import get_stellar_token
from core.ledger import Ledger
from jobs.deploy_stellar_asset import _deploy
from tests.conftest import make_world

pytestmark = pytest.mark.integration


async def test_deploys_flags_and_sac_once(
    ledger: Ledger, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = await make_world(ledger)
    standin = StandIn("deploy test network ; a test double")
    served = serve_in_thread(standin, ledger_interval_s=0.3)
    issuer = Keypair.random()
    standin.fund(issuer.public_key)
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("STELLAR_RPC_URL", served.url)
    monkeypatch.setenv("STELLAR_NETWORK_PASSPHRASE", standin.passphrase)
    monkeypatch.setenv("STELLAR_ISSUER_SECRET", issuer.secret)
    stellar_settings.cache_clear()
    try:
        contract, deployed = await _deploy(argparse.Namespace(asset=world.asset, code=None))
        assert deployed and contract in standin.contracts
        assert standin.accounts[issuer.public_key].flags == 2 | 8  # REVOCABLE | CLAWBACK
        token = await get_stellar_token(ledger, world.asset)
        assert (token.contract, token.code, token.issuer) == (
            contract,
            world.asset,
            issuer.public_key,
        )
        again = await _deploy(argparse.Namespace(asset=world.asset, code=None))
        assert again == (contract, False)
    finally:
        stellar_settings.cache_clear()
        served.stop()
