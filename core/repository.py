"""The posting write path: batches of ledger commands into PostgreSQL.

``LedgerStore.execute`` runs a batch of commands in ONE database transaction:

1. ``valueos_writer_epoch()``: take the epoch lock shared, read the open epoch;
2. read stored idempotency outcomes; lock referenced holds (``FOR UPDATE``, id order);
3. lock every balance row the batch touches, in account-id order (no deadlocks);
4. plan in memory (``core.planner``): every command succeeds or fails on its own,
   linked groups all-or-nothing;
5. allocate ids, then write with one statement per table (binary COPY for inserts,
   one ``UPDATE ... FROM unnest`` for balances) and commit.

A deadlock, serialization failure or a unique-key race with another process rolls the
whole batch back and runs it again (the retry sees the other process's commit). Other SQL
errors become core errors (``core.storage_errors.translate``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import json
import logging
from collections.abc import Coroutine, Iterator, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from core.chain_txs import insert_intent
from core.errors import (
    LedgerError,
    StorageError,
)
from core.planner import (
    HoldRow,
    OriginalOperation,
    Plan,
    PlannedOperation,
    StoredOutcome,
    outcome_to_json,
    plan_batch,
    referenced_holds,
    referenced_operations,
    touched_accounts,
)
from core.policy.store import PolicyCache, denial_audit, policy_versions, write_usage
from core.posting import AccountState, BalanceBook
from core.sagas import SagaStatus, SagaType, derive_status
from core.storage_errors import CONNECTION_LOST, translate
from core.types import (
    AccountStatus,
    Actor,
    Command,
    HoldStatus,
    OperationStatus,
    OperationType,
    PostOperation,
    Result,
    VoidHold,
)

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 8
_RETRYABLE_UNIQUE = {"idempotency_keys_pkey", "operations_reverses_id_key"}


def _retryable(exc: BaseException) -> bool:
    if isinstance(
        exc,
        asyncpg.DeadlockDetectedError | asyncpg.SerializationError | asyncpg.LockNotAvailableError,
    ):
        return True
    return (
        isinstance(exc, asyncpg.UniqueViolationError)
        and getattr(exc, "constraint_name", None) in _RETRYABLE_UNIQUE
    )


def _json(value: Any) -> str:
    if not value:
        return "{}"
    return _ENCODER.encode(value).decode()


_ENCODER = msgspec.json.Encoder(enc_hook=str)


_ALLOCATE = """
SELECT
  (SELECT coalesce(array_agg(nextval('operations_id_seq')), '{}') FROM generate_series(1, $1::int)),
  (SELECT coalesce(array_agg(s ORDER BY s), '{}')
     FROM (SELECT nextval('ledger_seq') AS s FROM generate_series(1, $2::int)) x),
  (SELECT coalesce(array_agg(nextval('holds_id_seq')), '{}') FROM generate_series(1, $3::int)),
  (SELECT coalesce(array_agg(nextval('audit_log_id_seq')), '{}') FROM generate_series(1, $4::int))
"""

# Inserts go by binary COPY (one round trip per table, encoded in asyncpg's C codecs,
# multi-row heap inserts); the references of entries and operations are checked once per
# statement by the triggers of migration 0006.
_OPERATION_COLUMNS = [
    "id", "type", "status", "epoch", "idempotency_key", "actor_id", "actor_role",
    "saga_id", "reverses_id", "hold_id", "reason", "error", "metadata", "created_at",
    "audit_id", "policy_versions", "first_seq", "last_seq",
]  # fmt: skip
_ENTRY_COLUMNS = [
    "seq", "operation_id", "account_id", "asset", "amount", "balance_after", "epoch",
    "created_at",
]  # fmt: skip
_AUDIT_COLUMNS = [
    "id", "at", "actor_id", "actor_role", "ip", "action", "entity_type", "entity_id", "before",
    "after", "reason",
]  # fmt: skip
_UPDATE_BALANCES = """
UPDATE balances b SET posted = u.posted, pending = u.pending,
       last_seq = greatest(b.last_seq, u.last_seq), updated_at = $5
FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[])
     AS u(id, posted, pending, last_seq)
WHERE b.account_id = u.id
"""
#: results built between two yields to the write task (about 0.3 ms of client CPU)
_RESULTS_SLICE = 250
#: below this many operation + entry rows a batch is written by one statement instead
_COPY_FROM_ROWS = 300
_WRITE_SMALL = """
WITH ops AS (
    INSERT INTO operations (id, type, status, epoch, idempotency_key, actor_id, actor_role,
                            saga_id, reverses_id, hold_id, reason, error, metadata,
                            created_at, audit_id, policy_versions, first_seq, last_seq)
    SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::text[],
                         $6::text[], $7::text[], $8::uuid[], $9::bigint[], $10::bigint[],
                         $11::text[], $12::jsonb[], $13::jsonb[], $14::timestamptz[],
                         $15::bigint[], $16::jsonb[], $17::bigint[], $18::bigint[])
), entries AS (
    INSERT INTO ledger_entries (seq, operation_id, account_id, asset, amount, balance_after,
                                epoch, created_at)
    SELECT * FROM unnest($19::bigint[], $20::bigint[], $21::bigint[], $22::text[],
                         $23::bigint[], $24::bigint[], $25::bigint[], $26::timestamptz[])
), audit AS (
    INSERT INTO audit_log (id, at, actor_id, actor_role, ip, action, entity_type, entity_id,
                           before, after, reason)
    OVERRIDING SYSTEM VALUE
    SELECT * FROM unnest($27::bigint[], $28::timestamptz[], $29::text[], $30::text[],
                         $31::text[], $32::text[], $33::text[], $34::text[], $35::jsonb[],
                         $36::jsonb[], $37::text[])
)
UPDATE balances b SET posted = u.posted, pending = u.pending,
       last_seq = greatest(b.last_seq, u.last_seq), updated_at = $42
FROM unnest($38::bigint[], $39::bigint[], $40::bigint[], $41::bigint[])
     AS u(id, posted, pending, last_seq)
WHERE b.account_id = u.id
"""


def _transpose(rows: list[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows to columns, for ``unnest($1::t[], ...)``."""
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[]] * width


_LOCK_BALANCES = (
    # the clock is read after the function returned, i.e. after every lock is held; the
    # policy generation tells the policy cache whether to reload
    "SELECT clock_timestamp() AS now, (SELECT valueos_policy_generation()) AS policy_generation, "
    "l.* "
    "FROM valueos_lock_balances($1::bigint[]) l"
)


_gc_pauses = 0


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a batch builds its rows and results.

    A batch allocates tens of thousands of short-lived, acyclic objects (tuples, result
    dataclasses) that reference counting frees; every 700 allocations the collector
    would otherwise walk the young generation, and older ones with every object the
    process holds: profiled at 35% of the client's CPU for a 2,000-transfer batch. The
    collector resumes (and catches up) when the last concurrent batch leaves."""
    global _gc_pauses  # noqa: PLW0603 - one collector per process
    if _gc_pauses == 0 and not gc.isenabled():  # paused by someone else: leave it alone
        yield
        return
    _gc_pauses += 1
    gc.disable()
    try:
        yield
    finally:
        _gc_pauses -= 1
        if _gc_pauses == 0:
            gc.enable()


def _group_spans(groups: Sequence[int | None]) -> list[tuple[int, int]]:
    """Split item indices into the smallest independent units (a linked group is one)."""
    spans: list[tuple[int, int]] = []
    start = 0
    while start < len(groups):
        end = start + 1
        while groups[start] is not None and end < len(groups) and groups[end] == groups[start]:
            end += 1
        spans.append((start, end))
        start = end
    return spans


class LedgerStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        #: active policies of this process
        self.policies = PolicyCache()

    async def execute(
        self, commands: Sequence[Command], groups: Sequence[int | None] | None = None
    ) -> list[Result | LedgerError]:
        """Apply a batch; every command gets its own result or error, in order."""
        if not commands:
            return []
        groups = list(groups) if groups is not None else [None] * len(commands)
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                return await self._execute_once(commands, groups)
            except CONNECTION_LOST as exc:
                # The connection died. If it died during COMMIT the outcome is unknown, so
                # never retry here: callers retry under their idempotency key.
                return [translate(exc)] * len(commands)
            except asyncpg.PostgresError as exc:
                if _retryable(exc):
                    log.debug("batch retry %d after %s", attempt, type(exc).__name__)
                    continue
                return await self._isolate(commands, groups, exc)
        return [StorageError("the batch kept conflicting; nothing was written")] * len(commands)

    async def execute_within(
        self, sa_conn: AsyncConnection, commands: Sequence[Command]
    ) -> list[Result | LedgerError]:
        """Apply ``commands`` all-or-nothing inside the caller's open transaction (a savepoint
        of it): they commit, or roll back, with whatever else the caller writes there. No
        retry: a deadlock or serialization failure aborts the caller's transaction and is
        raised as a core error."""
        if not commands:
            return []
        if not sa_conn.in_transaction():
            raise RuntimeError("execute_within needs the caller's open transaction")
        raw = await sa_conn.get_raw_connection()
        conn: asyncpg.Connection = raw.driver_connection
        if not conn.is_in_transaction():
            # SQLAlchemy begins the driver's transaction at its first statement; without
            # one, asyncpg would run the batch as a transaction of its own
            await sa_conn.execute(text("SELECT 1"))
        if not conn.is_in_transaction():  # pragma: no cover - a driver that never began
            raise RuntimeError("the caller's transaction has not begun on the driver")
        try:
            return await self._transaction(conn, commands, [1] * len(commands))
        except asyncpg.PostgresError as exc:
            raise translate(exc) from exc

    async def _isolate(
        self, commands: Sequence[Command], groups: list[int | None], exc: BaseException
    ) -> list[Result | LedgerError]:
        """An unexpected SQL error: run each independent unit alone so one bad item
        cannot fail its neighbours; a unit failing alone gets the translated error."""
        spans = _group_spans(groups)
        if len(spans) == 1:
            return [translate(exc)] * len(commands)
        results: list[Result | LedgerError] = []
        for start, end in spans:
            results.extend(await self.execute(commands[start:end], groups[start:end]))
        return results

    async def _execute_once(
        self, commands: Sequence[Command], groups: list[int | None]
    ) -> list[Result | LedgerError]:
        async with self.engine.connect() as sa_conn:
            raw = await sa_conn.get_raw_connection()
            conn: asyncpg.Connection = raw.driver_connection
            try:
                with _gc_paused():
                    return await self._transaction(conn, commands, groups)
            except CONNECTION_LOST:
                await sa_conn.invalidate()  # never hand a dead connection back to the pool
                raise

    async def _transaction(
        self, conn: asyncpg.Connection, commands: Sequence[Command], groups: list[int | None]
    ) -> list[Result | LedgerError]:
        async with conn.transaction():
            stored = await self._stored_outcomes(conn, commands)
            holds = await self._lock_holds(conn, commands)
            originals = await self._originals(conn, commands)
            epoch, now, policy_generation, book = await self._lock_balances(
                conn,
                touched_accounts(commands, holds, originals)
                | self.policies.lock_ids(commands, holds),  # fee accounts
            )
            # policy hook: None unless a command falls under an active policy
            policy = await self.policies.prepare(
                conn, commands, holds, book, policy_generation, now
            )
            plan = plan_batch(
                commands,
                groups=groups,
                book=book,
                holds=holds,
                originals=originals,
                stored=stored,
                now=now,
                policy=policy,
            )
            return await self._write(conn, plan, book, epoch, now, commands)

    # -- reads under lock ----------------------------------------------------------------
    @staticmethod
    async def _stored_outcomes(
        conn: asyncpg.Connection, commands: Sequence[Command]
    ) -> dict[str, StoredOutcome]:
        keys = [c.idempotency_key for c in commands if c.idempotency_key is not None]
        if not keys:
            return {}
        rows = await conn.fetch(
            "SELECT key, request_hash, outcome::text AS outcome FROM idempotency_keys "
            "WHERE key = ANY($1::text[])",
            keys,
        )
        return {
            r["key"]: StoredOutcome(bytes(r["request_hash"]), json.loads(r["outcome"]))
            for r in rows
        }

    @staticmethod
    async def _lock_holds(
        conn: asyncpg.Connection, commands: Sequence[Command]
    ) -> dict[int, HoldRow]:
        ids = referenced_holds(commands)
        if not ids:
            return {}
        rows = await conn.fetch(
            "SELECT id, source_id, destination_id, asset, amount, remaining, status, expires_at "
            "FROM holds WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE",
            sorted(ids),
        )
        return {
            r["id"]: HoldRow(
                r["id"],
                r["source_id"],
                r["destination_id"],
                r["asset"],
                r["amount"],
                r["remaining"],
                HoldStatus(r["status"]),
                r["expires_at"],
            )
            for r in rows
        }

    @staticmethod
    async def _originals(
        conn: asyncpg.Connection, commands: Sequence[Command]
    ) -> dict[int, OriginalOperation]:
        ids = referenced_operations(commands)
        if not ids:
            return {}
        rows = await conn.fetch(
            "SELECT o.id, o.type, r.id AS reversed_by, "
            "       array_agg(e.account_id ORDER BY e.seq) AS accounts, "
            "       array_agg(e.asset ORDER BY e.seq) AS assets, "
            "       array_agg(e.amount ORDER BY e.seq) AS amounts "
            "FROM operations o JOIN ledger_entries e "
            "  ON e.seq BETWEEN o.first_seq AND o.last_seq AND e.operation_id = o.id "
            "LEFT JOIN operations r ON r.reverses_id = o.id "
            "WHERE o.id = ANY($1::bigint[]) AND o.status = 'COMPLETED' "
            "GROUP BY o.id, o.type, r.id",
            sorted(ids),
        )
        return {
            r["id"]: OriginalOperation(
                r["id"],
                OperationType(r["type"]),
                tuple(zip(r["accounts"], r["assets"], r["amounts"], strict=True)),
                r["reversed_by"],
            )
            for r in rows
        }

    @staticmethod
    async def _lock_balances(
        conn: asyncpg.Connection, account_ids: set[int]
    ) -> tuple[int, datetime, int, BalanceBook]:
        """Take the epoch lock (shared) and lock the balance rows; return the open epoch,
        the clock read after the locks (so per account ``created_at`` follows seq) and the
        policy generation."""
        rows = await conn.fetch(_LOCK_BALANCES, sorted(account_ids)) if account_ids else []
        if not rows:
            epoch, now, generation = await conn.fetchrow(
                "SELECT valueos_writer_epoch(), clock_timestamp(), valueos_policy_generation()"
            )
            return epoch, now, generation, BalanceBook([])
        book = BalanceBook(
            AccountState(
                r["account_id"],
                r["asset"],
                r["floor"],
                AccountStatus(r["status"]),
                r["posted"],
                r["pending"],
            )
            for r in rows
        )
        return rows[0]["epoch"], rows[0]["now"], rows[0]["policy_generation"], book

    # -- writes --------------------------------------------------------------------------
    async def _write(
        self,
        conn: asyncpg.Connection,
        plan: Plan,
        book: BalanceBook,
        epoch: int,
        now: datetime,
        commands: Sequence[Command],
    ) -> list[Result | LedgerError]:
        # one audit record per (actor, reason) of the batch's postings; the operations
        # point at it and it lists them (before/after of a posting are its entries)
        audit_groups: dict[tuple[Actor, str | None], list[PlannedOperation]] = {}
        group: list[PlannedOperation] = []
        actor: Actor | None = None
        reason: str | None = None
        for op in plan.operations:
            if op.actor is not actor or op.reason != reason:  # runs of one caller are common
                actor, reason = op.actor, op.reason
                group = audit_groups.setdefault((actor, reason), [])
            group.append(op)
        n_ops = len(plan.operations) + len(plan.failed_saga_operations)
        denials = denial_audit(plan, commands)  # policy denials are audited
        n_audit = len(audit_groups) + len(plan.new_holds) + len(plan.hold_changes) + len(denials)
        op_ids, seqs, hold_ids, audit_ids = await conn.fetchrow(
            _ALLOCATE, n_ops, plan.entry_count, len(plan.new_holds), n_audit
        )
        plan.assign(op_ids[: len(plan.operations)], seqs, hold_ids)
        audit: list[tuple[Any, ...]] = []
        op_rows: list[tuple[Any, ...]] = []
        entry_rows: list[tuple[Any, ...]] = []
        last_seq: dict[int, int] = {}
        audit_iter = iter(audit_ids)
        for (actor, reason), ops in audit_groups.items():
            audit_id = next(audit_iter)
            role = actor.role.value
            audit.append(
                (audit_id, now, actor.id, role, actor.ip, "operation.posted", "operation",
                 str(ops[0].id), None, _json({"operations": [op.id for op in ops]}), reason)
            )  # fmt: skip
            for op in ops:
                op_id = op.id
                seqs = op.seqs  # ascending: the operation's seq range (migration 0008)
                first, last = (seqs[0], seqs[-1]) if seqs else (None, None)
                op_rows.append(
                    (op_id, op.type.value, "COMPLETED", epoch, op.idempotency_key, actor.id,
                     role, op.saga_id, op.reverses, op.hold_id, reason, None,
                     _json(op.metadata), now, audit_id, policy_versions(op), first, last)
                )  # fmt: skip
                for seq, (account, asset, amount, balance_after) in zip(
                    op.seqs, op.entries, strict=True
                ):
                    entry_rows.append(
                        (seq, op_id, account, asset, amount, balance_after, epoch, now)
                    )
                    if seq > last_seq.get(account, 0):
                        last_seq[account] = seq
        for failed, op_id in zip(
            plan.failed_saga_operations, op_ids[len(plan.operations) :], strict=True
        ):
            c = failed.command
            op_rows.append(
                (op_id, c.type.value, "FAILED", None, c.idempotency_key, c.actor.id,
                 c.actor.role.value, c.saga_id, None, None, c.reason,
                 _json(failed.error.to_dict()), _json(c.metadata), now, None, None, None, None)
            )  # fmt: skip
        for actor, policy_id, decision in denials:
            audit.append(
                (next(audit_iter), now, actor.id, actor.role.value, actor.ip, "policy.denied",
                 "policy", policy_id, None, decision, None)
            )  # fmt: skip
        await self._write_holds(conn, plan, now, audit, audit_iter, commands)
        touched = sorted(book.touched)
        balances = [book.accounts[i] for i in touched]
        balance_columns = (
            touched,
            [a.posted for a in balances],
            [a.pending for a in balances],
            [last_seq.get(i, 0) for i in touched],
        )
        results, keyed = await self._results_while_writing(
            self._write_rows(conn, op_rows, entry_rows, audit, balance_columns, now),
            plan,
            commands,
            epoch,
            now,
        )
        await write_usage(conn, plan, now)
        if keyed:
            await conn.copy_records_to_table(
                "idempotency_keys",
                records=keyed,
                columns=["key", "request_hash", "outcome", "created_at"],
            )
        await self._update_sagas(conn, plan, now)
        await _write_chain_intents(conn, plan, commands)
        return results

    @staticmethod
    async def _write_rows(
        conn: asyncpg.Connection,
        op_rows: list[tuple[Any, ...]],
        entry_rows: list[tuple[Any, ...]],
        audit: list[tuple[Any, ...]],
        balance_columns: tuple[list[int], ...],
        now: datetime,
    ) -> None:
        touched = balance_columns[0]
        if len(entry_rows) + len(op_rows) < _COPY_FROM_ROWS:
            # a small batch (group commit of a few callers): latency matters more than
            # per-row cost, so everything goes in ONE statement (one round trip)
            await conn.execute(
                _WRITE_SMALL,
                *_transpose(op_rows, len(_OPERATION_COLUMNS)),
                *_transpose(entry_rows, len(_ENTRY_COLUMNS)),
                *_transpose(audit, len(_AUDIT_COLUMNS)),
                *balance_columns,
                now,
            )
        else:
            if op_rows:
                await conn.copy_records_to_table(
                    "operations", records=op_rows, columns=_OPERATION_COLUMNS
                )
            if entry_rows:
                await conn.copy_records_to_table(
                    "ledger_entries", records=entry_rows, columns=_ENTRY_COLUMNS
                )
            if touched:
                await conn.execute(_UPDATE_BALANCES, *balance_columns, now)
            if audit:
                await conn.copy_records_to_table("audit_log", records=audit, columns=_AUDIT_COLUMNS)

    @staticmethod
    async def _write_holds(
        conn: asyncpg.Connection,
        plan: Plan,
        now: datetime,
        audit: list[tuple[Any, ...]],
        audit_ids: Iterator[int],
        commands: Sequence[Command],
    ) -> None:
        if plan.new_holds:
            rows = []
            for h in plan.new_holds:
                c = h.command
                rows.append(
                    (h.id, c.source, c.destination, c.asset, c.amount, c.amount, 0, "PENDING",
                     c.expires_at, c.idempotency_key, c.actor.id, _json(c.metadata), now, now)
                )  # fmt: skip
                audit.append(
                    (next(audit_ids), now, c.actor.id, c.actor.role.value, c.actor.ip,
                     "hold.created", "hold", str(h.id), None,
                     _json({"status": "PENDING", "amount": c.amount}), None)
                )  # fmt: skip
            await conn.copy_records_to_table(
                "holds",
                records=rows,
                columns=[
                    "id", "source_id", "destination_id", "asset", "amount", "remaining",
                    "captured", "status", "expires_at", "idempotency_key", "actor_id",
                    "metadata", "created_at", "updated_at",
                ],
            )  # fmt: skip
        if plan.hold_changes:
            # one row per hold: its last state, and what all of the batch's changes captured
            final: dict[int, tuple[str, int, int]] = {}
            for change in plan.hold_changes:
                earlier = final.get(change.hold.id, ("", 0, 0))[2]
                final[change.hold.id] = (
                    change.status.value,
                    change.remaining,
                    earlier + change.captured,
                )
            await conn.execute(
                "UPDATE holds h SET status = u.status, remaining = u.remaining, "
                "captured = h.captured + u.captured, updated_at = $5 "
                "FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[]) "
                "AS u(id, status, remaining, captured) WHERE h.id = u.id",
                list(final),
                [v[0] for v in final.values()],
                [v[1] for v in final.values()],
                [v[2] for v in final.values()],
                now,
            )
            for change in plan.hold_changes:
                command = commands[change.item]
                actor = command.actor
                reason = command.reason if isinstance(command, VoidHold) else None
                audit.append(
                    (next(audit_ids), now, actor.id, actor.role.value, actor.ip,
                     f"hold.{change.status.value.lower()}" if change.remaining == 0
                     else "hold.partially_captured", "hold", str(change.hold.id),
                     _json({"status": "PENDING", "remaining": change.hold.remaining}),
                     _json({"status": change.status.value, "captured": change.captured,
                            "remaining": change.remaining}),
                     reason)
                )  # fmt: skip

    @classmethod
    async def _results_while_writing(
        cls,
        write: Coroutine[Any, Any, None],
        plan: Plan,
        commands: Sequence[Command],
        epoch: int,
        now: datetime,
    ) -> tuple[list[Result | LedgerError], list[tuple[Any, ...]]]:
        """Run ``write`` (the batch's rows) in a task and meanwhile build the callers'
        results and the stored outcomes, yielding between slices so the task can send its
        next statement: the server inserts while this process computes."""
        writing = asyncio.ensure_future(write)
        try:
            results: list[Result | LedgerError] = []
            outcomes = plan.iter_results(epoch, now)
            while chunk := list(itertools.islice(outcomes, _RESULTS_SLICE)):
                results += chunk
                if not writing.done():
                    await asyncio.sleep(0)
            keyed = cls._idempotency_rows(plan, results, commands, now)
            await writing
        finally:
            if not writing.done():  # cancelled (or failed) here: never leave the task behind
                writing.cancel()
                await asyncio.gather(writing, return_exceptions=True)
        return results, keyed

    @staticmethod
    def _idempotency_rows(
        plan: Plan,
        results: list[Result | LedgerError],
        commands: Sequence[Command],
        now: datetime,
    ) -> list[tuple[Any, ...]]:
        """The ``idempotency_keys`` rows of the batch: key, request hash, outcome."""
        return [
            (
                commands[i].idempotency_key,
                commands[i].request_hash(),
                _json(outcome_to_json(results[i])),
                now,
            )
            for i in plan.keyed_items
        ]

    @staticmethod
    async def _update_sagas(conn: asyncpg.Connection, plan: Plan, now: datetime) -> None:
        ids: set[UUID] = {op.saga_id for op in plan.operations if op.saga_id}
        ids |= {f.command.saga_id for f in plan.failed_saga_operations}  # type: ignore[misc]
        if ids:
            await recompute_sagas(conn, sorted(ids), now)


async def recompute_sagas(conn: asyncpg.Connection, ids: Sequence[UUID], now: datetime) -> None:
    """Re-derive the status of sagas from their operations (same DB transaction)."""
    await conn.execute(
        "SELECT 1 FROM sagas WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE", list(ids)
    )
    rows = await conn.fetch(
        "SELECT s.id, s.type, s.status, "
        "       coalesce(array_agg(o.type) FILTER (WHERE o.id IS NOT NULL), '{}') AS types, "
        "       coalesce(array_agg(o.status) FILTER (WHERE o.id IS NOT NULL), '{}') AS statuses "
        "FROM sagas s LEFT JOIN operations o ON o.saga_id = s.id "
        "WHERE s.id = ANY($1::uuid[]) GROUP BY s.id",
        list(ids),
    )
    changes = []
    for r in rows:
        if r["status"] == SagaStatus.CANCELLED:
            continue
        status = derive_status(
            SagaType(r["type"]),
            [
                (OperationType(t), OperationStatus(s))
                for t, s in zip(r["types"], r["statuses"], strict=True)
            ],
        )
        if status != r["status"]:
            changes.append((r["id"], status.value))
    if changes:
        await conn.execute(
            "UPDATE sagas s SET status = u.status, updated_at = $3 "
            "FROM unnest($1::uuid[], $2::text[]) AS u(id, status) WHERE s.id = u.id",
            [c[0] for c in changes],
            [c[1] for c in changes],
            now,
        )


async def _write_chain_intents(
    conn: asyncpg.Connection, plan: Plan, commands: Sequence[Command]
) -> None:
    """The outbox rows the batch's new operations commit to (a replay writes none: its row
    exists since the first time). A taken ``purpose`` + ``ref`` fails that command alone
    (ALREADY_EXISTS, see ``_isolate``)."""
    for op in plan.operations:
        command = commands[op.item]
        intent = command.chain_intent if isinstance(command, PostOperation) else None
        if intent is not None:
            await insert_intent(conn, intent, detail=f"operation {op.id}")
