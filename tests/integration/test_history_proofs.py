"""History bundles: an account's entries between two sealed epochs and its balance proofs at
both ends. ``valueos verify`` proves them complete: the entries fold from the first balance
leaf's (entry count, entries hash) to exactly the second's. Omitted, inserted, reordered and
altered entries are rejected even when the forger keeps ``balance_after`` consistent.

Offline only here (the ends are sealed, not anchored); ``tests/chain/test_history_verify.py``
checks an anchored history with ``--rpc``."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from chain.evm.verify import main as verify_main
from core.epochs import (
    _store as store_built,
)
from core.epochs import (
    balances_v1_at,
    build_epoch,
    compute_pending_roots,
    load_entries,
    load_leaves,
    raw_connection,
    seal_open_epoch,
)
from core.errors import LedgerIntegrityError, ValidationError
from core.integrity import audit
from core.ledger import Ledger
from core.proofs import balance_proof_bundle, history_bundle
from merkle.leaves import balance_tree
from merkle.tree import EMPTY_ROOT
from tests.conftest import make_world

pytestmark = pytest.mark.integration

LEDGER_ID = b"\x11" * 32


async def three_epochs(ledger: Ledger) -> int:
    """Account ``a`` has entries in epochs 1, 2 and 3 (interleaved with other accounts')."""
    world = await make_world(ledger)
    a, b, c = [await world.funded(1_000) for _ in range(3)]
    for epoch in range(3):
        for i in range(3):
            await ledger.transfer(source=a, destination=b, asset=world.asset, amount=1 + i)
            await ledger.transfer(source=c, destination=a, asset=world.asset, amount=10 + epoch)
        assert await seal_open_epoch(ledger.engine) == epoch + 1
    await compute_pending_roots(ledger.engine, LEDGER_ID)
    return a


def run_verify(tmp_path: Path, bundle: dict[str, Any]) -> int:
    path = tmp_path / "history.json"
    path.write_text(json.dumps(bundle))
    return verify_main("verify", [str(path)])


def _shift(entries: list[dict[str, Any]], start: int, delta: int) -> None:
    """Keep balance_after consistent from ``start`` on after a forger's edit."""
    for e in entries[start:]:
        e["balance_after"] = str(int(e["balance_after"]) + delta)


def omit(b: dict[str, Any]) -> None:
    gone = b["entries"].pop(2)
    _shift(b["entries"], 2, -int(gone["amount"]))


def insert(b: dict[str, Any]) -> None:
    e = b["entries"]
    # after an entry whose successor is not the next seq (others' entries interleave)
    i = next(i for i in range(len(e) - 1) if e[i + 1]["seq"] > e[i]["seq"] + 1)
    fake = {**e[i], "seq": e[i]["seq"] + 1, "amount": "5"}
    fake["balance_after"] = str(int(e[i]["balance_after"]) + 5)
    e.insert(i + 1, fake)
    _shift(e, i + 2, 5)


def reorder(b: dict[str, Any]) -> None:
    e = b["entries"]
    e[1], e[2] = e[2], e[1]


def reorder_consistently(b: dict[str, Any]) -> None:
    """Listed out of seq order, each balance_after recomputed for the new order."""
    reorder(b)
    e = b["entries"]
    for i in (1, 2):
        e[i]["balance_after"] = str(int(e[i - 1]["balance_after"]) + int(e[i]["amount"]))


def swap_amounts(b: dict[str, Any]) -> None:
    """Two entries exchange amounts and operations, seqs stay ascending, balances consistent."""
    e = b["entries"]
    x, y = e[1], e[2]
    x["amount"], y["amount"] = y["amount"], x["amount"]
    x["operation_id"], y["operation_id"] = y["operation_id"], x["operation_id"]
    x["balance_after"] = str(int(e[0]["balance_after"]) + int(x["amount"]))


def alter_amount(b: dict[str, Any]) -> None:
    e = b["entries"]
    e[1]["amount"] = str(int(e[1]["amount"]) + 100)
    _shift(e, 1, 100)


def alter_amount_only(b: dict[str, Any]) -> None:
    b["entries"][1]["amount"] = str(int(b["entries"][1]["amount"]) + 100)


FORGERIES: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "omitted entry": (omit, "an entry is missing or added"),
    "inserted entry": (insert, "an entry is missing or added"),
    "reordered entries": (reorder, "balance_after"),
    "reordered entries, balances recomputed": (reorder_consistently, "entries out of order"),
    "reordered amounts": (swap_amounts, "do not fold to the anchored entries hash"),
    "altered amount, balances kept consistent": (
        alter_amount,
        "do not fold to the anchored entries hash",
    ),
    "altered amount": (alter_amount_only, "is not"),
    "last entry dropped": (
        lambda b: b["entries"].pop(),
        "an entry is missing or added",
    ),
    "entry moved to another epoch": (
        lambda b: b["entries"][0].update(epoch=b["entries"][0]["epoch"] + 1),
        "do not fold",
    ),
    "an end's entry count": (
        lambda b: (
            b["to"]["leaf"].update(entry_count=b["to"]["leaf"]["entry_count"] - 1),
            b["to"].pop("leaf_hash"),
        ),
        "the proof does not lead from this leaf",
    ),
    "the from end dropped": (lambda b: b.update({"from": None}), "balance_after"),
}


async def test_an_honest_history_verifies_and_every_forgery_is_rejected(
    fresh: Ledger, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    account = await three_epochs(fresh)
    bundle = await history_bundle(fresh, account, 1, 3)
    assert bundle["from"]["leaf"]["epoch"] == 1 and bundle["to"]["leaf"]["epoch"] == 3
    assert [e["epoch"] for e in bundle["entries"]] == [2] * 6 + [3] * 6
    assert run_verify(tmp_path, bundle) == 0
    out = capsys.readouterr().out
    assert "CONSISTENT: from: balance leaf is consistent with the balances root" in out
    assert "CONSISTENT: to: balance leaf" in out
    assert "COMPLETE: the 12 entries of account" in out
    assert "NOT CHECKED: the root against the chain" in out
    for name, (forge, reason) in FORGERIES.items():
        forged = copy.deepcopy(bundle)
        forge(forged)
        assert run_verify(tmp_path, forged) == 1, name
        err = capsys.readouterr().err
        assert reason in err, (name, err)


async def test_from_the_first_entry_and_the_counts_at_each_end(fresh: Ledger) -> None:
    account = await three_epochs(fresh)
    whole = await history_bundle(fresh, account, 0, 3)
    assert whole["from"] is None
    # funding (1 entry) + 6 per epoch
    assert len(whole["entries"]) == whole["to"]["leaf"]["entry_count"] == 19
    for epoch, count in ((1, 7), (2, 13), (3, 19)):
        leaf = (await balance_proof_bundle(fresh, account, epoch))["leaf"]
        assert leaf["entry_count"] == count
    with pytest.raises(ValidationError):
        await history_bundle(fresh, account, 2, 2)


async def test_a_row_rewritten_after_sealing_is_an_integrity_error(fresh: Ledger) -> None:
    """The server checks the fold before it serves: a forged row never leaves as a bundle."""
    account = await three_epochs(fresh)
    async with raw_connection(fresh.engine) as conn:
        seq = await conn.fetchval(
            "SELECT max(seq) FROM ledger_entries WHERE account_id = $1 AND epoch = 2", account
        )
        await conn.execute("ALTER TABLE ledger_entries DISABLE TRIGGER USER")
        await conn.execute("DELETE FROM ledger_entries WHERE seq = $1", seq)
        await conn.execute("ALTER TABLE ledger_entries ENABLE TRIGGER USER")
    with pytest.raises(LedgerIntegrityError, match="do not fold"):
        await history_bundle(fresh, account, 1, 3)


async def test_epochs_sealed_in_leaf_format_1_stay_provable_and_the_next_folds_from_genesis(
    fresh: Ledger, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A database upgraded by migration 0018 holds epochs whose BALANCE leaves are the 7-word
    format 1. Epoch 1 is stored here exactly as the sealer before 0018 did; epoch 2 is sealed
    by today's sealer on top of it: format 2, counts and hashes folded from genesis once."""
    world = await make_world(fresh)
    a, b = [await world.funded(1_000) for _ in range(2)]
    await fresh.transfer(source=a, destination=b, asset=world.asset, amount=5)
    assert await seal_open_epoch(fresh.engine) == 1
    async with raw_connection(fresh.engine) as conn, conn.transaction():
        entries = await load_entries(conn, LEDGER_ID, 1)
        cut = entries[-1].seq
        old = await balances_v1_at(conn, LEDGER_ID, 1, cut)
        built = build_epoch(
            ledger_id=LEDGER_ID, epoch=1, prev_header=EMPTY_ROOT, prev_cut=0, entries=entries,
            balances=old,
        )  # fmt: skip
        assert built.roots.balance_leaf_format == 1
        await store_built(conn, built, [])
    await fresh.transfer(source=b, destination=a, asset=world.asset, amount=2)
    assert await seal_open_epoch(fresh.engine) == 2
    (r2,) = await compute_pending_roots(fresh.engine, LEDGER_ID)
    assert r2.balance_leaf_format == 2
    async with raw_connection(fresh.engine) as conn:
        _, leaves = await load_leaves(conn, LEDGER_ID, 2)
    # the new leaves carry counts (funding + transfer + transfer) folded from genesis
    assert {x.account_id: x.entry_count for x in leaves}[a] == 3
    assert r2.balances_root == balance_tree(leaves).root

    old_bundle = await balance_proof_bundle(fresh, a, 1)
    assert "entry_count" not in old_bundle["leaf"]
    assert run_verify(tmp_path, old_bundle) == 0
    assert "CONSISTENT: balance leaf is consistent" in capsys.readouterr().out
    assert run_verify(tmp_path, await history_bundle(fresh, a, 0, 2)) == 0
    assert "COMPLETE: the 3 entries" in capsys.readouterr().out
    with pytest.raises(ValidationError, match="before balance leaves carried"):
        await history_bundle(fresh, a, 1, 2)
    for first in (None, 2):
        report = await audit(fresh.engine, LEDGER_ID, first=first, alarm=False)
        assert report.ok, report.findings


async def test_a_rewritten_commitment_row_stops_the_sealer_and_the_proof(fresh: Ledger) -> None:
    """``balance_commitments`` is checked like the balances: E-1's leaves as the rows give
    them (commitments included) must hash to its anchored tree."""
    account = await three_epochs(fresh)
    async with raw_connection(fresh.engine) as conn:
        await conn.execute("ALTER TABLE balance_commitments DISABLE TRIGGER USER")
        await conn.execute(
            "UPDATE balance_commitments SET entry_count = entry_count - 1 "
            "WHERE account_id = $1 AND epoch = 3",
            account,
        )
        await conn.execute("ALTER TABLE balance_commitments ENABLE TRIGGER USER")
    with pytest.raises(LedgerIntegrityError, match="no longer matches the sealed root"):
        await balance_proof_bundle(fresh, account, 3)
    world = await make_world(fresh)
    await world.funded(5)
    assert await seal_open_epoch(fresh.engine) == 4
    with pytest.raises(LedgerIntegrityError, match=f"first differing leaf: account {account}"):
        await compute_pending_roots(fresh.engine, LEDGER_ID)
