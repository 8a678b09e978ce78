"""The audit log, read by AUDITOR, COMPLIANCE and ADMIN: every audited change with its
actor, role, IP, before/after and reason; filtered by entity, actor or action; newest
first, keyset-paged (``cursor`` = the ``next_cursor`` of the previous page)."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import QueryParameter

from api.auth import ADMIN, AUDITOR, COMPLIANCE, allow
from api.context import Ctx
from api.schemas.audit import AuditPageRead, AuditRecordRead
from core import audit

#: printable ASCII: what ids, actor ids and action names are made of
Text = Annotated[str | None, QueryParameter(pattern=r"^[!-~]{1,200}$")]


def _read(r: audit.AuditRecord) -> AuditRecordRead:
    return AuditRecordRead(
        r.id, r.at, r.actor_id, r.actor_role, r.ip, r.action, r.entity_type, r.entity_id,
        r.before, r.after, r.reason,
    )  # fmt: skip


class AuditController(Controller):
    path = "/api/v1/audit"
    tags = ["audit"]

    @get("/", guards=[allow({AUDITOR, COMPLIANCE, ADMIN}, scope="read")])
    async def list_records(
        self,
        ctx: NamedDependency[Ctx],
        entity_type: Text = None,
        entity_id: Text = None,
        actor_id: Text = None,
        action: Text = None,
        cursor: Annotated[int | None, QueryParameter(ge=1, le=2**63 - 1)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=audit.MAX_PAGE)] = 100,
    ) -> AuditPageRead:
        """Audit records, e.g. ``?entity_type=policy&entity_id=7`` or
        ``?actor_id=user:<uuid>``."""
        found = await audit.list_records(
            ctx.svc.ledger,
            entity_type=entity_type,
            entity_id=entity_id,
            actor_id=actor_id,
            action=action,
            before_id=cursor,
            limit=limit,
        )
        records = [_read(r) for r in found]
        more = len(records) == limit
        return AuditPageRead(records, records[-1].id if more and records else None)


ROUTES = [AuditController]
