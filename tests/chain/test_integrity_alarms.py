"""The worker against a lying operator, on a real anvil and PostgreSQL.

* history edited inside an anchored epoch: the scheduled seal-and-anchor body raises an
  integrity alarm (ERROR log, no traceback), anchors nothing, and stays paused until an
  operator acknowledges -- after the rows are repaired, the next epoch anchors;
* an operator rewrites an anchored epoch's entry *and* its stored trees and roots
  consistently: only the chain can tell, and the self-audit (comparing with the contract)
  and ``valueos verify --rpc`` (pinned) both do;
* ``valueos audit`` on demand: report, alarms, acknowledgement.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator
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
from core import integrity
from core.anchors import get_anchor
from core.epochs import build_epoch, get_roots, load_leaves, raw_connection
from core.ledger import Ledger
from core.proofs import entry_proof_bundle
from core.settings import database_settings, epoch_settings
from core.types import Actor, OperationType, Role
from jobs.anchor import AnchorJob
from jobs.audit import chain_reader
from jobs.audit import main as audit_main
from jobs.seal_and_anchor import seal_and_anchor
from merkle.leaves import fold_entries
from tests.chain.conftest import await_automine, rpc
from tests.conftest import World, make_world
from tests.support import raw_connect

pytestmark = pytest.mark.chain

MILLION = 100_000_000


@pytest.fixture
async def job(
    ledger: Ledger, anvil: str, ledger_anchor: Contract, dev_keys: list[str], ledger_id: bytes
) -> AsyncIterator[AnchorJob]:
    signer: LocalAccount = Account.from_key(dev_keys[0])
    client = AnchorClient(await_automine(connect(anvil)), ledger_anchor.address, signer)
    yield AnchorJob(ledger.engine, client, ledger_id, confirmations=2)
    await client.w3.provider.disconnect()


async def tamper(ledger: Ledger, *statements: tuple[Any, ...]) -> None:
    conn = await raw_connect(ledger.engine.url.render_as_string(hide_password=False))
    try:
        await conn.execute("SET session_replication_role = replica")
        for sql, *args in statements:
            await conn.execute(sql, *args)
    finally:
        await conn.close()


async def anchored_epoch(
    ledger: Ledger, job: AnchorJob, w3: Web3
) -> tuple[World, int, int, list[int]]:
    """Epoch 1 anchored and final; (world, a, b, seqs of the last operation: a mint to b)."""
    world = await make_world(ledger)
    a, b = await world.funded(10_000), await world.funded(10_000)
    await ledger.transfer(source=a, destination=b, asset=world.asset, amount=250)
    op = await ledger.transfer(
        source=world.issuance, destination=b, asset=world.asset, amount=40, type_=OperationType.MINT
    )
    await job.run_once()
    rpc(w3, "anvil_mine", 2)
    await job.anchor_pass()
    record = await get_anchor(ledger.engine, 1)
    assert record is not None and record.status == "FINALIZED"
    return world, a, b, [e.seq for e in op.entries]


async def test_edited_history_raises_an_alarm_and_pauses_until_acknowledged(
    ledger: Ledger, job: AnchorJob, w3: Web3, caplog: pytest.LogCaptureFixture
) -> None:
    world, a, b, seqs = await anchored_epoch(ledger, job, w3)
    await ledger.transfer(source=b, destination=a, asset=world.asset, amount=1)
    credit = seqs[1]  # b's credit of the mint: b gets a million more
    edit = ("UPDATE ledger_entries SET balance_after = balance_after + $2 WHERE seq = $1", credit)
    await tamper(ledger, (*edit, MILLION))
    with caplog.at_level(logging.ERROR):
        await seal_and_anchor(job)  # the scheduled body: must not raise
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("INTEGRITY ALARM from the sealer: epoch 1" in r.getMessage() for r in errors)
    assert all(r.exc_info is None for r in errors), "an alarm, not a traceback"
    assert await get_roots(ledger.engine, 2) is None
    [alarm] = await integrity.open_alarms(ledger.engine)
    assert alarm.source == "sealer" and alarm.first_leaf == f"balance of account {b}"
    # paused: nothing sealed, built or anchored while the alarm is open
    result = await job.run_once()
    assert result.paused and result.sealed is None and result.built == []
    # the operator repairs the rows, then acknowledges; the next run anchors epoch 2
    await tamper(ledger, (*edit, -MILLION))
    ops = Actor("operator:alice", Role.ADMIN)
    await integrity.acknowledge(ledger.engine, ops, "balance_after of one entry restored")
    result = await job.run_once()
    assert not result.paused and result.built == [2]
    assert (await integrity.audit(ledger.engine, job.ledger_id)).ok


async def rewrite_epoch_consistently(ledger: Ledger, ledger_id: bytes, seqs: list[int]) -> None:
    """The operator's forgery: the mint ``seqs`` (debit, credit) moves 1,000,000.00 more
    (both legs, their balance_after, both cached balances: every sum still holds), and epoch
    1's running entries hashes, stored trees, roots and header are rewritten to match the
    forged rows."""
    for seq, delta in ((seqs[0], -MILLION), (seqs[1], MILLION)):
        await tamper(
            ledger,
            ("UPDATE ledger_entries SET amount = amount + $2, balance_after = balance_after + $2 "
             "WHERE seq = $1", seq, delta),
            ("UPDATE balances SET posted = posted + $2 WHERE account_id = "
             "(SELECT account_id FROM ledger_entries WHERE seq = $1)", seq, delta),
        )  # fmt: skip
    async with raw_connection(ledger.engine) as conn:
        entries, _ = await load_leaves(conn, ledger_id, 1)
    # the balance leaves' entry counts and hashes, folded over the forged entries
    folded: dict[int, tuple[int, bytes]] = {}
    for e in entries:
        folded[e.account_id] = fold_entries(*folded.get(e.account_id, (0, bytes(32))), [e.hash()])
    await tamper(
        ledger,
        *(("UPDATE balance_commitments SET entries_hash = $3 WHERE account_id = $1 "
           "AND epoch = $2", account, 1, h) for account, (_, h) in folded.items()),
    )  # fmt: skip
    async with raw_connection(ledger.engine) as conn:
        entries, balances = await load_leaves(conn, ledger_id, 1)
    built = build_epoch(
        ledger_id=ledger_id, epoch=1, prev_header=b"\0" * 32, prev_cut=0, entries=entries,
        balances=balances,
    )  # fmt: skip
    r = built.roots
    statements: list[tuple[Any, ...]] = [
        ("UPDATE epoch_roots SET entries_root = $2, balances_root = $3, header = $4 "
         "WHERE epoch = $1", 1, r.entries_root, r.balances_root, r.header),
    ]  # fmt: skip
    for tree in (built.entries, built.balances):
        statements.append(
            ("UPDATE epoch_trees SET root = $3, keys = $4, positions = $5 "
             "WHERE epoch = $1 AND tree = $2", 1, tree.kind, tree.root, tree.keys, tree.positions)
        )  # fmt: skip
        for depth, nodes in enumerate(tree.rows):
            statements.append(
                ("UPDATE epoch_tree_levels SET nodes = $4 WHERE epoch = $1 AND tree = $2 "
                 "AND depth = $3", 1, tree.kind, depth, nodes)
            )  # fmt: skip
    await tamper(ledger, *statements)


async def test_a_consistent_rewrite_of_an_anchored_epoch_is_caught_by_the_chain(
    ledger: Ledger, job: AnchorJob, w3: Web3, anvil: str, ledger_anchor: Contract,
    ledger_id: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    _, _, _, seqs = await anchored_epoch(ledger, job, w3)
    assert (await integrity.audit(ledger.engine, ledger_id, onchain=chain_reader(job.client))).ok
    await rewrite_epoch_consistently(ledger, ledger_id, seqs)
    # against the database alone the forgery is consistent...
    assert (await integrity.audit(ledger.engine, ledger_id, alarm=False)).ok
    bundle = await entry_proof_bundle(ledger, seqs[1])  # the proof API serves it
    assert bundle["leaf"]["amount"] == str(40 + MILLION)
    # ...the self-audit reading the contract finds it
    report = await integrity.audit(ledger.engine, ledger_id, onchain=chain_reader(job.client))
    assert [f.epoch for f in report.findings] == [1]
    assert "the contract holds header 0x" in report.findings[0].detail
    # and the pinned auditor refuses the bundle
    path, trust = tmp_path / "bundle.json", tmp_path / "trust.json"
    path.write_text(json.dumps(bundle))
    trust.write_text(
        json.dumps(Trust(w3.eth.chain_id, ledger_anchor.address, ledger_id, 2).to_json())
    )
    assert verify_main("verify", [str(path), "--trust", str(trust), "--rpc", anvil]) == 1
    assert "the contract holds another header for epoch 1" in capsys.readouterr().err


@pytest.fixture
def cli_env(
    monkeypatch: pytest.MonkeyPatch, db_url: str, anvil: str, ledger_anchor: Contract,
    ledger_id: bytes,
) -> Iterator[None]:  # fmt: skip
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("ETH_RPC_URL", anvil)
    monkeypatch.setenv("VALUEOS_ANCHOR_CONTRACT", ledger_anchor.address)
    monkeypatch.setenv("VALUEOS_LEDGER_ID", "0x" + ledger_id.hex())
    cached = (database_settings, epoch_settings, anchor_settings)  # read once per process
    for settings in cached:
        settings.cache_clear()
    yield
    for settings in cached:
        settings.cache_clear()


async def test_valueos_audit_on_demand_reports_alarms_and_acknowledges(
    ledger: Ledger, job: AnchorJob, w3: Web3, ledger_id: bytes, cli_env: None,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    _, _, _, seqs = await anchored_epoch(ledger, job, w3)
    await rewrite_epoch_consistently(ledger, ledger_id, seqs)
    capsys.readouterr()
    code, out = await run_cli(capsys, ["--epochs", "1..1"])
    assert code == 1
    report = json.loads(out)
    assert report["compared_with_chain"] is True and report["epochs"] == [1, 1]
    assert "the contract holds header" in report["findings"][0]["detail"]
    code, out = await run_cli(capsys, ["alarms"])
    assert code == 1 and json.loads(out)[0]["epoch"] == 1
    code, out = await run_cli(capsys, ["ack", "--by", "alice", "--reason", "investigating"])
    assert code == 0 and json.loads(out)["acknowledged"]
    assert (await run_cli(capsys, ["alarms"]))[0] == 0


async def run_cli(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str]:
    """``valueos audit ARGV`` in a thread (the command runs its own event loop)."""
    code = await asyncio.to_thread(audit_main, "audit", argv)
    return code, capsys.readouterr().out
