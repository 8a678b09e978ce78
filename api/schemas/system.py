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
