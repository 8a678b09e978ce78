"""Settings of the core, read from the environment once (cached accessor)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path


@dataclass(frozen=True, slots=True)
class DatabaseSettings:
    #: ``DATABASE_URL``; when unset an embedded PostgreSQL (pgserver) is started.
    url: str | None
    #: where the embedded PostgreSQL keeps its data (``VALUEOS_DATA_DIR``)
    data_dir: Path
    pool_size: int
    #: group commit: how long the batcher waits for more postings, and the batch cap
    batch_linger_ms: float
    batch_max: int

    @classmethod
    def from_env(cls) -> DatabaseSettings:
        return cls(
            url=os.environ.get("DATABASE_URL") or None,
            data_dir=Path(os.environ.get("VALUEOS_DATA_DIR", ".valueos/pgdata")),
            pool_size=int(os.environ.get("VALUEOS_DB_POOL", "10")),
            batch_linger_ms=float(os.environ.get("VALUEOS_BATCH_LINGER_MS", "1.5")),
            batch_max=int(os.environ.get("VALUEOS_BATCH_MAX", "2000")),
        )


@lru_cache(maxsize=1)
def database_settings() -> DatabaseSettings:
    return DatabaseSettings.from_env()


def _ledger_id(value: str) -> bytes:
    """``VALUEOS_LEDGER_ID``: 0x + 64 hex digits taken as is, any other text keccak-hashed."""
    from merkle.tree import keccak256  # noqa: PLC0415 - pure hashing, see core/epochs.py

    if value.startswith("0x") and len(value) == 66:
        return bytes.fromhex(value[2:])
    return keccak256(value.encode())


@dataclass(frozen=True, slots=True)
class EpochSettings:
    #: the bytes32 ledger id in every leaf and header (``VALUEOS_LEDGER_ID``)
    ledger_id: bytes
    #: seal (and anchor) an epoch without entries on schedule (``VALUEOS_SEAL_EMPTY``)
    seal_empty: bool

    @classmethod
    def from_env(cls) -> EpochSettings:
        return cls(
            ledger_id=_ledger_id(os.environ.get("VALUEOS_LEDGER_ID", "valueos:default")),
            seal_empty=os.environ.get("VALUEOS_SEAL_EMPTY", "").lower() in {"1", "true", "yes"},
        )


@lru_cache(maxsize=1)
def epoch_settings() -> EpochSettings:
    return EpochSettings.from_env()
