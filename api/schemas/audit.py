"""Bodies of the audit log endpoint."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from msgspec import Struct


class AuditRecordRead(Struct):
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


class AuditPageRead(Struct):
    records: list[AuditRecordRead]
    #: pass as ``cursor`` for the next (older) page; null at the end
    next_cursor: int | None
