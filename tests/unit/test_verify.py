"""``valueos verify`` offline on bundles built by the pure epoch builder; forged variants fail."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from chain.evm.trust import Trust, TrustError, load_trust
from chain.evm.verify import VerificationError, check_offline, check_pinned, main
from core.epochs import BuiltEpoch, StoredTree, build_epoch
from merkle.leaves import BalanceLeaf, EntryLeaf
from merkle.tree import EMPTY_ROOT, StandardMerkleTree

pytestmark = pytest.mark.unit

LEDGER = b"\x22" * 32
ROOT = Path(__file__).resolve().parents[2]


def _epoch() -> tuple[BuiltEpoch, list[EntryLeaf], list[BalanceLeaf]]:
    entries = [
        EntryLeaf(LEDGER, 1, s, s // 2, 1 + s % 3, "USD", (-1) ** s * s, s) for s in range(1, 8)
    ]
    balances = [BalanceLeaf(LEDGER, 1, 7, a, "USD", 100 * a, a, bytes([a]) * 32) for a in (1, 2, 3)]
    built = build_epoch(
        ledger_id=LEDGER, epoch=1, prev_header=EMPTY_ROOT, prev_cut=0, entries=entries,
        balances=balances,
    )  # fmt: skip
    return built, entries, balances


def _proof(tree: StoredTree, index: int) -> list[str]:
    nodes = b"".join(tree.rows)
    t = StandardMerkleTree(
        [nodes[i : i + 32] for i in range(0, len(nodes), 32)], sorted_leaves=True
    )
    pos = int.from_bytes(tree.positions[4 * index : 4 * index + 4], "big")
    proof = []
    while pos > 0:
        proof.append(t.nodes[pos + 1 if pos % 2 else pos - 1])
        pos = (pos - 1) // 2
    return ["0x" + p.hex() for p in proof]


def entry_bundle(i: int = 3) -> dict[str, Any]:
    built, entries, _ = _epoch()
    e = entries[i]
    return {
        "version": 1, "kind": "entry",
        "leaf": {"kind": 1, "ledger_id": "0x" + LEDGER.hex(), "epoch": 1, "seq": e.seq,
                 "operation_id": e.operation_id, "account_id": e.account_id, "asset_code": "USD",
                 "amount": str(e.amount), "balance_after": str(e.balance_after)},
        "leaf_hash": "0x" + e.hash().hex(),
        "proof": _proof(built.entries, i),
        "header": built.roots.header_fields(),
        "anchor": {"status": "SEALED"},
    }  # fmt: skip


def test_stored_rows_keys_and_positions_serve_valid_proofs() -> None:
    for i in range(7):
        assert "consistent with the entries root 0x" in check_offline(entry_bundle(i))
    built, _, _ = _epoch()
    bundle = {
        "version": 1, "kind": "balance",
        "leaf": {"kind": 2, "ledger_id": "0x" + LEDGER.hex(), "epoch": 1, "seq": 7,
                 "account_id": 2, "asset_code": "USD", "balance": "200", "entry_count": 2,
                 "entries_hash": "0x" + "02" * 32},
        "proof": _proof(built.balances, 1), "header": built.roots.header_fields(),
    }  # fmt: skip
    assert "balances root" in check_offline(bundle)
    assert built.entries.keys == b"".join(s.to_bytes(8, "big") for s in range(1, 8))


FORGERIES = {
    "amount": lambda b: b["leaf"].update(amount="999"),
    "leaf hash": lambda b: b.update(leaf_hash="0x" + "00" * 32),
    "sibling": lambda b: b["proof"].__setitem__(0, "0x" + "11" * 32),
    "truncated": lambda b: b["proof"].pop(),
    "extended": lambda b: b["proof"].append("0x" + "11" * 32),
    "swapped kind": lambda b: b.update(kind="balance"),
    "root": lambda b: b["header"].update(entries_root="0x" + "33" * 32),
    "prev header": lambda b: b["header"].update(prev_header="0x" + "44" * 32),
    "epoch": lambda b: b["leaf"].update(epoch=2),
    "ledger": lambda b: b["leaf"].update(ledger_id="0x" + "55" * 32),
    "seq range": lambda b: b["header"].update(last_seq=2),
    "not hex": lambda b: b["proof"].__setitem__(0, "zz"),
}


@pytest.mark.parametrize("name", sorted(FORGERIES))
def test_forged_bundles_are_rejected(name: str) -> None:
    bundle = copy.deepcopy(entry_bundle())
    FORGERIES[name](bundle)
    with pytest.raises(VerificationError):
        check_offline(bundle)


def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps(entry_bundle()))
    forged = entry_bundle()
    forged["leaf"]["amount"] = "1000000"
    bad.write_text(json.dumps(forged))
    assert main("verify", [str(good)]) == 0
    assert main("verify", [str(bad)]) == 1
    assert main("verify", [str(tmp_path / "missing.json")]) == 1
    err = capsys.readouterr().err
    assert "INVALID: the leaf hash does not match the leaf fields" in err
    assert "INVALID: cannot read" in err


CONTRACT = "0x" + "ab" * 20


def _trust_file(tmp_path: Path, **changes: Any) -> Path:
    data = Trust(31337, CONTRACT, LEDGER, 2).to_json() | changes
    path = tmp_path / "trust.json"
    path.write_text(json.dumps(data))
    return path


def test_offline_verify_says_what_it_did_not_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An entirely made-up bundle (a tree the ledger never built) is internally consistent:
    offline verify says so and says that nothing tied it to a chain or a ledger."""
    made_up = entry_bundle()
    path = tmp_path / "made-up.json"
    path.write_text(json.dumps(made_up))
    assert main("verify", [str(path)]) == 0
    out = capsys.readouterr().out
    assert "VALID" not in out
    assert out.startswith("CONSISTENT: entry leaf is consistent with the entries root 0x")
    assert "NOT CHECKED: the ledger identity (no trust file pinned)" in out
    assert "NOT CHECKED: the root against the chain (no --rpc)" in out


def test_rpc_without_pinned_trust_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VALUEOS_TRUST_FILE", raising=False)
    path = tmp_path / "b.json"
    path.write_text(json.dumps(entry_bundle()))
    assert main("verify", [str(path), "--rpc", "http://127.0.0.1:1"]) == 1
    assert "--rpc needs the pinned trust" in capsys.readouterr().err


def test_a_bundle_of_another_ledger_chain_or_contract_is_refused_offline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "b.json"
    bundle = entry_bundle()
    bundle["anchor"] = {"status": "FINALIZED", "chain_id": 31337, "contract_address": CONTRACT}
    path.write_text(json.dumps(bundle))
    trust = _trust_file(tmp_path)
    assert main("verify", [str(path), "--trust", str(trust)]) == 0
    out = capsys.readouterr().out
    assert "PINNED: ledger id 0x" + LEDGER.hex() in out
    assert "NOT CHECKED: the root against the chain" in out
    # the environment variable pins the same way
    monkeypatch.setenv("VALUEOS_TRUST_FILE", str(_trust_file(tmp_path, ledger_id="0x" + "99" * 32)))
    assert main("verify", [str(path)]) == 1
    assert "the pinned ledger is 0x" + "99" * 32 in capsys.readouterr().err
    pinned = Trust(31337, CONTRACT, LEDGER)
    for field, value, message in [
        ("chain_id", 1, "the bundle names chain 1, the pinned chain is 31337"),
        ("contract_address", "0x" + "cd" * 20, "the bundle names contract 0x"),
    ]:
        forged = copy.deepcopy(bundle)
        forged["anchor"][field] = value
        with pytest.raises(VerificationError, match=message):
            check_pinned(forged, pinned)


def test_malformed_trust_files_are_refused(tmp_path: Path) -> None:
    for changes in (
        {"version": 2}, {"chain_id": "1"}, {"anchor_contract": "0x12"},
        {"ledger_id": "0x12"}, {"confirmations": 0},
    ):  # fmt: skip
        with pytest.raises(TrustError):
            load_trust(_trust_file(tmp_path, **changes))
    assert load_trust(_trust_file(tmp_path)) == Trust(31337, CONTRACT, LEDGER, 2)
