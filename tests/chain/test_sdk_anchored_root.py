"""The SDK reads the anchored header and roots straight from the anchor contract (plain
JSON-RPC, no web3) for a pinned ledger identity, and refuses another chain, contract or
ledger, a header the chain does not hold, and an epoch not anchored."""

from __future__ import annotations

import dataclasses

import pytest
from web3 import Web3
from web3.contract import Contract

from core.ledger import Ledger
from core.proofs import entry_proof_bundle
from jobs.anchor import AnchorJob
from tests.chain.conftest import rpc
from tests.chain.test_anchoring import _close_clients, activity, job, signer  # noqa: F401 - fixtures
from valueos_sdk.errors import MirrorMismatch
from valueos_sdk.proofs import LedgerIdentity, anchored, check_anchored

pytestmark = pytest.mark.chain


async def test_the_sdk_checks_a_bundle_header_against_the_anchor_contract(
    ledger: Ledger, job: AnchorJob, w3: Web3, ledger_anchor: Contract, anvil: str,  # noqa: F811
    ledger_id: bytes,
) -> None:  # fmt: skip
    seqs = await activity(ledger)
    await job.run_once()
    rpc(w3, "anvil_mine", 1)
    await job.anchor_pass()
    bundle = await entry_proof_bundle(ledger, seqs[0])
    header = bundle["header"]
    pinned = LedgerIdentity(w3.eth.chain_id, ledger_anchor.address, ledger_id)

    stored = await anchored(anvil, pinned, 1)  # the contract keeps the header hash only
    assert stored == bytes.fromhex(header["header_hash"][2:])
    await check_anchored(header, anvil, pinned)

    for wrong, reason in (
        (dataclasses.replace(pinned, chain_id=1), "chain"),
        (dataclasses.replace(pinned, ledger_id=b"\x01" * 32), "another ledger"),
    ):
        with pytest.raises(MirrorMismatch, match=reason):
            await check_anchored(header, anvil, wrong)
    with pytest.raises(MirrorMismatch, match="another header"):
        await check_anchored(header | {"entries_root": "0x" + "44" * 32}, anvil, pinned)
    with pytest.raises(MirrorMismatch, match="not anchored"):
        await anchored(anvil, pinned, 2)
