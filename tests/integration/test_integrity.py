"""A lying operator (or anyone with write access to the database) against the sealer, the
proofs and the self-audit, on a real PostgreSQL.

Tampering is done as the database superuser with triggers off (``session_replication_role``),
the way an operator with direct access would: the ledger's own append-only triggers are what
such a person bypasses first. Each test gets its own database (sealing is global to a ledger).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pytest

from core import integrity
from core.epochs import compute_roots, get_roots, raw_connection, seal_open_epoch
from core.errors import LedgerIntegrityError, ReasonRequired, UnknownEntry
from core.ledger import Ledger
from core.proofs import entry_proof_bundle
from core.types import Actor, Role
from jobs.bridge_out import bridge_out_pass
from tests.conftest import World, make_world
from tests.support import raw_connect

pytestmark = pytest.mark.integration

LEDGER_ID = b"\x11" * 32
MILLION = 100_000_000  # 1,000,000.00 at scale 2


async def tamper(ledger: Ledger, *statements: tuple[str, Any]) -> None:
    """Run ``(sql, *args)`` statements as the superuser with every trigger off."""
    conn = await raw_connect(ledger.engine.url.render_as_string(hide_password=False))
    try:
        await conn.execute("SET session_replication_role = replica")
        for sql, *args in statements:
            await conn.execute(sql, *args)
    finally:
        await conn.close()


async def fetchval(ledger: Ledger, sql: str, *args: Any) -> Any:
    async with raw_connection(ledger.engine) as conn:
        return await conn.fetchval(sql, *args)


@dataclass
class Sealed:
    """Epoch 1 sealed and hashed (a, b, c funded, a few payments), epoch 2 open with more."""

    world: World
    a: int
    b: int
    c: int
    e2_seqs: list[int]


async def pay(world: World, src: int, dst: int, amount: int) -> list[int]:
    op = await world.ledger.transfer(source=src, destination=dst, asset=world.asset, amount=amount)
    return [e.seq for e in op.entries]


@pytest.fixture
async def sealed(fresh: Ledger) -> Sealed:
    world = await make_world(fresh)
    a, b, c = [await world.funded(10_000) for _ in range(3)]
    for src, dst in ((a, b), (b, c), (c, a), (a, b)):
        await pay(world, src, dst, 100)
    assert await seal_open_epoch(fresh.engine) == 1
    await compute_roots(fresh.engine, 1, LEDGER_ID)
    e2 = await pay(world, b, c, 7) + await pay(world, c, a, 3)
    return Sealed(world, a, b, c, e2)


async def last_seq_of(ledger: Ledger, account: int, epoch: int) -> int:
    seq: int = await fetchval(
        ledger,
        "SELECT max(seq) FROM ledger_entries WHERE account_id = $1 AND epoch = $2",
        account,
        epoch,
    )
    return seq


# --------------------------------------------------------------------------- the sealer


async def seal_two(ledger: Ledger) -> None:
    assert await seal_open_epoch(ledger.engine) == 2
    await compute_roots(ledger.engine, 2, LEDGER_ID)


async def test_honest_epochs_seal_from_the_anchored_past(sealed: Sealed) -> None:
    ledger = sealed.world.ledger
    await seal_two(ledger)
    roots = await get_roots(ledger.engine, 2)
    assert roots is not None and roots.leaf_count == 4
    report = await integrity.audit(ledger.engine, LEDGER_ID)
    assert report.ok and report.epochs == 2 and report.entries == roots.last_seq


async def test_balance_after_edited_in_a_sealed_epoch_stops_the_next_seal(sealed: Sealed) -> None:
    ledger = sealed.world.ledger
    seq = await last_seq_of(ledger, sealed.b, 1)
    await tamper(
        ledger,
        (
            "UPDATE ledger_entries SET balance_after = balance_after + $2 WHERE seq = $1",
            seq,
            MILLION,
        ),
    )
    with pytest.raises(
        LedgerIntegrityError, match=r"balances of epoch 1 as the rows hold them"
    ) as e:
        await seal_two(ledger)
    assert e.value.details["account_id"] == sealed.b
    assert f"first differing leaf: account {sealed.b}" in e.value.message
    assert await get_roots(ledger.engine, 2) is None  # nothing stored, nothing to anchor


async def test_a_consistent_forgery_of_amount_balance_after_and_cache_is_caught(
    sealed: Sealed,
) -> None:
    """The forger adds 1,000,000.00 to b's last entry of epoch 1 (amount and balance_after),
    to every later balance_after of b and to b's cached balance: reconcile would pass."""
    ledger = sealed.world.ledger
    seq = await last_seq_of(ledger, sealed.b, 1)
    await tamper(
        ledger,
        ("UPDATE ledger_entries SET amount = amount + $2 WHERE seq = $1", seq, MILLION),
        (
            "UPDATE ledger_entries SET balance_after = balance_after + $3 "
            "WHERE account_id = $1 AND seq >= $2",
            sealed.b, seq, MILLION,
        ),
        ("UPDATE balances SET posted = posted + $2 WHERE account_id = $1", sealed.b, MILLION),
    )  # fmt: skip
    assert not [d for d in await ledger.reconcile() if d.subject == "account"]
    with pytest.raises(LedgerIntegrityError, match=f"first differing leaf: account {sealed.b}"):
        await seal_two(ledger)


async def test_an_edited_cached_balance_stops_the_seal(sealed: Sealed) -> None:
    ledger = sealed.world.ledger
    await tamper(
        ledger, ("UPDATE balances SET posted = posted + 5 WHERE account_id = $1", sealed.c)
    )
    with pytest.raises(LedgerIntegrityError, match=f"cached balance of account {sealed.c}"):
        await seal_two(ledger)


@pytest.mark.parametrize("column", ["amount", "balance_after"])
async def test_an_edited_entry_of_the_epoch_being_sealed_stops_the_seal(
    sealed: Sealed, column: str
) -> None:
    ledger = sealed.world.ledger
    seq = sealed.e2_seqs[1]
    await tamper(ledger, (f"UPDATE ledger_entries SET {column} = {column} + 1 WHERE seq = $1", seq))
    with pytest.raises(LedgerIntegrityError, match=f"entry {seq} of epoch 2"):
        await seal_two(ledger)


async def test_a_forged_row_past_the_last_seq_stops_sealing_and_fails_writes_clearly(
    sealed: Sealed,
) -> None:
    ledger, world = sealed.world.ledger, sealed.world
    nxt: int = await fetchval(ledger, "SELECT last_value + 1 FROM ledger_seq")
    row = (
        "INSERT INTO ledger_entries (seq, operation_id, account_id, asset, amount, "
        "balance_after, epoch, created_at) SELECT $1, operation_id, account_id, asset, amount, "
        "balance_after, epoch, created_at FROM ledger_entries WHERE seq = $2"
    )
    await tamper(ledger, (row, nxt + 1000, sealed.e2_seqs[0]), (row, nxt + 1, sealed.e2_seqs[0]))
    with pytest.raises(LedgerIntegrityError, match=r"past the last seq the ledger allocated"):
        await seal_open_epoch(ledger.engine)
    assert await fetchval(ledger, "SELECT status FROM epochs WHERE id = 2") == "OPEN"
    # the write whose seq the forged row took: an integrity error, not a 409 conflict
    with pytest.raises(LedgerIntegrityError, match="never allocated"):
        await pay(world, sealed.a, sealed.b, 1)


# --------------------------------------------------------------------------- proofs


async def test_a_deleted_row_of_a_sealed_epoch_is_an_integrity_error(sealed: Sealed) -> None:
    ledger = sealed.world.ledger
    seq = await last_seq_of(ledger, sealed.a, 1)
    await entry_proof_bundle(ledger, seq)
    await tamper(ledger, ("DELETE FROM ledger_entries WHERE seq = $1", seq))
    with pytest.raises(LedgerIntegrityError, match="in the sealed tree of epoch 1 but its row"):
        await entry_proof_bundle(ledger, seq)
    with pytest.raises(UnknownEntry):  # a seq nobody ever had is still a plain 404
        await entry_proof_bundle(ledger, 10**9)


async def test_a_row_inserted_into_a_sealed_epochs_range_is_an_integrity_error(
    sealed: Sealed,
) -> None:
    """A row in epoch 1's seq range that names the open epoch 2 (it answered 409 before)."""
    ledger = sealed.world.ledger
    seq = await last_seq_of(ledger, sealed.a, 1)
    await tamper(
        ledger,
        ("DELETE FROM ledger_entries WHERE seq = $1", seq),
        (
            "INSERT INTO ledger_entries (seq, operation_id, account_id, asset, amount, "
            "balance_after, epoch, created_at) SELECT $1, operation_id, account_id, asset, "
            "amount, balance_after, 2, created_at FROM ledger_entries WHERE seq = $2",
            seq, sealed.e2_seqs[0],
        ),
    )  # fmt: skip
    with pytest.raises(LedgerIntegrityError, match="lies in the seq range of sealed epoch 1"):
        await entry_proof_bundle(ledger, seq)


# --------------------------------------------------------------------------- self-audit

FLIPS = {
    "root row": (
        "UPDATE epoch_tree_levels SET nodes = set_byte(nodes, 5, get_byte(nodes, 5) # 1) "
        "WHERE epoch = 1 AND tree = 1 AND depth = 0",
        "stored entries tree the root row differs",
    ),
    "inner level": (
        "UPDATE epoch_tree_levels SET nodes = set_byte(nodes, 40, get_byte(nodes, 40) # 1) "
        "WHERE epoch = 1 AND tree = 2 AND depth = 1",
        "stored balances tree level 1 differs",
    ),
    "epoch_roots row": (
        "UPDATE epoch_roots SET entries_root = set_byte(entries_root, 0, "
        "get_byte(entries_root, 0) # 1) WHERE epoch = 1",
        "stored entries_root differs",
    ),
}


@pytest.mark.parametrize("name", sorted(FLIPS))
async def test_the_self_audit_finds_a_flipped_byte_in_stored_trees_and_roots(
    sealed: Sealed, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = sealed.world.ledger
    assert (await integrity.audit(ledger.engine, LEDGER_ID)).ok
    sql, message = FLIPS[name]
    await tamper(ledger, (sql,))
    with caplog.at_level(logging.ERROR, logger="core.integrity"):
        report = await integrity.audit(ledger.engine, LEDGER_ID)
    assert [f.epoch for f in report.findings] == [1]
    assert message in report.findings[0].detail
    assert any("INTEGRITY ALARM" in r.message and "epoch 1" in r.message for r in caplog.records)
    alarms = await integrity.open_alarms(ledger.engine)
    assert len(alarms) == 1 and alarms[0].source == "audit" and alarms[0].epoch == 1
    assert await integrity.paused(ledger.engine)


async def test_the_self_audit_names_the_first_differing_leaf_of_deleted_and_inserted_rows(
    sealed: Sealed,
) -> None:
    ledger = sealed.world.ledger
    deleted = await last_seq_of(ledger, sealed.c, 1)
    await tamper(ledger, ("DELETE FROM ledger_entries WHERE seq = $1", deleted))
    report = await integrity.audit(ledger.engine, LEDGER_ID, alarm=False)
    assert f"entry seq {deleted}" in [f.first_leaf for f in report.findings]
    # a row inserted into a seq hole of epoch 1 (the sequence skips a value there)
    await tamper(
        ledger,
        (
            "INSERT INTO ledger_entries (seq, operation_id, account_id, asset, amount, "
            "balance_after, epoch, created_at) SELECT $1, operation_id, account_id, asset, "
            "amount, balance_after, 1, created_at FROM ledger_entries WHERE seq = $2",
            deleted, sealed.e2_seqs[0],
        ),
    )  # fmt: skip
    report = await integrity.audit(ledger.engine, LEDGER_ID, first=1, last=1, alarm=False)
    assert report.epochs == 1 and report.findings
    assert report.findings[0].first_leaf == f"entry seq {deleted}"


async def test_the_self_audit_finds_an_amount_edit_the_sealer_cannot_see(sealed: Sealed) -> None:
    """An amount changed alone (balance_after and the cache untouched) in an older epoch."""
    ledger = sealed.world.ledger
    await seal_two(ledger)
    seq = await last_seq_of(ledger, sealed.a, 1)
    await tamper(ledger, ("UPDATE ledger_entries SET amount = amount + 1 WHERE seq = $1", seq))
    report = await integrity.audit(ledger.engine, LEDGER_ID)
    assert (report.findings[0].epoch, report.findings[0].first_leaf) == (1, f"entry seq {seq}")
    assert report.epochs == 2


async def test_alarms_pause_until_acknowledged_with_a_reason_in_the_audit_log(
    fresh: Ledger,
) -> None:
    engine = fresh.engine
    assert not await integrity.paused(engine)
    first = await integrity.raise_alarm(engine, "audit", "epoch 3: test", epoch=3)
    assert first is not None
    assert await integrity.raise_alarm(engine, "audit", "epoch 3: test", epoch=3) is None
    assert await integrity.paused(engine)
    ops = Actor("operator:alice", Role.ADMIN)
    with pytest.raises(ReasonRequired):
        await integrity.acknowledge(engine, ops, " ")
    assert await integrity.acknowledge(engine, ops, "restored epoch 3 from backup") == [first.id]
    assert not await integrity.paused(engine)
    record = await fetchval(
        fresh,
        "SELECT actor_id || ' ' || reason FROM audit_log WHERE action = 'integrity.acknowledge' "
        "AND entity_id = $1",
        str(first.id),
    )
    assert record == "operator:alice restored epoch 3 from backup"


class _NoOutbox:
    """Test double of the bridge's outbox: any use fails the test (nothing may be sent)."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the outbox was used ({name}) while an integrity alarm is open")


async def test_bridge_mints_pause_while_an_alarm_is_open(fresh: Ledger) -> None:
    await integrity.raise_alarm(fresh.engine, "audit", "epoch 1: test", epoch=1)

    async def minted(token: str, bridge_id: bytes) -> bool:
        raise AssertionError("no mint is looked at")

    result = await bridge_out_pass(fresh, _NoOutbox(), minted)  # type: ignore[arg-type]
    assert result.paused and result.steps == 0 and result.carriers == 0


async def test_reconcile_checks_the_running_balance_after_sequence(sealed: Sealed) -> None:
    """A middle entry's balance_after edited: the cache, the sums and the account's last
    balance_after still agree, so only the running sequence shows it."""
    ledger = sealed.world.ledger
    assert await ledger.reconcile() == []
    first: int = await fetchval(
        ledger, "SELECT min(seq) FROM ledger_entries WHERE account_id = $1", sealed.b
    )
    await tamper(
        ledger,
        ("UPDATE ledger_entries SET balance_after = balance_after + 9 WHERE seq = $1", first),
    )
    drifts = await ledger.reconcile()
    assert [(d.subject, d.id, d.field) for d in drifts] == [("entry", first, "balance_after")]
    assert drifts[0].found == drifts[0].expected + 9


# ------------------------------------------------------------------ balance commitments


async def commitment_rows(ledger: Ledger, epoch: int) -> dict[int, tuple[int, bytes]]:
    async with raw_connection(ledger.engine) as conn:
        rows = await conn.fetch(
            "SELECT account_id, entry_count, entries_hash FROM balance_commitments "
            "WHERE epoch = $1",
            epoch,
        )
    return {r[0]: (r[1], bytes(r[2])) for r in rows}


async def test_the_self_audit_checks_every_balance_commitment_row(sealed: Sealed) -> None:
    """A commitment row of a sealed epoch whose leaves are already stored: rewritten,
    deleted, or added for an account without entries in that epoch (its values copied from
    the row before, so the epoch's leaves are unchanged). Only the self-audit looks at the
    rows of past epochs; each case is one finding naming the epoch and the account."""
    ledger = sealed.world.ledger
    await seal_two(ledger)
    assert (await integrity.audit(ledger.engine, LEDGER_ID)).ok
    rows = await commitment_rows(ledger, 2)
    assert set(rows) >= {sealed.a, sealed.b, sealed.c}
    flipped = min(rows)
    await tamper(
        ledger,
        (
            "UPDATE balance_commitments SET entries_hash = set_byte(entries_hash, 31, "
            "get_byte(entries_hash, 31) # 1) WHERE account_id = $1 AND epoch = 2",
            flipped,
        ),
    )
    report = await integrity.audit(ledger.engine, LEDGER_ID, alarm=False)
    assert [(f.epoch, f.first_leaf) for f in report.findings] == [
        (2, f"balance commitment of account {flipped}")
    ]
    assert f"commitment row of account {flipped} (entry count" in report.findings[0].detail
    assert "differs from the one rebuilt" in report.findings[0].detail
    await tamper(
        ledger,
        (
            "UPDATE balance_commitments SET entries_hash = $2 WHERE account_id = $1 AND epoch = 2",
            flipped, rows[flipped][1],
        ),
    )  # fmt: skip
    assert (await integrity.audit(ledger.engine, LEDGER_ID, alarm=False)).ok

    deleted = max(rows)
    await tamper(
        ledger,
        ("DELETE FROM balance_commitments WHERE account_id = $1 AND epoch = 2", deleted),
    )
    report = await integrity.audit(ledger.engine, LEDGER_ID, alarm=False)
    assert [(f.epoch, f.first_leaf) for f in report.findings] == [
        (2, f"balance commitment of account {deleted}")
    ]
    assert f"commitment row of account {deleted} is missing" in report.findings[0].detail
    count, folded = rows[deleted]
    await tamper(
        ledger,
        (
            "INSERT INTO balance_commitments (account_id, epoch, entry_count, entries_hash) "
            "VALUES ($1, 2, $2, $3)",
            deleted, count, folded,
        ),
    )  # fmt: skip
    assert (await integrity.audit(ledger.engine, LEDGER_ID, alarm=False)).ok

    idle = min(set(await commitment_rows(ledger, 1)) - set(rows))  # no entries in epoch 2
    count, folded = (await commitment_rows(ledger, 1))[idle]
    await tamper(
        ledger,
        (
            "INSERT INTO balance_commitments (account_id, epoch, entry_count, entries_hash) "
            "VALUES ($1, 2, $2, $3)",
            idle, count, folded,
        ),
    )  # fmt: skip
    report = await integrity.audit(ledger.engine, LEDGER_ID)
    assert [(f.epoch, f.first_leaf) for f in report.findings] == [
        (2, f"balance commitment of account {idle}")
    ]
    assert f"commitment row of account {idle} is extra" in report.findings[0].detail
    alarms = await integrity.open_alarms(ledger.engine)
    assert [(a.source, a.epoch) for a in alarms] == [("audit", 2)]
    assert await integrity.paused(ledger.engine)


async def test_a_partial_audit_checks_the_commitments_it_starts_from(sealed: Sealed) -> None:
    """An audit of epoch 2 alone starts from epoch 1's balances as the rows give them: a
    rewritten commitment row of epoch 1 is named there, not blamed on epoch 2."""
    ledger = sealed.world.ledger
    await seal_two(ledger)
    assert (await integrity.audit(ledger.engine, LEDGER_ID, first=2, alarm=False)).ok
    await tamper(
        ledger,
        (
            "UPDATE balance_commitments SET entry_count = entry_count + 1 "
            "WHERE account_id = $1 AND epoch = 1",
            sealed.a,
        ),
    )
    report = await integrity.audit(ledger.engine, LEDGER_ID, first=2, alarm=False)
    assert (report.findings[0].epoch, report.findings[0].first_leaf) == (
        1, f"balance of account {sealed.a}",
    )  # fmt: skip
    assert "where this audit starts" in report.findings[0].detail
    full = await integrity.audit(ledger.engine, LEDGER_ID, alarm=False)
    assert [(f.epoch, f.first_leaf) for f in full.findings] == [
        (1, f"balance commitment of account {sealed.a}")
    ]
