"""An anchored history bundle (an account's entries between two epochs, with its balance
proofs at both ends) verifies with ``--rpc`` against the pinned contract: both ends are
anchored and the contract's own ``verifyBalance`` accepts the new BALANCE leaf (entry count
and entries hash); a history missing an entry is refused even though its ends are valid."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from web3 import Web3

from core.ledger import Ledger
from core.proofs import history_bundle
from jobs.anchor import AnchorJob
from tests.chain.conftest import rpc
from tests.chain.test_pinned_trust import job, run_verify, trust_file  # noqa: F401 - fixtures
from tests.conftest import make_world

pytestmark = pytest.mark.chain


async def test_an_anchored_history_verifies_on_chain_and_an_omission_does_not(
    ledger: Ledger, job: AnchorJob, w3: Web3, anvil: str, trust_file: Path, tmp_path: Path,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    world = await make_world(ledger)
    a, b = await world.funded(1000), await world.funded(1000)
    for _ in range(2):
        for amount in (3, 4):
            await ledger.transfer(source=a, destination=b, asset=world.asset, amount=amount)
        await job.run_once()
        rpc(w3, "anvil_mine", 2)
        await job.anchor_pass()
    bundle = await history_bundle(ledger, a, 1, 2)
    assert bundle["to"]["anchor"]["status"] == bundle["from"]["anchor"]["status"] == "FINALIZED"
    args = ("--trust", str(trust_file), "--rpc", anvil)
    assert run_verify(tmp_path, bundle, *args) == 0
    out = capsys.readouterr().out
    assert "COMPLETE: the 2 entries of account" in out
    assert "VALID: from: epoch 1 is anchored" in out
    assert "VALID: to: epoch 2 is anchored" in out
    assert "the contract accepts the proof" in out
    assert "NOT CHECKED" not in out

    forged = copy.deepcopy(bundle)
    forged["entries"].pop()
    assert run_verify(tmp_path, forged, *args) == 1
    assert "an entry is missing or added" in capsys.readouterr().err
