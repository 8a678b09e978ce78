"""Public probes: /health (the process answers) and /ready (database reachable, schema at
the migrations' head; ``degraded`` with the ids of open integrity alarms)."""

from __future__ import annotations

from typing import Any

from litestar import Request, get

from api.auth import PUBLIC
from api.errors import ApiError
from api.schemas.system import HealthRead, ReadyRead
from api.services import Services
from core.bridges.status import bridge_status
from core.errors import StorageError
from core.integrity import open_alarms

OPT = {**PUBLIC, "rate_group": None}


@get("/health", opt=OPT, tags=["system"], summary="Liveness")
async def health() -> HealthRead:
    return HealthRead("ok")


@get("/ready", opt=OPT, tags=["system"], summary="Readiness: database and schema")
async def ready(request: Request[Any, Any, Any]) -> ReadyRead:
    svc: Services = request.app.state.services
    expected: str | None = request.app.state.schema_head
    try:
        current = await svc.ledger.schema_revision()
    except StorageError as exc:
        raise ApiError(503, "NOT_READY", "database unreachable") from exc
    if current != expected:
        raise ApiError(
            503, "NOT_READY", f"schema at {current}, expected {expected}: run valueos migrate"
        )
    paused = [t.asset for t in await bridge_status(svc.ledger) if t.paused]
    alarms = [a.id for a in await open_alarms(svc.ledger.engine)]
    if alarms:
        return ReadyRead("degraded", "ok", current, expected, paused, "degraded", alarms)
    return ReadyRead("ready", "ok", current, expected, paused)


ROUTES = [health, ready]
