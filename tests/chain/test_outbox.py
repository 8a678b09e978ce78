"""The on-chain transaction outbox against a real anvil and a real PostgreSQL.

The crash tests run a real worker process (``tests.chain.outbox_driver``) that SIGKILLs itself
right after one step, then a fresh process that must finish the job: exactly one transaction is
mined whatever the point. The rows carry a plain value transfer, so "exactly once" is also the
recipient's balance.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from hexbytes import HexBytes
from web3 import Web3

from chain.evm.client import EvmClient, connect
from chain.evm.outbox import Outbox
from core import chain_txs
from core.chain_txs import TxStatus
from core.epochs import raw_connection
from core.ledger import Ledger
from tests.chain.conftest import await_automine, rpc
from tests.chain.outbox_driver import PURPOSE, RECIPIENT, VALUE_WEI
from tests.conftest import settings_for

pytestmark = pytest.mark.chain

ROOT = Path(__file__).resolve().parents[2]
POINTS = ("enqueued", "signed", "sent", "broadcast", "confirmed")


@pytest.fixture
def signer(dev_keys: list[str]) -> LocalAccount:
    account: LocalAccount = Account.from_key(dev_keys[2])  # not the anchor tests' signer
    return account


@pytest.fixture
async def outbox(ledger: Ledger, anvil: str, signer: LocalAccount) -> AsyncIterator[Outbox]:
    client = EvmClient(await_automine(connect(anvil)), signer)
    try:
        yield Outbox(ledger.engine, client, confirmations=2, bump_after_s=None)
    finally:
        await client.w3.provider.disconnect()


async def enqueue(ledger: Ledger, w3: Web3, ref: str, to: str = RECIPIENT) -> int:
    async with raw_connection(ledger.engine) as conn:
        return await chain_txs.enqueue(
            conn, purpose=PURPOSE, ref=ref, chain_id=w3.eth.chain_id, to_address=to,
            data=b"", value_wei=VALUE_WEI,
        )  # fmt: skip


async def row(ledger: Ledger, tx_id: int) -> chain_txs.ChainTx:
    tx = await chain_txs.get_tx(ledger.engine, tx_id)
    assert tx is not None
    return tx


def drive(db: str, rpc_url: str, key: str, ref: str, die_after: str | None) -> int:
    """One worker process; its exit code (-9 when it killed itself)."""
    command = [sys.executable, "-m", "tests.chain.outbox_driver", "--db", db, "--rpc", rpc_url]
    command += ["--ref", ref] + (["--die-after", die_after] if die_after else [])
    env = {**os.environ, "OUTBOX_TEST_KEY": key, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, env=env, cwd=ROOT, timeout=120, check=False)  # noqa: S603
    return done.returncode


@pytest.mark.slow
@pytest.mark.parametrize("point", POINTS)
async def test_a_worker_killed_after_any_step_sends_exactly_one_transaction(
    point: str, db_url: str, ledger: Ledger, anvil: str, w3: Web3, signer: LocalAccount,
) -> None:  # fmt: skip
    key = "0x" + bytes(signer.key).hex()
    nonce = w3.eth.get_transaction_count(signer.address)
    balance = w3.eth.get_balance(RECIPIENT)

    killed = await asyncio.to_thread(drive, db_url, anvil, key, "crash", point)
    assert killed == -signal.SIGKILL, f"the worker was to die after {point}"
    tx = await chain_txs.get_tx_by_ref(ledger.engine, PURPOSE, "crash")
    assert tx is not None
    died_in = {"enqueued": "BUILT", "signed": "SIGNED", "sent": "SIGNED"}.get(point, point.upper())
    assert tx.status == died_in

    assert await asyncio.to_thread(drive, db_url, anvil, key, "crash", None) == 0
    final = await chain_txs.get_tx_by_ref(ledger.engine, PURPOSE, "crash")
    assert final is not None and final.status is TxStatus.FINALIZED and final.tx_hash
    assert w3.eth.get_transaction_count(signer.address) == nonce + 1, "exactly one mined"
    assert w3.eth.get_balance(RECIPIENT) == balance + VALUE_WEI
    receipt = w3.eth.get_transaction_receipt(HexBytes(final.tx_hash))
    assert receipt["from"] == signer.address and receipt["status"] == 1
    assert final.nonce == nonce and final.attempts == 1


async def test_the_same_intent_is_one_row_and_another_call_under_its_name_is_refused(
    ledger: Ledger, w3: Web3
) -> None:
    first = await enqueue(ledger, w3, "same")
    assert await enqueue(ledger, w3, "same") == first
    with pytest.raises(ValueError, match="exists with another call"):
        await enqueue(ledger, w3, "same", to="0x000000000000000000000000000000000000bEEF")
    async with raw_connection(ledger.engine) as conn:
        assert await conn.fetchval("SELECT count(*) FROM chain_txs") == 1


@pytest.fixture
def manual_mining(w3: Web3) -> Any:
    rpc(w3, "evm_setAutomine", False)
    try:
        yield
    finally:
        rpc(w3, "anvil_dropAllTransactions")
        rpc(w3, "evm_setAutomine", True)


@pytest.mark.usefixtures("manual_mining")
async def test_a_dropped_transaction_is_sent_again_with_the_same_bytes(
    ledger: Ledger, outbox: Outbox, w3: Web3
) -> None:
    tx_id = await enqueue(ledger, w3, "dropped")
    await outbox.run_pass(PURPOSE)
    sent = await row(ledger, tx_id)
    assert sent.status is TxStatus.BROADCAST and sent.tx_hash is not None
    assert await outbox.client.known(sent.tx_hash)

    rpc(w3, "anvil_dropTransaction", "0x" + sent.tx_hash.hex())  # the node forgets it
    assert not await outbox.client.known(sent.tx_hash)
    await outbox.run_pass(PURPOSE)
    assert await outbox.client.known(sent.tx_hash), "the same bytes were sent again"
    rpc(w3, "evm_mine")
    await outbox.run_pass(PURPOSE)
    mined = await row(ledger, tx_id)
    assert mined.status is TxStatus.CONFIRMED and mined.tx_hash == sent.tx_hash


async def test_a_reorg_that_drops_the_block_sends_the_transaction_again(
    ledger: Ledger, outbox: Outbox, w3: Web3
) -> None:
    tx_id = await enqueue(ledger, w3, "reorged")
    await outbox.run_pass(PURPOSE)
    first = await row(ledger, tx_id)
    assert first.status is TxStatus.CONFIRMED and first.block_number is not None
    rpc(w3, "anvil_reorg", w3.eth.block_number - first.block_number + 1, [])
    assert w3.eth.get_block(first.block_number)["hash"] != first.block_hash

    steps = await outbox.run_pass(PURPOSE)  # reorg noticed, the same bytes sent (automine)
    assert (tx_id, TxStatus.BROADCAST) in steps
    rpc(w3, "anvil_mine", 2)
    await outbox.run_pass(PURPOSE)
    final = await row(ledger, tx_id)
    assert final.status is TxStatus.FINALIZED and final.tx_hash == first.tx_hash
    assert final.block_hash != first.block_hash
    async with raw_connection(ledger.engine) as conn:
        details = await conn.fetch("SELECT detail FROM chain_tx_events WHERE tx_id = $1", tx_id)
    assert f"reorg: block {first.block_number} replaced" in [d[0] for d in details]


async def test_workers_sharing_a_signer_never_use_one_nonce_twice(
    db_url: str, ledger: Ledger, anvil: str, w3: Web3, signer: LocalAccount
) -> None:
    count, workers = 12, 4
    ids = [await enqueue(ledger, w3, f"many-{i}") for i in range(count)]
    start = w3.eth.get_transaction_count(signer.address)
    balance = w3.eth.get_balance(RECIPIENT)
    ledgers = [Ledger.connect(settings_for(db_url)) for _ in range(workers)]  # own pools
    boxes = [
        Outbox(led.engine, EvmClient(connect(anvil), signer), confirmations=1, bump_after_s=None)
        for led in ledgers
    ]
    try:
        for _ in range(10):
            await asyncio.gather(*(box.run_pass(PURPOSE) for box in boxes))
            rpc(w3, "evm_mine")
            rows = [await row(ledger, i) for i in ids]
            if all(r.status is TxStatus.FINALIZED for r in rows):
                break
    finally:
        for box, led in zip(boxes, ledgers, strict=True):
            await box.client.w3.provider.disconnect()
            await led.close()
    assert [r.status for r in rows] == [TxStatus.FINALIZED] * count
    assert sorted(r.nonce for r in rows) == list(range(start, start + count))  # type: ignore[type-var]
    assert w3.eth.get_transaction_count(signer.address) == start + count
    assert w3.eth.get_balance(RECIPIENT) == balance + count * VALUE_WEI

    async with raw_connection(ledger.engine) as conn:  # the database refuses a reused nonce
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute("UPDATE chain_txs SET nonce = $1 WHERE id = $2", start, ids[1])


async def test_a_call_the_contract_refuses_is_rejected_unsigned(
    ledger: Ledger, outbox: Outbox, w3: Web3, signer: LocalAccount, ledger_anchor: Any
) -> None:
    """anchor() of epoch 5 on a fresh LedgerAnchor reverts (EpochOutOfOrder): the outbox asks
    the node first, so nothing is signed, no nonce is spent, and the row says why."""
    data = bytes(HexBytes(ledger_anchor.encode_abi("anchor", args=[5, b"\0" * 32, b"\1" * 32,
                                                                     b"\2" * 32, 1, 1, 1])))  # fmt: skip
    nonce = w3.eth.get_transaction_count(signer.address)
    async with raw_connection(ledger.engine) as conn:
        tx_id = await chain_txs.enqueue(
            conn, purpose=PURPOSE, ref="refused", chain_id=w3.eth.chain_id,
            to_address=ledger_anchor.address, data=data,
        )  # fmt: skip
    assert await outbox.run_pass(PURPOSE) == [(tx_id, TxStatus.REJECTED)]
    refused = await row(ledger, tx_id)
    assert refused.nonce is None and refused.raw_tx is None and refused.tx_hash is None
    assert refused.last_error is not None and "reverts" in refused.last_error
    assert w3.eth.get_transaction_count(signer.address, "pending") == nonce
    assert await outbox.run_pass(PURPOSE) == []  # terminal: its client decides
