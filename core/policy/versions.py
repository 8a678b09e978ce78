"""Policy versions (create, activate, retire, list — role-checked, audited) and dry run.

The API layer calls these; the write path's side lives in ``core.policy.store``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import asyncpg
from sqlalchemy import text

from core import audit
from core.epochs import raw_connection
from core.errors import Forbidden, LedgerError, ReasonRequired, UnknownAsset, UnknownPolicy
from core.planner import PlannedOperation, plan_batch
from core.policy.rules import FeeRule, document_to_json, parse_document
from core.policy.store import READ_BALANCES, account_state, prune_usage
from core.posting import BalanceBook
from core.types import Actor, OperationType, PostOperation, Role, SystemAccount

if TYPE_CHECKING:
    from core.ledger import Ledger

#: roles that may create, activate and retire policies
POLICY_ROLES = frozenset({Role.ADMIN, Role.COMPLIANCE})

# ---------------------------------------------------------------------------
# Policy versions: create, activate, retire, list (audited, role-checked)
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PolicyRecord:
    id: int
    asset: str
    operation_type: OperationType
    version: int
    status: str
    document: dict[str, Any]
    fee_account_id: int | None
    created_by: str
    created_at: datetime
    activated_at: datetime | None


_RECORD = (
    "SELECT id, asset, operation_type, version, status, document::text AS document, "
    "fee_account_id, created_by, created_at, activated_at FROM policies "
)


def _record(r: Any) -> PolicyRecord:
    return PolicyRecord(
        r.id, r.asset, OperationType(r.operation_type), r.version, r.status,
        json.loads(r.document), r.fee_account_id, r.created_by, r.created_at, r.activated_at,
    )  # fmt: skip


def _guard(actor: Actor, reason: str, what: str) -> None:
    if actor.role not in POLICY_ROLES:
        raise Forbidden(f"role {actor.role.value} may not {what}", role=actor.role.value)
    if not reason.strip():
        raise ReasonRequired(f"to {what} needs a reason", field="reason")


async def create_policy(
    ledger: Ledger,
    *,
    asset: str,
    operation_type: OperationType,
    document: dict[str, Any] | str | bytes,
    actor: Actor,
    reason: str,
) -> PolicyRecord:
    """Store a new DRAFT version (validated; ``InvalidPolicy`` names the exact path)."""
    _guard(actor, reason, "create a policy")
    operation_type = OperationType(operation_type)
    parsed = document_to_json(parse_document(document))
    async with ledger.engine.begin() as conn:
        await conn.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
            {"k": f"policy:{asset}:{operation_type.value}"},
        )
        if (
            await conn.execute(text("SELECT 1 FROM assets WHERE code = :a"), {"a": asset})
        ).first() is None:
            raise UnknownAsset(f"asset {asset} does not exist", code=asset)
        row = (
            await conn.execute(
                text(
                    "INSERT INTO policies (asset, operation_type, version, document, status, "
                    "created_by) SELECT :a, :o, coalesce(max(version), 0) + 1, "
                    "CAST(:d AS jsonb), 'DRAFT', :by FROM policies "
                    "WHERE asset = :a AND operation_type = :o RETURNING id"
                ),
                {"a": asset, "o": operation_type.value, "d": json.dumps(parsed), "by": actor.id},
            )
        ).one()
        found = await conn.execute(text(_RECORD + "WHERE id = :id"), {"id": row.id})
        record = _record(found.one())
        await audit.record(
            conn, actor, "policy.created", "policy", record.id,
            after={"asset": asset, "operation_type": operation_type.value,
                   "version": record.version, "document": parsed},
            reason=reason,
        )  # fmt: skip
    return record


async def activate_policy(
    ledger: Ledger, policy_id: int, *, actor: Actor, reason: str
) -> PolicyRecord:
    """Make a version THE policy of its (asset, operation type); the previous active one
    is retired. Takes effect for operations planned after this commits."""
    _guard(actor, reason, "activate a policy")
    current = await get_policy(ledger, policy_id)
    document = parse_document(json.dumps(current.document))  # validated on load too
    fee_account = None
    if any(isinstance(r, FeeRule) for r in document.rules):
        fee_account = await ledger.accounts.system_account(
            current.asset, SystemAccount.FEES, actor=actor
        )
    async with ledger.engine.begin() as conn:
        row = (
            await conn.execute(
                text("SELECT status FROM policies WHERE id = :id FOR UPDATE"), {"id": policy_id}
            )
        ).one()
        if row.status == "ACTIVE":
            return current
        previous = (
            await conn.execute(
                text(
                    "UPDATE policies SET status = 'RETIRED' WHERE asset = :a "
                    "AND operation_type = :o AND status = 'ACTIVE' RETURNING id, version"
                ),
                {"a": current.asset, "o": current.operation_type.value},
            )
        ).first()
        await conn.execute(
            text(
                "UPDATE policies SET status = 'ACTIVE', activated_at = clock_timestamp(), "
                "fee_account_id = :f WHERE id = :id"
            ),
            {"f": fee_account, "id": policy_id},
        )
        await conn.execute(text("UPDATE policy_state SET generation = generation + 1"))
        await audit.record(
            conn, actor, "policy.activated", "policy", policy_id,
            before={"status": row.status,
                    "replaces": None if previous is None else
                    {"policy_id": previous.id, "version": previous.version}},
            after={"status": "ACTIVE", "version": current.version},
            reason=reason,
        )  # fmt: skip
    return await get_policy(ledger, policy_id)


async def retire_policy(
    ledger: Ledger,
    *,
    asset: str,
    operation_type: OperationType,
    actor: Actor,
    reason: str,
) -> PolicyRecord | None:
    """Leave (asset, operation type) without a policy. Returns the retired version."""
    _guard(actor, reason, "retire a policy")
    async with ledger.engine.begin() as conn:
        row = (
            await conn.execute(
                text(
                    "UPDATE policies SET status = 'RETIRED' WHERE asset = :a "
                    "AND operation_type = :o AND status = 'ACTIVE' RETURNING id"
                ),
                {"a": asset, "o": OperationType(operation_type).value},
            )
        ).first()
        if row is None:
            return None
        await conn.execute(text("UPDATE policy_state SET generation = generation + 1"))
        await audit.record(
            conn, actor, "policy.retired", "policy", row.id,
            before={"status": "ACTIVE"}, after={"status": "RETIRED"}, reason=reason,
        )  # fmt: skip
    return await get_policy(ledger, row.id)


async def get_policy(ledger: Ledger, policy_id: int) -> PolicyRecord:
    async with ledger.engine.connect() as conn:
        row = (await conn.execute(text(_RECORD + "WHERE id = :id"), {"id": policy_id})).first()
    if row is None:
        raise UnknownPolicy(f"policy {policy_id} does not exist", policy_id=policy_id)
    return _record(row)


async def list_policies(
    ledger: Ledger,
    *,
    asset: str | None = None,
    operation_type: OperationType | None = None,
    active_only: bool = False,
) -> list[PolicyRecord]:
    async with ledger.engine.connect() as conn:
        rows = await conn.execute(
            text(
                _RECORD + "WHERE (CAST(:a AS text) IS NULL OR asset = :a) "
                "AND (CAST(:o AS text) IS NULL OR operation_type = :o) "
                "AND (NOT :active OR status = 'ACTIVE') "
                "ORDER BY asset, operation_type, version"
            ),
            {
                "a": asset,
                "o": None if operation_type is None else OperationType(operation_type).value,
                "active": active_only,
            },
        )
        return [_record(r) for r in rows]


# ---------------------------------------------------------------------------
# Dry run
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DryRun:
    """What posting ``command`` now would do. ``error`` is set when it would fail
    (a ``PolicyDenied`` or any other ledger error); nothing was written either way."""

    allowed: bool
    error: LedgerError | None
    #: (policy id, version) of the policies that allow it
    policies: tuple[tuple[int, int], ...]
    #: (asset, amount, fee account)
    fees: tuple[tuple[str, int, int], ...]
    #: (account, asset, signed amount, balance_after), fee legs included
    entries: tuple[tuple[int, str, int, int], ...]


async def dry_run(ledger: Ledger, command: PostOperation) -> DryRun:
    """Evaluate ``command`` as the write path would, without locking or writing anything."""
    cache = ledger.store.policies
    probe = PostOperation(
        command.type, command.entries, command.actor, None, command.metadata, command.reason,
        None,
    )  # fmt: skip
    async with ledger.engine.connect() as sa_conn:
        raw = await sa_conn.get_raw_connection()
        conn: asyncpg.Connection = raw.driver_connection
        async with conn.transaction(readonly=True):
            now, generation = await conn.fetchrow(
                "SELECT clock_timestamp(), valueos_policy_generation()"
            )
            ids = {e.account_id for e in probe.entries}
            rows = await conn.fetch(READ_BALANCES, sorted(ids))
            book = BalanceBook(account_state(r) for r in rows)
            ctx = await cache.prepare(conn, [probe], {}, book, generation, now, lock=False)
            plan = plan_batch(
                [probe], groups=[None], book=book, holds={}, originals={}, stored={}, now=now,
                policy=ctx,
            )  # fmt: skip
    outcome = plan.outcomes[0]
    if isinstance(outcome, LedgerError):
        return DryRun(False, outcome, (), (), ())
    if not isinstance(outcome, PlannedOperation):  # pragma: no cover - a PostOperation plans one
        raise TypeError(f"unexpected outcome {outcome!r}")
    applied = outcome.policy
    return DryRun(
        True,
        None,
        applied.versions if applied else (),
        tuple(applied.fees) if applied else (),
        tuple(outcome.entries),
    )


async def prune_expired_usage(ledger: Ledger) -> int:
    """Delete the rolling-limit buckets no window counts any more; returns how many."""
    async with raw_connection(ledger.engine) as conn:
        return await prune_usage(conn)
