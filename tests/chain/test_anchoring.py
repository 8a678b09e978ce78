"""The anchor job on a real anvil and a real PostgreSQL: happy path, crashes, reorgs, conflicts.

A "crash" is the job stopped between two persisted steps (only the steps up to there ran);
"restart" is a brand-new job and client built from the database and the chain alone.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.contract import Contract
from web3.types import RPCEndpoint

from chain.eth import AnchorClient, AnchorConflict, connect
from chain.verify import main as verify_main
from core.anchors import get_anchor
from core.epochs import get_roots, raw_connection, seal_open_epoch
from core.ledger import Ledger
from core.proofs import balance_proof_bundle, entry_proof_bundle, list_anchors
from jobs.anchor import AnchorJob
from tests.conftest import make_world, settings_for
from tests.support import create_database, drop_database, raw_connect

pytestmark = pytest.mark.chain


def rpc(w3: Web3, method: str, *params: Any) -> Any:
    response = w3.provider.make_request(RPCEndpoint(method), list(params))
    assert "error" not in response, response
    return response["result"]


@pytest.fixture
async def ledger() -> AsyncIterator[Ledger]:
    url = await create_database()
    led = Ledger.connect(settings_for(url))
    try:
        yield led
    finally:
        await led.close()
        await drop_database(url)


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
    client = AnchorClient(connect(anvil), contract.address, signer)
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
    header, entries_root, balances_root = contract.functions.epochs(epoch).call()
    assert (bytes(header), bytes(entries_root), bytes(balances_root)) == (
        record.roots.header, record.roots.entries_root, record.roots.balances_root,
    )  # fmt: skip
    events = anchored_events(contract, epoch)
    assert len(events) == 1, "anchored exactly once"
    assert bytes(events[0]["transactionHash"]) == record.tx_hash


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
    assert [a["status"] for a in await list_anchors(ledger.engine)] == ["FINALIZED"] * 2

    # bundles verify offline and on chain, through the CLI
    bundles = [await entry_proof_bundle(ledger.engine, s) for s in (seqs[0], seqs2[-1])]
    record2 = await get_anchor(ledger.engine, 2)
    assert record2 is not None
    account = record2.roots.balance_count and bundles[1]["leaf"]["account_id"]
    bundles.append(await balance_proof_bundle(ledger.engine, account, 2))
    for i, bundle in enumerate(bundles):
        assert bundle["anchor"]["tx_hash"] is not None
        assert bundle["anchor"]["chain_id"] == w3.eth.chain_id
        path = tmp_path / f"b{i}.json"
        path.write_text(json.dumps(bundle))
        assert verify_main("verify", [str(path)]) == 0
        assert verify_main("verify", [str(path), "--rpc", anvil]) == 0
    out = capsys.readouterr().out
    assert out.count("VALID:") == 9  # 3 offline runs, 3 runs with --rpc (2 lines each)


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
    bundle = await entry_proof_bundle(ledger.engine, seqs[1], check=False)
    path = tmp_path / "tampered.json"
    path.write_text(json.dumps(bundle))
    assert verify_main("verify", [str(path)]) == 1
    assert verify_main("verify", [str(path), "--rpc", anvil]) == 1
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
    assert bytes(ledger_anchor.functions.epochs(1).call()[1]) == b"\x01" * 32


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
    assert bytes(ledger_anchor.functions.epochs(1).call()[0]) == b"\x00" * 32

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
        details = [r[0] for r in await conn.fetch("SELECT detail FROM anchor_events ORDER BY id")]
    assert any(d and d.startswith("reorg") for d in details)


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
    import asyncio

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
