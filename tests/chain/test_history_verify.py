"""An anchored history bundle (an account's entries between two epochs, with its balance
proofs at both ends) verifies with ``--rpc`` against the pinned contract: both ends are
anchored and the contract's own ``verifyBalance`` accepts the new BALANCE leaf (entry count
and entries hash); a history missing an entry is refused even though its ends are valid.
The SDK's ``verified_history`` checks the same history against the pinned contract, in
pieces when it is longer than the server's limit."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from web3 import Web3
from web3.contract import Contract

from core import proofs
from core.errors import LedgerError
from core.ledger import Ledger
from core.proofs import history_bundle
from jobs.anchor import AnchorJob
from merkle.leaves import header_hash
from tests.chain.conftest import rpc
from tests.chain.test_pinned_trust import job, run_verify, trust_file  # noqa: F401 - fixtures
from tests.conftest import make_world
from valueos_sdk.errors import MirrorMismatch, from_problem
from valueos_sdk.models import HistoryBundleRead
from valueos_sdk.proofs import LedgerIdentity, verified_history

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


class _Server:
    """The history route's answers straight from core (what ``verified_history`` asks its
    client for), optionally rewritten by ``forge``."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.forge: Callable[[dict[str, Any]], None] | None = None

    async def history_proof(
        self, account_id: int, *, to_epoch: int, from_epoch: int = 0
    ) -> HistoryBundleRead:
        try:
            bundle = await history_bundle(self.ledger, account_id, from_epoch, to_epoch)
        except LedgerError as exc:  # as the API would answer it
            raise from_problem(exc.status, {"code": exc.code, "detail": exc.message}) from exc
        if self.forge is not None:
            self.forge(bundle)
        return msgspec.convert(bundle, HistoryBundleRead)


async def test_the_sdk_checks_a_history_against_the_pinned_contract(
    ledger: Ledger, job: AnchorJob, w3: Web3, anvil: str, ledger_anchor: Contract,  # noqa: F811
    ledger_id: bytes, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    world = await make_world(ledger)
    a, b = await world.funded(1000), await world.funded(1000)
    for amount in (3, 4, 5):
        await ledger.transfer(source=a, destination=b, asset=world.asset, amount=amount)
        await job.run_once()
        rpc(w3, "anvil_mine", 2)
        await job.anchor_pass()
    pinned = LedgerIdentity(w3.eth.chain_id, ledger_anchor.address, ledger_id)
    server = _Server(ledger)
    client: Any = server  # duck-typed: only history_proof is asked for
    whole = await verified_history(client, a, to_epoch=3, identity=pinned, rpc_url=anvil)
    assert [e[2] for e in whole.entries] == [1000, -3, -4, -5]
    monkeypatch.setattr(proofs, "MAX_HISTORY", 2)  # pieces 0..1 and 1..3
    pieces = await verified_history(client, a, to_epoch=3, identity=pinned, rpc_url=anvil)
    assert pieces == whole
    with pytest.raises(MirrorMismatch, match="the node is chain"):
        await verified_history(
            client, a, to_epoch=3, identity=dataclasses.replace(pinned, chain_id=1),
            rpc_url=anvil,
        )  # fmt: skip

    def unanchored(bundle: dict[str, Any]) -> None:
        """A consistent end on a made-up header: its balances root is the leaf itself."""
        to = bundle["to"]
        to["proof"] = []
        to["header"]["balances_root"] = to["leaf_hash"]
        h = to["header"]
        h["header_hash"] = "0x" + header_hash(
            bytes.fromhex(h["ledger_id"][2:]), h["epoch"], bytes.fromhex(h["prev_header"][2:]),
            bytes.fromhex(h["entries_root"][2:]), bytes.fromhex(h["balances_root"][2:]),
            h["first_seq"], h["last_seq"], h["leaf_count"],
        ).hex()  # fmt: skip

    server.forge = unanchored
    monkeypatch.setattr(proofs, "MAX_HISTORY", 10_000)
    await verified_history(client, a, to_epoch=3, identity=pinned)  # offline: consistent
    with pytest.raises(MirrorMismatch, match="the chain holds another header"):
        await verified_history(client, a, to_epoch=3, identity=pinned, rpc_url=anvil)
