"""Bodies of the public probes."""

from __future__ import annotations

from msgspec import Struct


class HealthRead(Struct):
    status: str


class ReadyRead(Struct):
    status: str
    database: str
    schema_revision: str | None
    expected_revision: str | None
    #: assets whose outbound bridging is paused (e.g. a broken supply invariant)
    bridges_paused: list[str]
    #: "ok", or "degraded" while an integrity alarm is open (sealing, anchoring and bridge
    #: mints paused until an operator acknowledges it: ``valueos audit ack``)
    integrity: str = "ok"
    #: ids of the open integrity alarms
    integrity_alarms: list[int] = []
