"""``valueos verify`` against a lying operator: the auditor pins chain, contract and ledger id.

* a stranger deploys LedgerAnchor with the victim's ledger id and anchors a forged epoch (a
  fake +1,000,000.00 entry): its bundle is consistent, but ``--rpc`` with the pinned trust
  refuses it -- whether it names the stranger's contract or claims the pinned one;
* an honest bundle whose anchor metadata (block number, block hash, status, transaction) was
  flipped is refused by ``--rpc``;
* ``valueos trust export`` writes the pinned trust after checking the contract's ledger id.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.contract import Contract

from chain.evm.anchor import AnchorClient
from chain.evm.client import connect
from chain.evm.settings import anchor_settings
from chain.evm.trust import Trust
from chain.evm.verify import main as verify_main
from core.ledger import Ledger
from core.proofs import entry_proof_bundle
from core.settings import epoch_settings
from jobs.anchor import AnchorJob
from jobs.trust import main as trust_main
from merkle.leaves import EntryLeaf, balance_tree, entry_tree
from merkle.tree import EMPTY_ROOT
from tests.chain.conftest import Deploy, await_automine, rpc
from tests.conftest import make_world

pytestmark = pytest.mark.chain


@pytest.fixture
async def job(
    ledger: Ledger, anvil: str, ledger_anchor: Contract, dev_keys: list[str], ledger_id: bytes
) -> Any:
    signer: LocalAccount = Account.from_key(dev_keys[0])
    client = AnchorClient(await_automine(connect(anvil)), ledger_anchor.address, signer)
    yield AnchorJob(ledger.engine, client, ledger_id, confirmations=2)
    await client.w3.provider.disconnect()


@pytest.fixture
def trust_file(tmp_path: Path, w3: Web3, ledger_anchor: Contract, ledger_id: bytes) -> Path:
    path = tmp_path / "trust.json"
    trust = Trust(w3.eth.chain_id, ledger_anchor.address, ledger_id, confirmations=2)
    path.write_text(json.dumps(trust.to_json()))
    return path


async def honest_bundle(ledger: Ledger, job: AnchorJob, w3: Web3) -> dict[str, Any]:
    world = await make_world(ledger)
    a, b = await world.funded(1000), await world.funded(1000)
    op = await ledger.transfer(source=a, destination=b, asset=world.asset, amount=7)
    await job.run_once()
    rpc(w3, "anvil_mine", 2)
    await job.anchor_pass()
    bundle = await entry_proof_bundle(ledger, op.entries[0].seq)
    assert bundle["anchor"]["status"] == "FINALIZED"
    return bundle


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data))


def read_text(path: Path) -> str:
    return path.read_text()


def run_verify(tmp_path: Path, bundle: dict[str, Any], *args: str) -> int:
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(bundle))
    return verify_main("verify", [str(path), *args])


async def test_honest_bundle_verifies_against_the_pinned_trust(
    ledger: Ledger, job: AnchorJob, w3: Web3, anvil: str, trust_file: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    bundle = await honest_bundle(ledger, job, w3)
    assert run_verify(tmp_path, bundle, "--trust", str(trust_file), "--rpc", anvil) == 0
    out = capsys.readouterr().out
    assert "CONSISTENT: entry leaf is consistent with the entries root" in out
    assert "PINNED: ledger id" in out
    assert "VALID: epoch 1 is anchored with this header on the pinned contract" in out
    assert "NOT CHECKED" not in out


def forged_epoch(ledger_id: bytes) -> tuple[list[EntryLeaf], Any, Any, list[Any]]:
    """A made-up epoch 1 whose second entry credits account 2 with +1,000,000.00."""
    entries = [
        EntryLeaf(ledger_id, 1, 1, 1, 1, "USD", -100_000_000, -100_000_000),
        EntryLeaf(ledger_id, 1, 2, 1, 2, "USD", 100_000_000, 100_000_000),
    ]
    e_tree = entry_tree(entries)
    b_tree = balance_tree([])
    args = [1, EMPTY_ROOT, e_tree.root, b_tree.root, 1, 2, 2]
    return entries, e_tree, b_tree, args


async def test_a_strangers_contract_with_the_victims_ledger_id_is_refused(
    w3: Web3, deploy: Deploy, accounts: list[str], ledger_id: bytes, ledger_anchor: Contract,
    anvil: str, trust_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    stranger = accounts[2]
    fake = deploy("LedgerAnchor", ledger_id, stranger, 0, bytes(32), sender=stranger)
    entries, e_tree, _, args = forged_epoch(ledger_id)
    tx_hash = fake.functions.anchor(*args).transact({"from": stranger})
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash)
    rpc(w3, "anvil_mine", 3)
    header = bytes(fake.functions.headerOf(1).call())
    leaf = entries[1]
    bundle = {
        "version": 1, "kind": "entry",
        "leaf": {"kind": 1, "ledger_id": "0x" + ledger_id.hex(), "epoch": 1, "seq": 2,
                 "operation_id": 1, "account_id": 2, "asset_code": "USD",
                 "amount": str(leaf.amount), "balance_after": str(leaf.balance_after)},
        "leaf_hash": "0x" + leaf.hash().hex(),
        "proof": ["0x" + p.hex() for p in e_tree.proof(1)],
        "header": {"ledger_id": "0x" + ledger_id.hex(), "epoch": 1,
                   "prev_header": "0x" + EMPTY_ROOT.hex(), "entries_root": "0x" + args[2].hex(),
                   "balances_root": "0x" + args[3].hex(), "first_seq": 1, "last_seq": 2,
                   "leaf_count": 2, "header_hash": "0x" + header.hex()},
        "anchor": {"status": "FINALIZED", "chain_id": w3.eth.chain_id,
                   "contract_address": fake.address, "tx_hash": "0x" + bytes(tx_hash).hex(),
                   "block_number": receipt["blockNumber"],
                   "block_hash": "0x" + bytes(receipt["blockHash"]).hex()},
    }  # fmt: skip
    # what fooled the unpinned verifier: consistent, and on chain at the contract it names
    stranger_trust = tmp_path / "stranger-trust.json"
    stranger_trust.write_text(
        json.dumps(Trust(w3.eth.chain_id, fake.address, ledger_id, 2).to_json())
    )
    assert run_verify(tmp_path, bundle, "--trust", str(stranger_trust), "--rpc", anvil) == 0
    capsys.readouterr()
    # pinned to the victim's contract: refused before any call to the stranger's
    assert run_verify(tmp_path, bundle, "--trust", str(trust_file), "--rpc", anvil) == 1
    assert f"the bundle names contract {fake.address}, the pinned contract is" in (
        capsys.readouterr().err
    )
    # the operator's variant: the same forged root claimed on the pinned contract
    claimed = copy.deepcopy(bundle)
    claimed["anchor"]["contract_address"] = ledger_anchor.address
    assert run_verify(tmp_path, claimed, "--trust", str(trust_file), "--rpc", anvil) == 1
    assert "INVALID: epoch 1 is not anchored on the pinned contract" in capsys.readouterr().err
    # and offline, the forged bundle is only ever "consistent", never VALID
    assert run_verify(tmp_path, claimed, "--trust", str(trust_file)) == 0
    out = capsys.readouterr().out
    assert "VALID" not in out and "NOT CHECKED: the root against the chain" in out


Flip = Callable[[dict[str, Any]], None]
FLIPS: dict[str, tuple[Flip, str]] = {
    "block_number": (
        lambda a: a.update(block_number=a["block_number"] + 1),
        "the anchor transaction is in block",
    ),
    "block_hash": (
        lambda a: a.update(block_hash="0x" + "77" * 32),
        "the anchor transaction's block hash differs from the bundle's",
    ),
    "status not anchored": (
        lambda a: a.update(status="SEALED"),
        "the bundle's anchor status 'SEALED' is not an anchored one",
    ),
    "status final too early": (
        lambda a: a.update(status="FINALIZED"),
        "the bundle says FINALIZED but the anchor is",
    ),
    "tx_hash": (
        lambda a: a.update(tx_hash="0x" + "66" * 32),
        "is not on this chain",
    ),
    "chain_id": (lambda a: a.update(chain_id=1), "the bundle names chain 1"),
}


@pytest.mark.parametrize("field", sorted(FLIPS))
async def test_flipped_anchor_metadata_is_refused(
    field: str, ledger: Ledger, job: AnchorJob, w3: Web3, anvil: str, trust_file: Path,
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    bundle = await honest_bundle(ledger, job, w3)
    flip, message = FLIPS[field]
    if field == "status final too early":  # an anchor 1 block deep, pinned finality 10
        write_json(trust_file, json.loads(read_text(trust_file)) | {"confirmations": 10})
    else:
        assert run_verify(tmp_path, bundle, "--trust", str(trust_file), "--rpc", anvil) == 0
    flip(bundle["anchor"])
    assert run_verify(tmp_path, bundle, "--trust", str(trust_file), "--rpc", anvil) == 1
    assert message in capsys.readouterr().err


def test_trust_export_checks_the_contract_ledger_id(
    w3: Web3, anvil: str, ledger_anchor: Contract, ledger_id: bytes, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    request: pytest.FixtureRequest,
) -> None:  # fmt: skip
    monkeypatch.setenv("ETH_RPC_URL", anvil)
    monkeypatch.setenv("VALUEOS_ANCHOR_CONTRACT", ledger_anchor.address)
    monkeypatch.setenv("VALUEOS_LEDGER_ID", "0x" + ledger_id.hex())
    monkeypatch.setenv("VALUEOS_ANCHOR_CONFIRMATIONS", "5")
    for cached in (epoch_settings, anchor_settings):  # settings are read once per process
        cached.cache_clear()
        request.addfinalizer(cached.cache_clear)
    out = tmp_path / "trust.json"
    assert trust_main("trust", ["export", "--out", str(out)]) == 0
    assert json.loads(out.read_text()) == {
        "version": 1, "chain_id": w3.eth.chain_id, "anchor_contract": ledger_anchor.address,
        "ledger_id": "0x" + ledger_id.hex(), "confirmations": 5,
    }  # fmt: skip
    monkeypatch.setenv("VALUEOS_LEDGER_ID", "0x" + "99" * 32)
    epoch_settings.cache_clear()
    assert trust_main("trust", ["export"]) == 1
    assert f"contract {ledger_anchor.address} anchors ledger 0x{ledger_id.hex()}" in (
        capsys.readouterr().out
    )
