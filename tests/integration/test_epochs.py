"""Epoch sealing on a real PostgreSQL: roots, stored levels, proofs, and sealing under load.

Each test gets its own database: sealing is global to a ledger, so tests must not share one.
"""

from __future__ import annotations

import asyncio
import itertools
import random

import pytest

from core.anchors import get_anchor
from core.epochs import (
    EPOCH_LOCK_KEY,
    EpochRoots,
    build_epoch,
    compute_pending_roots,
    compute_roots,
    load_leaves,
    open_epoch,
    raw_connection,
    seal_open_epoch,
)
from core.errors import EpochNotSealed, LedgerIntegrityError, NotFound, UnknownEntry
from core.ledger import Ledger
from core.proofs import balance_proof_bundle, entry_proof_bundle, list_anchors
from merkle.leaves import BalanceLeaf, EntryLeaf, balance_tree, entry_tree, header_hash
from merkle.tree import EMPTY_ROOT, keccak256, verify
from tests.conftest import World, make_world
from tests.support import raw_connect

pytestmark = pytest.mark.integration

LEDGER_ID = b"\x11" * 32


async def _entry_rows(ledger: Ledger, epoch: int) -> list[EntryLeaf]:
    async with raw_connection(ledger.engine) as conn:
        rows = await conn.fetch(
            "SELECT seq, operation_id, account_id, asset, amount, balance_after "
            "FROM ledger_entries WHERE epoch = $1 ORDER BY seq",
            epoch,
        )
    return [EntryLeaf(LEDGER_ID, epoch, *r) for r in rows]


async def _pay_around(world: World, accounts: list[int], n: int, seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(n):
        a, b = rng.sample(accounts, 2)
        await world.ledger.transfer(source=a, destination=b, asset=world.asset, amount=1)


async def _balances_at(ledger: Ledger, cut: int) -> dict[int, int]:
    """Every account's balance at ``cut``, summed from the entries (not from balance_after)."""
    async with raw_connection(ledger.engine) as conn:
        rows = await conn.fetch(
            "SELECT account_id, sum(amount) FROM ledger_entries WHERE seq <= $1 GROUP BY 1", cut
        )
    return {r[0]: int(r[1]) for r in rows}


async def _from_genesis(ledger: Ledger, cut: int) -> dict[int, tuple[int, bytes]]:
    """Every account's (entry count, running hash) at ``cut``, folded from its first entry
    over the rows (each entry's ENTRY leaf with its own epoch), independently of the sealer."""
    async with raw_connection(ledger.engine) as conn:
        rows = await conn.fetch(
            "SELECT epoch, seq, operation_id, account_id, asset, amount, balance_after "
            "FROM ledger_entries WHERE seq <= $1 ORDER BY seq",
            cut,
        )
    folded: dict[int, tuple[int, bytes]] = {}
    for epoch, *fields in rows:
        count, h = folded.get(fields[2], (0, bytes(32)))
        folded[fields[2]] = (count + 1, keccak256(h + EntryLeaf(LEDGER_ID, epoch, *fields).hash()))
    return folded


async def _assert_balance_leaves_at_cut(ledger: Ledger, roots: EpochRoots) -> None:
    """The balance leaves of a sealed epoch, as loaded and as stored in its root, are the
    balances at the epoch's own cut, recomputed independently from the entries: the sum of
    each account's entries with seq <= cut, its last such seq, and their count and running
    hash folded from genesis."""
    async with raw_connection(ledger.engine) as conn:
        cut = await conn.fetchval("SELECT last_seq FROM epochs WHERE id = $1", roots.epoch)
        rows = await conn.fetch(
            "SELECT e.account_id, a.asset, max(e.seq), sum(e.amount) FROM ledger_entries e "
            "JOIN accounts a ON a.id = e.account_id WHERE e.seq <= $1 "
            "GROUP BY e.account_id, a.asset ORDER BY e.account_id",
            cut,
        )
        _, loaded = await load_leaves(conn, LEDGER_ID, roots.epoch)
    folded = await _from_genesis(ledger, cut)
    expected = [
        BalanceLeaf(LEDGER_ID, roots.epoch, seq, account, asset, int(total), *folded[account])
        for account, asset, seq, total in rows
    ]
    assert roots.cut_seq == cut
    assert loaded == expected, f"epoch {roots.epoch}: balance leaves are not those at seq {cut}"
    assert roots.balance_count == len(expected)
    assert roots.balances_root == balance_tree(expected).root, f"epoch {roots.epoch}"


def test_epoch_lock_key_matches_migration() -> None:
    from pathlib import Path

    text = (Path(__file__).parents[2] / "core/migrations/versions/0001_ledger.py").read_text()
    assert f"EPOCH_LOCK_KEY = {EPOCH_LOCK_KEY:#X}".replace("0X", "0x") in text


async def test_seal_computes_roots_header_chain_and_proofs(fresh: Ledger) -> None:
    world = await make_world(fresh)
    accounts = [await world.funded(1000) for _ in range(5)]
    await _pay_around(world, accounts, 7, seed=1)
    assert await open_epoch(fresh.engine) == 1
    assert await seal_open_epoch(fresh.engine) == 1
    assert await open_epoch(fresh.engine) == 2
    with pytest.raises(EpochNotSealed):
        await compute_roots(fresh.engine, 2, LEDGER_ID)
    r1 = await compute_roots(fresh.engine, 1, LEDGER_ID)
    assert await compute_roots(fresh.engine, 1, LEDGER_ID) == r1  # idempotent

    # an independent recomputation from the rows
    entries = await _entry_rows(fresh, 1)
    assert r1.leaf_count == len(entries) > 0
    assert r1.entries_root == entry_tree(entries).root
    assert (r1.first_seq, r1.last_seq) == (entries[0].seq, entries[-1].seq)
    last: dict[int, EntryLeaf] = {e.account_id: e for e in entries}
    folded = await _from_genesis(fresh, r1.last_seq)
    balances = [
        BalanceLeaf(LEDGER_ID, 1, e.seq, acc, e.asset_code, e.balance_after, *folded[acc])
        for acc, e in sorted(last.items())
    ]
    assert r1.balances_root == balance_tree(balances).root
    assert r1.header == header_hash(
        LEDGER_ID, 1, EMPTY_ROOT, r1.entries_root, r1.balances_root, r1.first_seq,
        r1.last_seq, r1.leaf_count,
    )  # fmt: skip

    # epoch 2 chains to 1; an account untouched in epoch 2 keeps its leaf (new epoch number)
    await _pay_around(world, accounts[:2], 3, seed=2)
    assert await seal_open_epoch(fresh.engine) == 2
    (r2,) = await compute_pending_roots(fresh.engine, LEDGER_ID)
    assert r2.prev_header == r1.header
    assert r2.balance_count == r1.balance_count

    # every entry's proof, served from the stored levels, verifies against the root
    for e in entries:
        bundle = await entry_proof_bundle(fresh, e.seq)
        assert bundle["leaf_hash"] == "0x" + e.hash().hex()
        proof = [bytes.fromhex(p[2:]) for p in bundle["proof"]]
        assert proof == entry_tree(entries).proof(entries.index(e))
        assert verify(r1.entries_root, e.hash(), proof)
        assert bundle["header"]["header_hash"] == "0x" + r1.header.hex()
        assert bundle["anchor"]["status"] == "SEALED"
    for acc in accounts:
        bundle = await balance_proof_bundle(fresh, acc, 2)
        leaf = bundle["leaf"]
        assert leaf["epoch"] == 2
        assert int(leaf["balance"]) == (await fresh.queries.balance(acc)).posted
        proof = [bytes.fromhex(p[2:]) for p in bundle["proof"]]
        assert verify(r2.balances_root, bytes.fromhex(bundle["leaf_hash"][2:]), proof)

    anchors = await list_anchors(fresh)
    assert [a["epoch"] for a in anchors] == [2, 1]
    record = await get_anchor(fresh.engine, 1)
    assert record is not None and record.status == "SEALED"


async def test_bundle_errors(fresh: Ledger) -> None:
    world = await make_world(fresh)
    acc = await world.funded(10)
    with pytest.raises(UnknownEntry):
        await entry_proof_bundle(fresh, 10**12)
    async with raw_connection(fresh.engine) as conn:
        seq = await conn.fetchval("SELECT max(seq) FROM ledger_entries")
    with pytest.raises(EpochNotSealed) as info:
        await entry_proof_bundle(fresh, seq)
    assert (info.value.code, info.value.status) == ("EPOCH_NOT_SEALED", 409)
    await seal_open_epoch(fresh.engine)
    with pytest.raises(EpochNotSealed):  # sealed, roots not computed yet
        await balance_proof_bundle(fresh, acc, 1)
    await compute_pending_roots(fresh.engine, LEDGER_ID)
    fresh_wallet = await world.user_wallet()
    untouched = next(iter(fresh_wallet.values()))
    with pytest.raises(NotFound):
        await balance_proof_bundle(fresh, untouched, 1)


async def test_roots_computed_late_hold_the_balances_at_each_epoch_cut(fresh: Ledger) -> None:
    """Roots are computed after later epochs were written to (the worker lags, or
    recovers after a crash): each epoch's balance leaves must still be the balances at
    its own cut, not the live ones."""
    world = await make_world(fresh)
    accounts = [await world.funded(1_000) for _ in range(4)]
    await _pay_around(world, accounts, 5, seed=3)
    assert await seal_open_epoch(fresh.engine) == 1
    await _pay_around(world, accounts, 6, seed=4)
    await fresh.transfer(source=accounts[0], destination=accounts[1], asset=world.asset, amount=9)
    assert await seal_open_epoch(fresh.engine) == 2
    # writes of the open epoch 3, before any root exists; one account is new in epoch 3
    await _pay_around(world, accounts, 4, seed=5)
    newcomer = await world.funded(7)
    roots = await compute_pending_roots(fresh.engine, LEDGER_ID)
    assert [r.epoch for r in roots] == [1, 2]
    live = {a: (await fresh.queries.balance(a)).posted for a in [*accounts, newcomer]}
    for r in roots:
        at_cut = await _balances_at(fresh, r.cut_seq)
        # the test means something only if the live balances moved on since the cut
        assert {a: at_cut.get(a, 0) for a in live} != live
        assert newcomer not in at_cut
        await _assert_balance_leaves_at_cut(fresh, r)


async def test_empty_epoch_anchors_zero_entries_root_and_unchanged_balances(fresh: Ledger) -> None:
    world = await make_world(fresh)
    await world.funded(5)
    assert await seal_open_epoch(fresh.engine, allow_empty=False) == 1
    assert await seal_open_epoch(fresh.engine, allow_empty=False) is None  # nothing to seal
    assert await seal_open_epoch(fresh.engine) == 2  # forced
    r1, r2 = await compute_pending_roots(fresh.engine, LEDGER_ID)
    assert (r2.entries_root, r2.first_seq, r2.last_seq, r2.leaf_count) == (EMPTY_ROOT, 0, 0, 0)
    assert r2.cut_seq == r1.cut_seq == r1.last_seq
    assert r2.balance_count == r1.balance_count > 0
    assert r2.balances_root != r1.balances_root  # same balances, epoch 2 in every leaf
    assert r2.prev_header == r1.header


def test_build_epoch_is_pure_and_rejects_unordered_leaves() -> None:
    leaves = [EntryLeaf(LEDGER_ID, 1, s, 1, 1, "USD", 5, 5) for s in (3, 2)]
    with pytest.raises(ValueError, match="ascend"):
        build_epoch(
            ledger_id=LEDGER_ID, epoch=1, prev_header=EMPTY_ROOT, prev_cut=0, entries=leaves,
            balances=[],
        )  # fmt: skip


async def test_writers_during_repeated_sealing_every_entry_in_exactly_one_epoch(
    fresh: Ledger,
) -> None:
    """Writers post continuously while the sealer seals over and over. Afterwards each entry
    is in exactly one sealed epoch's tree, the leaf counts add up to all entries, the seq
    ranges of the epochs never overlap, and the balances at the last cut are the balances."""
    world = await make_world(fresh)
    accounts = [await world.funded(10_000) for _ in range(8)]
    stop = asyncio.Event()
    enough = asyncio.Event()  # set by the writers once ``target`` entries are posted
    posted = 0
    target = 0

    async def writer(seed: int) -> None:
        nonlocal posted
        rng = random.Random(seed)
        while not stop.is_set():
            a, b = rng.sample(accounts, 2)
            await fresh.transfer(source=a, destination=b, asset=world.asset, amount=1)
            posted += 1
            if posted >= target:
                enough.set()

    async def sealer() -> list[int]:
        nonlocal target
        sealed = []
        for _ in range(15):
            # let some entries land in the open epoch, then seal it while writers keep going
            target = posted + 20
            enough.clear()
            await asyncio.wait_for(enough.wait(), timeout=60)
            epoch = await seal_open_epoch(fresh.engine)
            assert epoch is not None
            sealed.append(epoch)
        return sealed

    writers = [asyncio.create_task(writer(i)) for i in range(6)]
    try:
        sealed = await sealer()
    finally:
        stop.set()
        await asyncio.gather(*writers)
    final = await seal_open_epoch(fresh.engine)
    assert final is not None
    assert len(sealed) == 15
    roots = await compute_pending_roots(fresh.engine, LEDGER_ID)
    assert [r.epoch for r in roots] == list(range(1, final + 1))

    async with raw_connection(fresh.engine) as conn:
        total = await conn.fetchval("SELECT count(*) FROM ledger_entries")
        late = await conn.fetchval("SELECT count(*) FROM ledger_entries WHERE epoch > $1", final)
    assert late == 0
    assert sum(r.leaf_count for r in roots) == total
    nonempty = [r for r in roots if r.leaf_count]
    for a, b in itertools.pairwise(nonempty):
        assert a.last_seq < b.first_seq  # no late commit crossed a seal
    # each epoch's stored tree holds exactly its entries: rebuild from the rows and compare
    for r in roots:
        entries = await _entry_rows(fresh, r.epoch)
        assert len(entries) == r.leaf_count
        expected = entry_tree(entries).root if entries else EMPTY_ROOT
        assert expected == r.entries_root
    # every epoch's balances tree holds the balances at its own cut (computed after all
    # the writes, so a root built from later balances would show here)
    for r in roots:
        await _assert_balance_leaves_at_cut(fresh, r)
    # the last balances tree matches the live balances of every touched account
    last = roots[-1]
    for acc in accounts:
        bundle = await balance_proof_bundle(fresh, acc, last.epoch)
        assert int(bundle["leaf"]["balance"]) == (await fresh.queries.balance(acc)).posted
    assert await world.total() == 0


async def test_tampered_entry_no_longer_matches_the_sealed_root(fresh: Ledger) -> None:
    world = await make_world(fresh)
    a, b = await world.funded(100), await world.funded(100)
    op = await fresh.transfer(source=a, destination=b, asset=world.asset, amount=7)
    await seal_open_epoch(fresh.engine)
    await compute_pending_roots(fresh.engine, LEDGER_ID)
    seq = op.entries[0].seq
    good = await entry_proof_bundle(fresh, seq)
    conn = await raw_connect(await _url(fresh))
    try:
        await conn.execute("SET session_replication_role = replica")
        await conn.execute("UPDATE ledger_entries SET amount = amount - 1 WHERE seq = $1", seq)
    finally:
        await conn.close()
    with pytest.raises(LedgerIntegrityError):
        await entry_proof_bundle(fresh, seq)
    bad = await entry_proof_bundle(fresh, seq, check=False)
    assert bad["proof"] == good["proof"] and bad["leaf_hash"] != good["leaf_hash"]
    root = bytes.fromhex(bad["header"]["entries_root"][2:])
    proof = [bytes.fromhex(p[2:]) for p in bad["proof"]]
    assert not verify(root, bytes.fromhex(bad["leaf_hash"][2:]), proof)


async def _url(ledger: Ledger) -> str:
    return ledger.engine.url.render_as_string(hide_password=False)
