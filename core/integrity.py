"""Integrity alarms and the self-audit: stored data checked against the anchored past.

Alarms (``integrity_alarms``, migration 0013)
    Raised by the sealer (:func:`core.epochs.compute_roots` refuses to build an epoch whose
    rows disagree with the anchored previous epoch), by the self-audit below, or by the write
    path. Each is an ERROR log line naming the epoch and the first differing leaf, and the
    metric ``valueos_integrity_alarms_total{source}``. While one is open (not acknowledged)
    :func:`paused` is true: the worker seals and anchors nothing new and sends no bridge mint,
    and ``/ready`` reports ``degraded``. :func:`acknowledge` closes alarms with the operator's
    name and reason, in the audit log. An alarm already open is not raised twice.

Self-audit (:func:`audit`)
    Rebuilds sealed epochs from the stored rows, in epoch order, independently of what the
    sealer stored: every entry of the epoch's seq range (each naming this epoch) with its
    ``balance_after`` continuing the running balance of its account from the epochs before,
    every operation summing to zero per asset; both trees rebuilt (balances from the running
    balances, not from ``balance_after`` look-ups) and compared level by level with the stored
    tree rows (the root row included), keys and positions; the stored ``balance_commitments``
    rows of the epoch (one per account whose entry count and running hash the epoch changed;
    every account's on top of a format-1 epoch; none in a format-1 epoch) compared with the
    rebuilt counts and hashes, a missing or extra row included; in a partial audit, the
    balances it starts from (the epoch before, as the rows give them, commitments included)
    checked against that epoch's stored balances root; the header chain recomputed; and,
    when given a reader of the chain, the header and both roots compared with what the
    contract holds. Each differing epoch yields one finding (and one alarm) with its first
    differing leaf. Each pass is recorded in ``integrity_audits`` (epochs, entries, seconds).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg
from prometheus_client import Counter
from sqlalchemy import text

from core import audit as audit_log
from core.db import Engine
from core.epochs import (
    BALANCE_TREE,
    ENTRY_TREE,
    BuiltEpoch,
    EpochRoots,
    Running,
    StoredTree,
    balances_at,
    build_epoch,
    epoch_bounds,
    first_difference,
    load_entries,
    raw_connection,
    running_from,
    running_leaves,
    stored_leaf_hashes,
)
from core.errors import LedgerIntegrityError, ReasonRequired, ValidationError
from core.types import Actor
from merkle.leaves import (
    BalanceLeaf,
    BalanceLeafV1,
    EntryLeaf,
    balance_tree,
    entry_tree,
    hash_balance_leaves,
    hash_entry_leaves,
)
from merkle.tree import EMPTY_ROOT, keccak_256

__all__ = [
    "Alarm",
    "AuditReport",
    "Finding",
    "OnChainHeader",
    "OnChainRoots",
    "acknowledge",
    "alarm_from_error",
    "audit",
    "last_audit",
    "open_alarms",
    "paused",
    "raise_alarm",
]

log = logging.getLogger(__name__)

ALARMS = Counter(
    "valueos_integrity_alarms",
    "Integrity alarms raised (stored data vs the anchored past)",
    ["source"],
)


@dataclass(frozen=True, slots=True)
class Alarm:
    id: int
    source: str
    epoch: int | None
    detail: str
    first_leaf: str | None
    raised_at: datetime
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    ack_reason: str | None = None


def _alarm(r: asyncpg.Record) -> Alarm:
    return Alarm(
        r["id"], r["source"], r["epoch"], r["detail"], r["first_leaf"], r["raised_at"],
        r["acknowledged_at"], r["acknowledged_by"], r["ack_reason"],
    )  # fmt: skip


async def raise_alarm(
    engine: Engine,
    source: str,
    detail: str,
    *,
    epoch: int | None = None,
    first_leaf: str | None = None,
) -> Alarm | None:
    """Record an alarm (None when the same one is already open), log it at ERROR, count it."""
    log.error(
        "INTEGRITY ALARM from the %s: epoch %s: %s%s",
        source, epoch, detail, f" (first differing leaf: {first_leaf})" if first_leaf else "",
    )  # fmt: skip
    ALARMS.labels(source).inc()
    async with raw_connection(engine) as conn:
        row = await conn.fetchrow(
            "INSERT INTO integrity_alarms (source, epoch, detail, first_leaf) "
            "VALUES ($1, $2, $3, $4) "
            "ON CONFLICT (source, coalesce(epoch, -1), detail) WHERE acknowledged_at IS NULL "
            "DO NOTHING RETURNING *",
            source, epoch, detail, first_leaf,
        )  # fmt: skip
    return _alarm(row) if row else None


async def alarm_from_error(engine: Engine, source: str, exc: LedgerIntegrityError) -> None:
    """An alarm for a :class:`LedgerIntegrityError` (its epoch, seq or account as the leaf)."""
    d = exc.details
    leaf = None
    if d.get("seq") is not None:
        leaf = f"entry seq {d['seq']}"
    elif d.get("account_id") is not None:
        leaf = f"balance of account {d['account_id']}"
    await raise_alarm(engine, source, exc.message, epoch=d.get("epoch"), first_leaf=leaf)


async def open_alarms(engine: Engine) -> list[Alarm]:
    async with raw_connection(engine) as conn:
        rows = await conn.fetch(
            "SELECT * FROM integrity_alarms WHERE acknowledged_at IS NULL ORDER BY id"
        )
    return [_alarm(r) for r in rows]


async def paused(engine: Engine) -> bool:
    """An alarm is open: seal nothing, anchor nothing new, mint nothing."""
    async with raw_connection(engine) as conn:
        found: bool = await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM integrity_alarms WHERE acknowledged_at IS NULL)"
        )
    return found


async def acknowledge(
    engine: Engine, actor: Actor, reason: str, alarm_ids: list[int] | None = None
) -> list[int]:
    """Close the open alarms ``alarm_ids`` (all open ones when None), with the reason, in one
    audited transaction; the ids closed."""
    if not reason or not reason.strip():
        raise ReasonRequired("acknowledging an integrity alarm needs a reason", field="reason")
    async with engine.begin() as conn:
        rows = (
            await conn.execute(
                text(
                    "UPDATE integrity_alarms SET acknowledged_at = clock_timestamp(), "
                    "acknowledged_by = :by, ack_reason = :reason "
                    "WHERE acknowledged_at IS NULL "
                    "AND (CAST(:ids AS bigint[]) IS NULL OR id = ANY(CAST(:ids AS bigint[]))) "
                    "RETURNING id, source, epoch, detail"
                ),
                {"by": actor.id, "reason": reason, "ids": alarm_ids},
            )
        ).all()
        if alarm_ids is not None and len(rows) != len(set(alarm_ids)):
            missing = sorted(set(alarm_ids) - {r.id for r in rows})
            raise ValidationError(f"alarms {missing} are not open", alarm_ids=missing)
        for r in rows:
            await audit_log.record(
                conn, actor, "integrity.acknowledge", "integrity_alarm", r.id,
                before={"source": r.source, "epoch": r.epoch, "detail": r.detail},
                reason=reason,
            )  # fmt: skip
    closed = sorted(r.id for r in rows)
    if closed:
        log.warning("integrity alarms %s acknowledged by %s: %s", closed, actor.id, reason)
    return closed


# ------------------------------------------------------------------------------- self-audit


@dataclass(frozen=True, slots=True)
class OnChainHeader:
    """What the anchor contract says about an epoch rebuilt from the rows."""

    #: the header hash the contract stores for the epoch (EMPTY_ROOT: not anchored)
    header: bytes
    #: the contract's own ``isAnchored`` of the rebuilt header fields (roots included)
    accepts: bool


#: the rebuilt header fields -> the contract's view of that epoch; None when the epoch was
#: anchored before the contract's genesis (its header chain reaches the genesis header, which
#: the contract holds and the audit compares at the genesis epoch)
OnChainRoots = Callable[[EpochRoots], Awaitable[OnChainHeader | None]]


@dataclass(frozen=True, slots=True)
class Finding:
    epoch: int
    detail: str
    first_leaf: str | None = None


@dataclass
class AuditReport:
    first_epoch: int | None = None
    last_epoch: int | None = None
    epochs: int = 0
    entries: int = 0
    seconds: float = 0.0
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings


def _continuity(
    running: Running, entries: list[EntryLeaf], hashes: Sequence[bytes]
) -> EntryLeaf | None:
    """Apply ``entries`` (``hashes``: their leaf hashes, folded into each account's running
    hash); the first whose ``balance_after`` breaks the running balance (the run goes on from
    each row's own value, so one broken row is one finding) or whose operation does not sum
    to zero."""
    bad: EntryLeaf | None = None
    sums: dict[tuple[int, str], int] = {}
    first_of: dict[tuple[int, str], EntryLeaf] = {}
    k = keccak_256
    for e, leaf_hash in zip(entries, hashes, strict=True):
        _, _, balance, count, folded = running.get(
            e.account_id, (e.asset_code, 0, 0, 0, EMPTY_ROOT)
        )
        if bad is None and balance + e.amount != e.balance_after:
            bad = e
        running[e.account_id] = (
            e.asset_code, e.seq, e.balance_after, count + 1, k(folded + leaf_hash).digest()
        )  # fmt: skip
        key = (e.operation_id, e.asset_code)
        sums[key] = sums.get(key, 0) + e.amount
        first_of.setdefault(key, e)
    unbalanced = [first_of[k] for k, v in sums.items() if v != 0]
    if unbalanced:
        first = min(unbalanced, key=lambda x: x.seq)
        bad = first if bad is None or first.seq < bad.seq else bad
    return bad


async def _stored_rows(conn: asyncpg.Connection, epoch: int, tree: int) -> list[bytes]:
    rows = await conn.fetch(
        "SELECT depth, nodes FROM epoch_tree_levels WHERE epoch = $1 AND tree = $2 ORDER BY depth",
        epoch,
        tree,
    )
    if [r[0] for r in rows] != list(range(len(rows))):
        return [b"<missing level>"] * len(rows)
    return [bytes(r[1]) for r in rows]


async def _compare_tree(
    conn: asyncpg.Connection,
    epoch: int,
    built: StoredTree,
    computed: Callable[[], dict[int, bytes]],
) -> Finding | None:
    name = "entries" if built.kind == ENTRY_TREE else "balances"
    t = await conn.fetchrow(
        "SELECT root, leaf_count, keys, positions FROM epoch_trees WHERE epoch = $1 AND tree = $2",
        epoch,
        built.kind,
    )
    stored_rows = await _stored_rows(conn, epoch, built.kind)
    what = None
    if t is None:
        what = f"the stored {name} tree is missing"
    elif stored_rows != built.rows:
        depth = next(
            (d for d, (a, b) in enumerate(zip(stored_rows, built.rows, strict=False)) if a != b),
            min(len(stored_rows), len(built.rows)),
        )
        label = "the root row" if depth == 0 else f"level {depth}"
        what = f"stored {name} tree {label} differs from the tree rebuilt from the rows"
    elif (bytes(t["root"]), t["leaf_count"], bytes(t["keys"]), bytes(t["positions"])) != (
        built.root, built.leaf_count, built.keys, built.positions,
    ):  # fmt: skip
        what = f"the stored {name} tree's root, keys or positions differ from the rebuilt tree"
    if what is None:
        return None
    # leaf hashes by key, only on a mismatch: the trees above already hashed every leaf once
    key = first_difference(await stored_leaf_hashes(conn, epoch, built.kind), computed())
    leaf = None
    if key is not None:
        leaf = f"entry seq {key}" if built.kind == ENTRY_TREE else f"balance of account {key}"
    return Finding(epoch, f"epoch {epoch}: {what}", leaf)


def _compare_roots(stored: asyncpg.Record, built: BuiltEpoch) -> str | None:
    r = built.roots
    for column, value in (
        ("entries_root", r.entries_root), ("balances_root", r.balances_root),
        ("first_seq", r.first_seq), ("last_seq", r.last_seq), ("leaf_count", r.leaf_count),
        ("prev_header", r.prev_header), ("header", r.header),
    ):  # fmt: skip
        found = stored[column]
        if (bytes(found) if isinstance(found, bytes | memoryview) else found) != value:
            return f"stored {column} differs from the one rebuilt from the rows"
    return None


_COMMITMENTS = """
SELECT account_id, entry_count, entries_hash FROM balance_commitments WHERE epoch = $1
"""


def _expected_commitments(
    leaf_format: int, prev_format: int | None, running: Running, entries: list[EntryLeaf]
) -> dict[int, tuple[int, bytes]]:
    """The commitment rows the sealer stores for an epoch: a row for each account whose
    (count, hash) the epoch's ``entries`` changed, every account's on top of a format-1 epoch
    (which stored none; ``prev_format`` None: the first epoch), none in a format-1 epoch."""
    if leaf_format == 1:
        return {}
    changed = running.keys() if prev_format in (None, 1) else {e.account_id for e in entries}
    return {a: (running[a][3], running[a][4]) for a in changed}


async def _compare_commitments(
    conn: asyncpg.Connection, epoch: int, expected: dict[int, tuple[int, bytes]]
) -> Finding | None:
    """The epoch's stored ``balance_commitments`` rows against ``expected`` (account ->
    rebuilt (entry count, running hash)); a finding naming the first differing account."""
    stored = {r[0]: (r[1], bytes(r[2])) for r in await conn.fetch(_COMMITMENTS, epoch)}
    if stored == expected:
        return None
    account = min(a for a in stored.keys() | expected.keys() if stored.get(a) != expected.get(a))
    if account not in stored:
        what = "is missing"
    elif account not in expected:
        what = "is extra: the epoch's entries do not change that account's count and hash"
    else:
        count, folded = stored[account]
        what = (
            f"(entry count {count}, entries hash 0x{folded.hex()}) differs from the one "
            f"rebuilt from the rows (entry count {expected[account][0]}, entries hash "
            f"0x{expected[account][1].hex()})"
        )
    return Finding(
        epoch,
        f"epoch {epoch}: the stored balance commitment row of account {account} {what}",
        f"balance commitment of account {account}",
    )


async def _audit_epoch(
    conn: asyncpg.Connection,
    ledger_id: bytes,
    stored: asyncpg.Record,
    running: Running,
    prev_header: bytes,
    onchain: OnChainRoots | None,
    status: str | None,
    prev_format: int | None,
) -> tuple[list[Finding], BuiltEpoch | None, int]:
    epoch = stored["epoch"]
    findings: list[Finding] = []
    lo, hi = await epoch_bounds(conn, epoch)
    rows = await conn.fetch(
        "SELECT seq, operation_id, account_id, asset, amount, balance_after, epoch "
        "FROM ledger_entries WHERE seq > $1 AND seq <= $2 ORDER BY seq",
        lo, hi,
    )  # fmt: skip
    # (a row naming this epoch from another epoch's range is that epoch's stray)
    strays = [r[0] for r in rows if r[6] != epoch]
    if strays:
        findings.append(
            Finding(
                epoch,
                f"epoch {epoch}: rows {strays[:5]} break its seq range",
                f"entry seq {strays[0]}",
            )
        )
    entries = [
        EntryLeaf(ledger_id, epoch, r[0], r[1], r[2], r[3], r[4], r[5])
        for r in rows
        if r[6] == epoch
    ]
    e_tree = await asyncio.to_thread(entry_tree, entries)
    broken = _continuity(running, entries, e_tree.leaf_hashes())
    if broken is not None:
        findings.append(
            Finding(
                epoch,
                f"epoch {epoch}: entry {broken.seq} breaks the running balance_after of account "
                f"{broken.account_id} or its operation {broken.operation_id}'s zero sum",
                f"entry seq {broken.seq}",
            )
        )
    balances: list[BalanceLeaf] | list[BalanceLeafV1] = running_leaves(running, ledger_id, epoch)
    if stored["balance_leaf_format"] == 1:  # sealed before the leaves carried count and hash
        balances = [
            BalanceLeafV1(ledger_id, epoch, x.seq, x.account_id, x.asset_code, x.balance)
            for x in balances
        ]
    built = await asyncio.to_thread(
        lambda: build_epoch(
            ledger_id=ledger_id,
            epoch=epoch,
            prev_header=prev_header,
            prev_cut=lo,
            entries=entries,
            balances=balances,
            entries_tree=e_tree,
        )
    )

    def entry_hashes() -> dict[int, bytes]:
        return dict(zip((e.seq for e in entries), hash_entry_leaves(entries), strict=True))

    def balance_hashes() -> dict[int, bytes]:
        return dict(
            zip((b.account_id for b in balances), hash_balance_leaves(balances), strict=True)
        )

    for tree, hashes in ((built.entries, entry_hashes), (built.balances, balance_hashes)):
        found = await _compare_tree(conn, epoch, tree, hashes)
        if found is not None:
            findings.append(found)
    mismatch = _compare_roots(stored, built)
    if mismatch is not None and not findings:
        findings.append(Finding(epoch, f"epoch {epoch}: {mismatch}"))
    expected = _expected_commitments(stored["balance_leaf_format"], prev_format, running, entries)
    found = await _compare_commitments(conn, epoch, expected)
    if found is not None:
        findings.append(found)
    if onchain is not None and status in ("CONFIRMED", "FINALIZED"):
        r = built.roots
        held = await onchain(r)
        if held is None:
            pass  # anchored on an earlier contract, whose last header this one continues
        elif held.header == EMPTY_ROOT:
            findings.append(
                Finding(epoch, f"epoch {epoch}: {status} here but not anchored on the contract")
            )
        elif held.header != r.header:
            findings.append(
                Finding(
                    epoch,
                    f"epoch {epoch}: the contract holds header 0x{held.header.hex()}, the rows "
                    f"rebuild 0x{r.header.hex()}",
                )
            )
        elif not held.accepts:
            findings.append(
                Finding(epoch, f"epoch {epoch}: the contract refuses the rebuilt header fields")
            )
    return findings, built, len(entries)


async def _check_start(
    conn: asyncpg.Connection, before: asyncpg.Record, leaves: list[BalanceLeaf]
) -> Finding | None:
    """A partial audit starts from the balances of the epoch before as the rows give them
    (its commitment rows included): they must hash to that epoch's stored balances root."""
    epoch = before["epoch"]
    tree = await asyncio.to_thread(balance_tree, leaves)
    if tree.root == bytes(before["balances_root"]):
        return None
    stored = await stored_leaf_hashes(conn, epoch, BALANCE_TREE)
    account = first_difference(stored, {x.account_id: x.hash() for x in leaves})
    return Finding(
        epoch,
        f"epoch {epoch}: its balances as the rows give them now (balance commitments "
        f"included), where this audit starts, do not hash to its stored balances root",
        f"balance of account {account}" if account is not None else None,
    )


async def audit(
    engine: Engine,
    ledger_id: bytes,
    *,
    first: int | None = None,
    last: int | None = None,
    onchain: OnChainRoots | None = None,
    alarm: bool = True,
) -> AuditReport:
    """Rebuild the sealed epochs ``first..last`` (default: all with roots) from the rows and
    compare them with their stored trees, roots and headers (and the chain with ``onchain``).
    Findings raise alarms (unless ``alarm=False``); the pass is recorded."""
    started = time.perf_counter()
    report = AuditReport()
    async with raw_connection(engine) as conn:
        epochs = await conn.fetch(
            "SELECT r.*, a.status FROM epoch_roots r LEFT JOIN anchor_state a ON a.epoch = r.epoch "
            "WHERE ($1::bigint IS NULL OR r.epoch >= $1) AND ($2::bigint IS NULL OR r.epoch <= $2) "
            "ORDER BY r.epoch",
            first, last,
        )  # fmt: skip
        if epochs:
            start = epochs[0]["epoch"]
            report.first_epoch, report.last_epoch = start, epochs[-1]["epoch"]
            running: Running = {}
            prev_header = EMPTY_ROOT
            prev_format: int | None = None
            if start > 1:  # start from the rows at the end of the epoch before, as stored
                before = await conn.fetchrow(
                    "SELECT * FROM epoch_roots WHERE epoch = $1", start - 1
                )
                prev_format = before["balance_leaf_format"] if before is not None else None
                if before is not None and before["balance_leaf_format"] == 1:
                    # format-1 leaves hold no counts or hashes: fold the rows from genesis
                    prev_header = bytes(before["header"])
                    for e in range(1, start):
                        rows = await load_entries(conn, ledger_id, e)
                        hashes = await asyncio.to_thread(hash_entry_leaves, rows)
                        _continuity(running, rows, hashes)
                elif before is not None:
                    prev_header = bytes(before["header"])
                    leaves = await balances_at(conn, ledger_id, start - 1, before["cut_seq"])
                    running = running_from(leaves)
                    found = await _check_start(conn, before, leaves)
                    if found is not None:
                        report.findings.append(found)
            for stored in epochs:
                if stored["epoch"] != (report.first_epoch + report.epochs):
                    break  # a gap: epochs without roots yet end the pass
                findings, built, n = await _audit_epoch(
                    conn, ledger_id, stored, running, prev_header, onchain, stored["status"],
                    prev_format,
                )  # fmt: skip
                prev_format = stored["balance_leaf_format"]
                report.findings += findings
                report.epochs += 1
                report.entries += n
                prev_header = built.roots.header if built is not None else bytes(stored["header"])
            report.last_epoch = report.first_epoch + report.epochs - 1
    report.seconds = time.perf_counter() - started
    if alarm:
        for f in report.findings:
            await raise_alarm(engine, "audit", f.detail, epoch=f.epoch, first_leaf=f.first_leaf)
    async with raw_connection(engine) as conn:
        await conn.execute(
            "INSERT INTO integrity_audits (first_epoch, last_epoch, entries, seconds, ok, detail) "
            "VALUES ($1, $2, $3, $4, $5, $6)",
            report.first_epoch, report.last_epoch, report.entries, report.seconds, report.ok,
            "; ".join(f.detail for f in report.findings[:5]) or None,
        )  # fmt: skip
    return report


async def last_audit(engine: Engine) -> dict[str, object] | None:
    """The latest recorded audit pass (when, epochs, entries, seconds, ok)."""
    async with raw_connection(engine) as conn:
        row = await conn.fetchrow("SELECT * FROM integrity_audits ORDER BY id DESC LIMIT 1")
    return dict(row) if row else None
