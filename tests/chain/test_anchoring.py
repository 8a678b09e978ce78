"""The anchor job on a real anvil and a real PostgreSQL: happy path, crashes, reorgs, conflicts.

A "crash" is the job stopped between two persisted steps (only the steps up to there ran);
"restart" is a brand-new job and client built from the database and the chain alone.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_account.typed_transactions.typed_transaction import TypedTransaction
from hexbytes import HexBytes
from prometheus_client import REGISTRY
from web3 import Web3
from web3.contract import Contract

from bench.anchor_gas import baseline_artifact
from chain.evm.anchor import AnchorClient, AnchorConflict, chain_head
from chain.evm.client import ChainError, InsufficientFunds, connect
from chain.evm.settings import anchor_settings
from chain.evm.trust import Trust
from chain.evm.verify import main as verify_main
from core import integrity
from core.anchors import get_anchor
from core.epochs import get_roots, raw_connection, seal_open_epoch
from core.ledger import Ledger
from core.proofs import balance_proof_bundle, entry_proof_bundle, list_anchors
from core.settings import database_settings, epoch_settings
from jobs.anchor import AnchorConfigMismatch, AnchorJob
from jobs.audit import chain_reader
from jobs.cli import main as cli_main
from jobs.deploy import ensure_ledger_anchor
from tests.chain.conftest import Deploy, await_automine, revert_to, rpc
from tests.conftest import make_world
from tests.support import raw_connect

pytestmark = pytest.mark.chain


#: RPC clients the test built (every "restarted worker" opens its own HTTP session).
_OPEN_CLIENTS: list[AnchorClient] = []


@pytest.fixture(autouse=True)
async def _close_clients() -> AsyncIterator[None]:
    yield
    while _OPEN_CLIENTS:
        await _OPEN_CLIENTS.pop().w3.provider.disconnect()


@pytest.fixture
def signer(dev_keys: list[str]) -> LocalAccount:
    account: LocalAccount = Account.from_key(dev_keys[0])
    return account


def new_job(
    ledger: Ledger, anvil: str, contract: Contract, signer: LocalAccount, ledger_id: bytes,
    confirmations: int = 2,
) -> AnchorJob:  # fmt: skip
    """A job as a freshly started worker builds it (new RPC connection, new client)."""
    client = AnchorClient(await_automine(connect(anvil)), contract.address, signer)
    _OPEN_CLIENTS.append(client)
    return AnchorJob(ledger.engine, client, ledger_id, confirmations=confirmations)


@pytest.fixture
def job(
    ledger: Ledger, anvil: str, ledger_anchor: Contract, signer: LocalAccount, ledger_id: bytes
) -> AnchorJob:
    return new_job(ledger, anvil, ledger_anchor, signer, ledger_id)


async def activity(ledger: Ledger, n: int = 3) -> list[int]:
    world = await make_world(ledger)
    a, b = await world.funded(1000), await world.funded(1000)
    seqs = []
    for i in range(n):
        op = await ledger.transfer(source=a, destination=b, asset=world.asset, amount=i + 1)
        seqs.extend(e.seq for e in op.entries)
    return seqs


async def step_to(job: AnchorJob, epoch: int, status: str) -> None:
    """Run single transitions until ``epoch`` is in ``status`` (the job 'crashes' there)."""
    await job.build()
    for _ in range(20):
        record = await get_anchor(job.engine, epoch)
        assert record is not None
        if record.status == status:
            return
        assert await job.advance(record), f"stuck in {record.status}"
    raise AssertionError(f"epoch {epoch} never reached {status}")


def anchored_events(contract: Contract, epoch: int) -> list[Any]:
    return list(contract.events.Anchored.get_logs(from_block=0, argument_filters={"epoch": epoch}))


async def assert_final(ledger: Ledger, contract: Contract, epoch: int) -> None:
    record = await get_anchor(ledger.engine, epoch)
    assert record is not None and record.status == "FINALIZED", record
    r = record.roots
    assert bytes(contract.functions.headerOf(epoch).call()) == r.header
    fields = (epoch, r.prev_header, r.entries_root, r.balances_root, r.first_seq, r.last_seq,
              r.leaf_count)  # fmt: skip
    assert contract.functions.isAnchored(fields).call()
    events = anchored_events(contract, epoch)
    assert len(events) == 1, "anchored exactly once"
    args = events[0]["args"]
    assert (bytes(args["headerHash"]), bytes(args["entriesRoot"]), bytes(args["balancesRoot"])) == (
        r.header, r.entries_root, r.balances_root,
    )  # fmt: skip
    assert bytes(events[0]["transactionHash"]) == record.tx_hash


def write_trust(directory: Path, trust: Trust) -> str:
    """The auditor's pinned trust file for ``trust``; its path."""
    path = directory / "trust.json"
    path.write_text(json.dumps(trust.to_json()))
    return str(path)


async def test_seal_anchor_confirm_finalize_and_verify_bundles(
    ledger: Ledger, job: AnchorJob, w3: Web3, ledger_anchor: Contract, anvil: str,
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    seqs = await activity(ledger)
    result = await job.run_once()
    assert result.sealed == 1 and result.built == [1]
    record = await get_anchor(ledger.engine, 1)
    assert record is not None and record.status == "CONFIRMED"  # automine: 1 confirmation
    assert (
        record.gas_used is not None and record.gas_used <= 100_000
    )  # contracts/README.md: ~95-98k, 87.3k floor
    rpc(w3, "anvil_mine", 1)
    await job.anchor_pass()
    await assert_final(ledger, ledger_anchor, 1)

    # epoch 2 chains on epoch 1; an empty open epoch is not sealed on schedule
    seqs2 = await activity(ledger, 2)
    await job.run_once()
    rpc(w3, "anvil_mine", 1)
    assert (await job.run_once()).sealed is None
    await assert_final(ledger, ledger_anchor, 2)
    r2 = await get_roots(ledger.engine, 2)
    r1 = await get_roots(ledger.engine, 1)
    assert r1 is not None and r2 is not None and r2.prev_header == r1.header
    assert [a["status"] for a in await list_anchors(ledger)] == ["FINALIZED"] * 2

    # bundles verify offline and on chain (pinned to this ledger), through the CLI
    trust = write_trust(tmp_path, Trust(w3.eth.chain_id, ledger_anchor.address, job.ledger_id, 2))
    bundles = [await entry_proof_bundle(ledger, s) for s in (seqs[0], seqs2[-1])]
    record2 = await get_anchor(ledger.engine, 2)
    assert record2 is not None
    account = record2.roots.balance_count and bundles[1]["leaf"]["account_id"]
    bundles.append(await balance_proof_bundle(ledger, account, 2))
    for i, bundle in enumerate(bundles):
        assert bundle["anchor"]["tx_hash"] is not None
        assert bundle["anchor"]["chain_id"] == w3.eth.chain_id
        path = tmp_path / f"b{i}.json"
        path.write_text(json.dumps(bundle))
        assert verify_main("verify", [str(path)]) == 0
        assert verify_main("verify", [str(path), "--trust", trust, "--rpc", anvil]) == 0
    out = capsys.readouterr().out
    assert out.count("CONSISTENT:") == 6  # 3 offline runs, 3 runs with --rpc
    assert out.count("VALID:") == 3 and out.count("PINNED:") == 3


async def test_tampered_entry_bundle_fails_verification(
    ledger: Ledger, job: AnchorJob, w3: Web3, anvil: str, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    seqs = await activity(ledger)
    await job.run_once()
    rpc(w3, "anvil_mine", 1)
    await job.anchor_pass()
    conn = await raw_connect(ledger.engine.url.render_as_string(hide_password=False))
    try:  # the operator rewrites history behind the ledger's back (as superuser)
        await conn.execute("ALTER TABLE ledger_entries DISABLE TRIGGER USER")
        await conn.execute("UPDATE ledger_entries SET amount = amount + 1 WHERE seq = $1", seqs[1])
        await conn.execute("ALTER TABLE ledger_entries ENABLE TRIGGER USER")
    finally:
        await conn.close()
    bundle = await entry_proof_bundle(ledger, seqs[1], check=False)
    path = tmp_path / "tampered.json"
    path.write_text(json.dumps(bundle))
    assert verify_main("verify", [str(path)]) == 1
    trust = write_trust(tmp_path, Trust(w3.eth.chain_id, job.client.address, job.ledger_id, 2))
    assert verify_main("verify", [str(path), "--trust", trust, "--rpc", anvil]) == 1
    err = capsys.readouterr().err
    assert "INVALID: the proof does not lead from this leaf to the entries root" in err
    # a forged bundle that also swaps in a matching root is caught by the header hash
    bundle["header"]["entries_root"] = "0x" + "ab" * 32
    path.write_text(json.dumps(bundle))
    assert verify_main("verify", [str(path)]) == 1
    assert "do not hash to the header hash" in capsys.readouterr().err


@pytest.mark.parametrize("crash_at", ["roots", "SEALED", "SIGNED", "sent-unrecorded", "BROADCAST"])
async def test_crash_then_restart_anchors_once_with_the_same_root(
    crash_at: str, ledger: Ledger, job: AnchorJob, w3: Web3, ledger_anchor: Contract,
    anvil: str, signer: LocalAccount, ledger_id: bytes,
) -> None:  # fmt: skip
    await activity(ledger)
    assert await seal_open_epoch(ledger.engine) == 1
    signed_hash = None
    if crash_at != "roots":  # "roots": crashed after the seal, before any tree was stored
        status = "SIGNED" if crash_at == "sent-unrecorded" else crash_at
        await step_to(job, 1, status)
        record = await get_anchor(ledger.engine, 1)
        assert record is not None
        signed_hash = record.tx_hash
        if crash_at == "sent-unrecorded":  # broadcast happened, the BROADCAST write did not
            assert record.raw_tx is not None
            w3.eth.send_raw_transaction(record.raw_tx)

    restarted = new_job(ledger, anvil, ledger_anchor, signer, ledger_id)
    await restarted.run_once(seal=False)
    rpc(w3, "anvil_mine", 1)
    await restarted.run_once(seal=False)
    await assert_final(ledger, ledger_anchor, 1)
    record = await get_anchor(ledger.engine, 1)
    assert record is not None
    if signed_hash is not None:
        assert record.tx_hash == signed_hash  # the persisted bytes were sent, not re-signed
    assert record.attempts == 1


async def test_anchor_found_on_chain_is_adopted_not_sent_again(
    ledger: Ledger, job: AnchorJob, ledger_anchor: Contract, deployer: str, w3: Web3,
) -> None:  # fmt: skip
    """The epoch got anchored by a transaction the database does not know (e.g. a worker
    whose row was restored from an older backup): the job reads the chain first."""
    await activity(ledger)
    await seal_open_epoch(ledger.engine)
    (roots,) = await job.build()
    tx = ledger_anchor.functions.anchor(
        1, roots.prev_header, roots.entries_root, roots.balances_root, roots.first_seq,
        roots.last_seq, roots.leaf_count,
    ).transact({"from": deployer})  # fmt: skip
    await job.anchor_pass()
    rpc(w3, "anvil_mine", 1)
    await job.anchor_pass()
    await assert_final(ledger, ledger_anchor, 1)
    record = await get_anchor(ledger.engine, 1)
    assert record is not None and record.tx_hash == bytes(tx) and record.attempts == 0


async def test_a_different_root_on_chain_is_a_conflict_never_overwritten(
    ledger: Ledger,
    job: AnchorJob,
    ledger_anchor: Contract,
    deployer: str,
) -> None:
    await activity(ledger)
    await seal_open_epoch(ledger.engine)
    (roots,) = await job.build()
    ledger_anchor.functions.anchor(
        1, roots.prev_header, b"\x01" * 32, roots.balances_root, roots.first_seq,
        roots.last_seq, roots.leaf_count,
    ).transact({"from": deployer})  # fmt: skip
    with pytest.raises(AnchorConflict):
        await job.anchor_pass()
    record = await get_anchor(ledger.engine, 1)
    assert record is not None and record.status == "SEALED"
    assert record.last_error is not None and "another header" in record.last_error
    assert len(anchored_events(ledger_anchor, 1)) == 1
    assert bytes(anchored_events(ledger_anchor, 1)[0]["args"]["entriesRoot"]) == b"\x01" * 32


async def test_reorg_after_confirmation_sends_the_anchor_again(
    ledger: Ledger,
    job: AnchorJob,
    w3: Web3,
    ledger_anchor: Contract,
) -> None:
    await activity(ledger)
    job.confirmations = 3
    snapshot = rpc(w3, "evm_snapshot")
    await job.run_once()
    first = await get_anchor(ledger.engine, 1)
    assert first is not None and first.status == "CONFIRMED"
    # the block holding the anchor is replaced: revert, then grow a longer, different chain
    assert rpc(w3, "evm_revert", snapshot) is True
    rpc(w3, "anvil_mine", 3)
    assert w3.eth.get_block(first.block_number)["hash"] != first.block_hash
    assert bytes(ledger_anchor.functions.headerOf(1).call()) == b"\x00" * 32

    await job.anchor_pass()  # notices the reorg, sends the same bytes again (nonce free)
    again = await get_anchor(ledger.engine, 1)
    assert again is not None and again.status in ("BROADCAST", "CONFIRMED")
    await job.anchor_pass()
    rpc(w3, "anvil_mine", 3)
    await job.anchor_pass()
    await assert_final(ledger, ledger_anchor, 1)
    final = await get_anchor(ledger.engine, 1)
    assert final is not None and final.block_hash != first.block_hash
    async with raw_connection(ledger.engine) as conn:
        details = [r[0] for r in await conn.fetch("SELECT detail FROM chain_tx_events ORDER BY id")]
    assert any(d and d.startswith("reorg") for d in details)


def test_a_test_leaves_no_pending_transaction_behind(w3: Web3, signer: LocalAccount) -> None:
    """anvil's ``evm_revert`` keeps its mempool: the per-test revert empties it, or a
    transaction a test left pending would be mined in the next test's chain."""
    snapshot = rpc(w3, "evm_snapshot")
    nonce = w3.eth.get_transaction_count(signer.address)
    rpc(w3, "evm_setAutomine", False)
    try:
        leftover = signer.sign_transaction({
            "to": signer.address, "value": 0, "gas": 21_000, "nonce": nonce,
            "maxFeePerGas": 10**11, "maxPriorityFeePerGas": 10**9, "chainId": w3.eth.chain_id,
            "type": 2,
        })  # fmt: skip
        w3.eth.send_raw_transaction(leftover.raw_transaction)
        revert_to(w3, snapshot)
    finally:
        rpc(w3, "evm_setAutomine", True)
    rpc(w3, "evm_mine")
    assert w3.eth.get_transaction_count(signer.address, "pending") == nonce
    assert w3.eth.get_transaction_count(signer.address) == nonce


async def test_nonce_taken_by_another_transaction_is_re_signed(
    ledger: Ledger,
    job: AnchorJob,
    w3: Web3,
    ledger_anchor: Contract,
    signer: LocalAccount,
) -> None:
    await activity(ledger)
    await seal_open_epoch(ledger.engine)
    await step_to(job, 1, "SIGNED")
    signed = await get_anchor(ledger.engine, 1)
    assert signed is not None
    # someone else uses the signer's account with the same nonce before our broadcast
    rpc(w3, "anvil_setBalance", signer.address, hex(10**20))
    other = signer.sign_transaction({
        "to": signer.address, "value": 0, "gas": 21_000, "nonce": signed.nonce,
        "maxFeePerGas": 10**11, "maxPriorityFeePerGas": 10**9, "chainId": w3.eth.chain_id,
        "type": 2,
    })  # fmt: skip
    w3.eth.send_raw_transaction(other.raw_transaction)
    await job.anchor_pass()
    rpc(w3, "anvil_mine", 1)
    await job.anchor_pass()
    await assert_final(ledger, ledger_anchor, 1)
    final = await get_anchor(ledger.engine, 1)
    assert final is not None and final.tx_hash != signed.tx_hash and final.attempts == 2


async def test_two_workers_at_once_sign_one_transaction(
    ledger: Ledger, anvil: str, w3: Web3, ledger_anchor: Contract, signer: LocalAccount,
    ledger_id: bytes,
) -> None:  # fmt: skip
    await activity(ledger)
    await seal_open_epoch(ledger.engine)
    jobs = [new_job(ledger, anvil, ledger_anchor, signer, ledger_id) for _ in range(4)]
    await jobs[0].build()
    nonce = w3.eth.get_transaction_count(signer.address)
    await asyncio.gather(*(j.anchor_pass() for j in jobs))
    await asyncio.gather(*(j.anchor_pass() for j in jobs))
    rpc(w3, "anvil_mine", 1)
    await asyncio.gather(*(j.anchor_pass() for j in jobs))
    await assert_final(ledger, ledger_anchor, 1)
    assert w3.eth.get_transaction_count(signer.address) == nonce + 1


# -------------------------------------------------------------------------------------- hardening


UNFUNDED = ("valueos_chain_tx_insufficient_funds_total", {"purpose": "anchor"})


def tx_fields(raw: bytes) -> dict[str, Any]:
    return dict(TypedTransaction.from_bytes(HexBytes(raw)).as_dict())


async def anchor_events(ledger: Ledger, epoch: int) -> list[tuple[str, str | None]]:
    """The transitions of the outbox row carrying ``epoch``'s anchor."""
    async with raw_connection(ledger.engine) as conn:
        rows = await conn.fetch(
            "SELECT e.to_status, e.detail FROM chain_tx_events e "
            "JOIN chain_txs t ON t.id = e.tx_id "
            "WHERE t.purpose = 'anchor' AND t.ref = $1 ORDER BY e.id",
            str(epoch),
        )
    return [(r[0], r[1]) for r in rows]


@pytest.fixture
def manual_mining(w3: Web3) -> Iterator[None]:
    """Blocks are mined only by ``evm_mine`` / ``anvil_mine`` during the test; the next base fee
    is put back afterwards (``evm_revert`` does not restore anvil's fee state). Transactions
    left pending are dropped first: turning automine on would mine them, possibly only after
    the test's ``evm_revert``."""
    base_fee = w3.eth.get_block("pending")["baseFeePerGas"]
    rpc(w3, "evm_setAutomine", False)
    try:
        yield
    finally:
        rpc(w3, "anvil_dropAllTransactions")
        rpc(w3, "evm_setAutomine", True)
        rpc(w3, "anvil_setNextBlockBaseFeePerGas", hex(base_fee))


@pytest.mark.usefixtures("manual_mining")
async def test_stuck_anchor_is_re_signed_with_higher_fees_and_the_same_nonce(
    ledger: Ledger, job: AnchorJob, w3: Web3, ledger_anchor: Contract
) -> None:
    await activity(ledger)
    await seal_open_epoch(ledger.engine)
    await step_to(job, 1, "BROADCAST")
    first = await get_anchor(ledger.engine, 1)
    assert first is not None and first.raw_tx is not None and first.tx_hash is not None
    old = tx_fields(first.raw_tx)
    assert await job.client.known(first.tx_hash)  # pending: nothing is mined

    await job.anchor_pass()  # not due yet (default: 180 s)
    assert (await get_anchor(ledger.engine, 1)) == first
    job.bump_after_s = 0.0
    await job.anchor_pass()  # due: re-signed, persisted (SIGNED), sent (BROADCAST); once
    bumped = await get_anchor(ledger.engine, 1)
    assert bumped is not None and bumped.status == "BROADCAST"
    assert bumped.raw_tx is not None and bumped.tx_hash not in (None, first.tx_hash)
    new = tx_fields(bumped.raw_tx)
    assert new["nonce"] == old["nonce"] == bumped.nonce == first.nonce
    assert (new["to"], new["data"], new["gas"]) == (old["to"], old["data"], old["gas"])
    assert new["maxPriorityFeePerGas"] * 10 >= old["maxPriorityFeePerGas"] * 11
    assert new["maxFeePerGas"] * 10 >= old["maxFeePerGas"] * 11
    assert not await job.client.known(first.tx_hash)  # the node replaced it
    assert await job.client.known(bumped.tx_hash)  # type: ignore[arg-type]

    # the base fee jumps above what the replacement pays: anvil drops it from its pool
    rpc(w3, "anvil_setNextBlockBaseFeePerGas", hex(4 * new["maxFeePerGas"]))
    rpc(w3, "evm_mine")
    assert not await job.client.known(bumped.tx_hash)  # type: ignore[arg-type]
    await job.anchor_pass()  # dropped and overdue: re-signed for the new base fee
    again = await get_anchor(ledger.engine, 1)
    assert again is not None and again.raw_tx is not None and again.status == "BROADCAST"
    third = tx_fields(again.raw_tx)
    assert third["nonce"] == old["nonce"]
    assert third["maxFeePerGas"] >= 2 * w3.eth.get_block("latest")["baseFeePerGas"]
    details = [d for _, d in await anchor_events(ledger, 1)]
    assert sum(1 for d in details if d and d.startswith("fee bump")) == 2

    rpc(w3, "evm_mine")
    await job.anchor_pass()
    rpc(w3, "anvil_mine", 1)
    await job.anchor_pass()
    await assert_final(ledger, ledger_anchor, 1)
    final = await get_anchor(ledger.engine, 1)
    assert final is not None and final.tx_hash == again.tx_hash and final.attempts == 1


@pytest.mark.usefixtures("manual_mining")
async def test_when_the_replaced_transaction_is_mined_it_is_the_anchor(
    ledger: Ledger, job: AnchorJob, w3: Web3, ledger_anchor: Contract, anvil: str,
    signer: LocalAccount, ledger_id: bytes,
) -> None:  # fmt: skip
    """Crash after the replacement was persisted, before it was sent; meanwhile the original
    transaction is mined. The restarted job sends the replacement (refused: nonce used), then
    finds the original mined and confirms that one."""
    await activity(ledger)
    await seal_open_epoch(ledger.engine)
    await step_to(job, 1, "BROADCAST")
    first = await get_anchor(ledger.engine, 1)
    assert first is not None
    job.bump_after_s = 0.0
    assert await job.advance(first)
    persisted = await get_anchor(ledger.engine, 1)
    assert persisted is not None and persisted.status == "SIGNED"
    assert persisted.tx_hash != first.tx_hash  # the job "crashes" here

    rpc(w3, "evm_mine")  # the original, still in the mempool, is mined
    restarted = new_job(ledger, anvil, ledger_anchor, signer, ledger_id)
    await restarted.anchor_pass()
    confirmed = await get_anchor(ledger.engine, 1)
    assert confirmed is not None and confirmed.status == "CONFIRMED"
    assert confirmed.tx_hash == first.tx_hash
    rpc(w3, "anvil_mine", 1)
    await restarted.anchor_pass()
    await assert_final(ledger, ledger_anchor, 1)


async def test_signer_without_funds_is_a_clear_error_before_signing(
    ledger: Ledger, job: AnchorJob, w3: Web3, ledger_anchor: Contract, signer: LocalAccount
) -> None:
    await activity(ledger)
    nonce = w3.eth.get_transaction_count(signer.address)
    before = REGISTRY.get_sample_value(*UNFUNDED) or 0.0
    rpc(w3, "anvil_setBalance", signer.address, hex(10**6))
    with pytest.raises(InsufficientFunds) as caught:
        await job.run_once()
    message = str(caught.value)
    assert f"anchor signer {signer.address} cannot pay" in message
    assert "balance 1000000 wei <" in message
    record = await get_anchor(ledger.engine, 1)
    assert record is not None and record.status == "SEALED" and record.tx_hash is None
    assert record.last_error == message and record.attempts == 0
    assert w3.eth.get_transaction_count(signer.address, "pending") == nonce  # nothing sent
    after = REGISTRY.get_sample_value(*UNFUNDED)
    assert after == before + 1
    assert (
        REGISTRY.get_sample_value("valueos_chain_signer_balance_wei", {"sender": signer.address})
        == 10**6
    )

    rpc(w3, "anvil_setBalance", signer.address, hex(10**21))  # funded: it goes through
    await job.anchor_pass()
    rpc(w3, "anvil_mine", 1)
    await job.anchor_pass()
    await assert_final(ledger, ledger_anchor, 1)


async def test_stored_anchors_for_another_chain_or_contract_refuse_to_run(
    ledger: Ledger, job: AnchorJob, w3: Web3, ledger_anchor: Contract, anvil: str,
    signer: LocalAccount, ledger_id: bytes, deploy: Deploy, deployer: str,
) -> None:  # fmt: skip
    await activity(ledger)
    await job.run_once()
    anchored = await get_anchor(ledger.engine, 1)
    assert anchored is not None and anchored.status == "CONFIRMED"
    await activity(ledger, 1)
    await seal_open_epoch(ledger.engine)

    # the configuration now names another contract
    other = deploy("LedgerAnchor", ledger_id, deployer, 0, bytes(32))
    moved = new_job(ledger, anvil, other, signer, ledger_id)
    with pytest.raises(AnchorConfigMismatch) as caught:
        await moved.run_once(seal=False)
    assert str(caught.value) == (
        f"anchors in the database were sent to chain id {w3.eth.chain_id}, contract "
        f"{ledger_anchor.address}; the configuration says chain id {w3.eth.chain_id}, contract "
        f"{other.address} (ETH_RPC_URL / VALUEOS_ANCHOR_CONTRACT): refusing to anchor"
    )
    assert await get_anchor(ledger.engine, 2) is not None
    assert (await get_anchor(ledger.engine, 2)).status == "SEALED"  # type: ignore[union-attr]
    assert other.functions.headerOf(1).call() == b"\x00" * 32

    async with raw_connection(ledger.engine) as conn:  # stored for another chain id
        await conn.execute("UPDATE chain_txs SET chain_id = 1 WHERE ref = '1'")
    with pytest.raises(AnchorConfigMismatch, match="sent to chain id 1, contract"):
        await new_job(ledger, anvil, ledger_anchor, signer, ledger_id).anchor_pass()
    async with raw_connection(ledger.engine) as conn:
        await conn.execute(f"UPDATE chain_txs SET chain_id = {w3.eth.chain_id}")

    foreign = deploy("LedgerAnchor", b"\x07" * 32, deployer, 0, bytes(32))  # another ledger's
    async with raw_connection(ledger.engine) as conn:
        await conn.execute("UPDATE chain_txs SET to_address = $1", foreign.address)
    with pytest.raises(AnchorConfigMismatch, match="anchors ledger 0x0707"):
        await new_job(ledger, anvil, foreign, signer, ledger_id).anchor_pass()


async def test_anvil_reorg_drops_the_anchor_then_it_is_sent_again_with_the_same_roots(
    ledger: Ledger, job: AnchorJob, w3: Web3, ledger_anchor: Contract
) -> None:
    await activity(ledger)
    job.confirmations = 3
    await job.run_once()
    first = await get_anchor(ledger.engine, 1)
    assert first is not None and first.status == "CONFIRMED" and first.block_number is not None
    rpc(w3, "anvil_mine", 1)
    # a real reorg: the last blocks (the anchor's among them) replaced by empty ones
    rpc(w3, "anvil_reorg", w3.eth.block_number - first.block_number + 1, [])
    assert w3.eth.get_block(first.block_number)["hash"] != first.block_hash
    assert bytes(ledger_anchor.functions.headerOf(1).call()) == b"\x00" * 32

    await job.anchor_pass()  # reorg noticed, the same bytes sent again (automine)
    rpc(w3, "anvil_mine", 3)
    await job.anchor_pass()
    await assert_final(ledger, ledger_anchor, 1)
    final = await get_anchor(ledger.engine, 1)
    assert final is not None and final.roots == first.roots
    assert final.tx_hash == first.tx_hash and final.block_hash != first.block_hash
    details = [d for _, d in await anchor_events(ledger, 1)]
    assert f"reorg: block {first.block_number} replaced" in details


async def test_anvil_reorg_moving_the_anchor_to_another_block_follows_it(
    ledger: Ledger, job: AnchorJob, w3: Web3, ledger_anchor: Contract
) -> None:
    await activity(ledger)
    job.confirmations = 3
    await job.run_once()
    first = await get_anchor(ledger.engine, 1)
    assert first is not None and first.raw_tx is not None and first.block_number is not None
    rpc(w3, "anvil_mine", 1)
    # the replacing chain carries the same transaction, one block later
    rpc(w3, "anvil_reorg", 2, [["0x" + first.raw_tx.hex(), 1]])
    moved = w3.eth.get_transaction_receipt(HexBytes(first.tx_hash))
    assert moved["blockNumber"] == first.block_number + 1

    await job.anchor_pass()
    after = await get_anchor(ledger.engine, 1)
    assert after is not None and after.status == "CONFIRMED"
    assert after.block_number == first.block_number + 1 and after.tx_hash == first.tx_hash
    rpc(w3, "anvil_mine", 3)
    await job.anchor_pass()
    await assert_final(ledger, ledger_anchor, 1)


async def test_finality_by_the_finalized_block_tag(
    ledger: Ledger, job: AnchorJob, w3: Web3, ledger_anchor: Contract
) -> None:
    await activity(ledger)
    job.finality = "finalized"
    await job.run_once()
    record = await get_anchor(ledger.engine, 1)
    assert record is not None and record.status == "CONFIRMED" and record.block_number
    rpc(w3, "anvil_mine", job.confirmations + 1)  # deep enough by depth, not finalized yet
    await job.anchor_pass()
    assert (await get_anchor(ledger.engine, 1)).status == "CONFIRMED"  # type: ignore[union-attr]
    while w3.eth.get_block("finalized")["number"] < record.block_number:
        rpc(w3, "anvil_mine", 16)
    await job.anchor_pass()
    await assert_final(ledger, ledger_anchor, 1)
    details = [d for _, d in await anchor_events(ledger, 1)]
    assert details[-1] is not None and details[-1].startswith("at or below the finalized block")


def test_finality_mode_is_checked(job: AnchorJob) -> None:
    with pytest.raises(ValueError, match="finality must be one of"):
        dataclasses.replace(job, finality="safe")


async def test_the_cli_refuses_to_start_against_another_contract(
    ledger: Ledger, job: AnchorJob, w3: Web3, ledger_anchor: Contract, ledger_id: bytes,
    deploy: Deploy, deployer: str, dev_keys: list[str], anvil: str,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    await activity(ledger)
    await job.run_once()
    other = deploy("LedgerAnchor", ledger_id, deployer, 0, bytes(32))
    env = {
        "DATABASE_URL": ledger.engine.url.render_as_string(hide_password=False),
        "ETH_RPC_URL": anvil,
        "VALUEOS_ANCHOR_CONTRACT": other.address,
        "VALUEOS_ANCHOR_KEY": dev_keys[0],
        "VALUEOS_LEDGER_ID": "0x" + ledger_id.hex(),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value.replace("postgresql+asyncpg://", "postgresql://"))
    caches = (anchor_settings, database_settings, epoch_settings)
    for cache in caches:
        cache.cache_clear()
    try:
        code = await asyncio.to_thread(cli_main, "anchor", ["--now", "--no-wait"])
    finally:
        for cache in caches:
            cache.cache_clear()
    assert code == 1
    out = capsys.readouterr().out
    assert f"contract {ledger_anchor.address}; the configuration says" in out
    assert "refusing to anchor" in out
    assert other.functions.headerOf(1).call() == b"\x00" * 32


@pytest.mark.usefixtures("manual_mining")
async def test_a_replacement_above_the_fee_cap_is_not_signed(
    ledger: Ledger, job: AnchorJob, w3: Web3, ledger_anchor: Contract
) -> None:
    await activity(ledger)
    await seal_open_epoch(ledger.engine)
    await step_to(job, 1, "BROADCAST")
    first = await get_anchor(ledger.engine, 1)
    assert first is not None and first.raw_tx is not None
    job.bump_after_s, job.max_fee_cap = 0.0, tx_fields(first.raw_tx)["maxFeePerGas"]
    await job.anchor_pass()
    await job.anchor_pass()
    capped = await get_anchor(ledger.engine, 1)
    assert capped is not None and capped.status == "BROADCAST"
    assert capped.tx_hash == first.tx_hash and capped.raw_tx == first.raw_tx
    assert capped.last_error is not None and "above the cap" in capped.last_error
    assert [d for _, d in await anchor_events(ledger, 1)].count("fee cap") == 1
    rpc(w3, "evm_mine")  # the original still gets mined
    await job.anchor_pass()
    rpc(w3, "anvil_mine", 1)
    await job.anchor_pass()
    await assert_final(ledger, ledger_anchor, 1)


async def test_a_new_contract_continues_the_header_chain_of_the_old_one(
    ledger: Ledger, job: AnchorJob, w3: Web3, ledger_anchor: Contract, ledger_id: bytes,
    deploy: Deploy, deployer: str, signer: LocalAccount, anvil: str,
) -> None:  # fmt: skip
    """Migration: epochs 1-2 on the old contract, a successor deployed with --continue-from's
    function, epoch 3 on the successor chains onto epoch 2's header; the self-audit checks epoch
    2 against the successor's genesis and epoch 3 against its storage; a successor with another
    genesis header, and the old contract after the move, are refused."""
    for _ in range(2):
        await activity(ledger)
        await job.run_once()
    second = await get_anchor(ledger.engine, 2)
    assert second is not None and second.status in ("CONFIRMED", "FINALIZED")

    aw3 = await_automine(connect(anvil))
    try:
        address = await ensure_ledger_anchor(
            aw3, lambda: signer, ledger_id, None, continue_from=ledger_anchor.address
        )
    finally:
        await aw3.provider.disconnect()
    successor = w3.eth.contract(address=address, abi=ledger_anchor.abi)
    assert successor.functions.genesisEpoch().call() == 2
    assert bytes(successor.functions.genesisHeader().call()) == second.roots.header

    moved = new_job(ledger, anvil, successor, signer, ledger_id)
    await activity(ledger)
    await moved.run_once()
    third = await get_anchor(ledger.engine, 3)
    assert third is not None and third.status in ("CONFIRMED", "FINALIZED")
    assert third.roots.prev_header == second.roots.header
    assert bytes(successor.functions.headerOf(3).call()) == third.roots.header
    assert bytes(ledger_anchor.functions.headerOf(3).call()) == b"\x00" * 32
    report = await integrity.audit(ledger.engine, ledger_id, onchain=chain_reader(moved.client))
    assert report.ok, report.findings
    assert report.epochs == 3

    other = deploy("LedgerAnchor", ledger_id, deployer, 3, b"\x01" * 32)
    with pytest.raises(AnchorConfigMismatch, match="continues the header chain from epoch 3"):
        await new_job(ledger, anvil, other, signer, ledger_id).run_once(seal=False)
    with pytest.raises(AnchorConfigMismatch, match=f"contract {successor.address}"):
        await new_job(ledger, anvil, ledger_anchor, signer, ledger_id).run_once(seal=False)


async def test_chain_head_reads_the_three_word_layout(
    w3: Web3, ledger_id: bytes, deployer: str, anvil: str
) -> None:
    """--continue-from also reads a contract of the previous layout (header + both roots per
    epoch, the artifact bench.anchor_gas measures as its baseline)."""
    old = baseline_artifact()
    factory = w3.eth.contract(abi=old["abi"], bytecode=old["bytecode"])
    receipt = w3.eth.wait_for_transaction_receipt(
        factory.constructor(ledger_id, deployer).transact({"from": deployer})
    )
    contract = w3.eth.contract(address=receipt["contractAddress"], abi=old["abi"])
    prev = b"\x00" * 32
    for epoch in (1, 2):
        contract.functions.anchor(
            epoch, prev, b"\x11" * 32, b"\x22" * 32, epoch, epoch, 1
        ).transact({"from": deployer})
        prev = bytes(contract.functions.epochs(epoch).call()[0])
    aw3 = connect(anvil)
    try:
        assert await chain_head(aw3, contract.address, ledger_id) == (2, prev)
        with pytest.raises(ChainError, match="another ledger id"):
            await chain_head(aw3, contract.address, b"\x07" * 32)
    finally:
        await aw3.provider.disconnect()
