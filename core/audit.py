"""Audit records for writes outside the posting path (assets, accounts, sagas)."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from core.types import Actor

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
