"""Audit records for writes outside the posting path (assets, accounts, sagas), and the
auditor's keyset-paged read of them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from core.errors import ValidationError
from core.types import Actor

if TYPE_CHECKING:
    from core.ledger import Ledger

_INSERT = text(
    "INSERT INTO audit_log (actor_id, actor_role, ip, action, entity_type, entity_id, "
    "before, after, reason) VALUES (:actor_id, :role, :ip, :action, :entity_type, "
    ":entity_id, CAST(:before AS jsonb), CAST(:after AS jsonb), :reason)"
)


async def record(
    conn: AsyncConnection,
    actor: Actor,
    action: str,
    entity_type: str,
    entity_id: object,
    *,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    reason: str | None = None,
) -> None:
    """Write one audit record in the caller's transaction."""
    await conn.execute(
        _INSERT,
        {
            "actor_id": actor.id,
            "role": actor.role.value,
            "ip": actor.ip,
            "action": action,
            "entity_type": entity_type,
            "entity_id": str(entity_id),
            "before": json.dumps(before, default=str) if before is not None else None,
            "after": json.dumps(after, default=str) if after is not None else None,
            "reason": reason,
        },
    )


# -- reading (the auditor's view) ----------------------------------------------------------

MAX_PAGE = 500


@dataclass(frozen=True, slots=True)
class AuditRecord:
    id: int
    at: datetime
    actor_id: str
    actor_role: str
    ip: str | None
    action: str
    entity_type: str
    entity_id: str | None
    before: Any
    after: Any
    reason: str | None


def _audit_record(r: Any) -> AuditRecord:
    before = None if r.before is None else json.loads(r.before)
    after = None if r.after is None else json.loads(r.after)
    return AuditRecord(
        r.id, r.at, r.actor_id, r.actor_role, r.ip, r.action, r.entity_type, r.entity_id,
        before, after, r.reason,
    )  # fmt: skip


async def list_records(
    ledger: Ledger,
    *,
    entity_type: str | None = None,
    entity_id: str | None = None,
    actor_id: str | None = None,
    action: str | None = None,
    before_id: int | None = None,
    limit: int = 100,
) -> list[AuditRecord]:
    """Audit records newest first, filtered by entity (type, and id), actor or action;
    keyset-paged: pass the last ``id`` of a page as ``before_id`` for the next one."""
    if not 1 <= limit <= MAX_PAGE:
        raise ValidationError(f"limit must be between 1 and {MAX_PAGE}", field="limit")
    if entity_id is not None and entity_type is None:
        raise ValidationError("entity_id needs entity_type", field="entity_id")
    where: list[str] = []
    params: dict[str, Any] = {"limit": limit}
    for column, value in (
        ("entity_type", entity_type),
        ("entity_id", entity_id),
        ("actor_id", actor_id),
        ("action", action),
    ):
        if value is not None:
            where.append(f"{column} = :{column}")
            params[column] = value
    if before_id is not None:
        where.append("id < :before_id")
        params["before_id"] = before_id
    sql = (
        "SELECT id, at, actor_id, actor_role, ip, action, entity_type, entity_id, "
        "before::text AS before, after::text AS after, reason FROM audit_log "
        + ("WHERE " + " AND ".join(where) + " " if where else "")
        + "ORDER BY id DESC LIMIT :limit"
    )
    async with ledger.engine.connect() as conn:
        rows = await conn.execute(text(sql), params)
        return [_audit_record(r) for r in rows]
