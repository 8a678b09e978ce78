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
