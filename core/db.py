"""Database wiring: URL resolution (server or embedded), engine, migrations."""

from __future__ import annotations

import asyncio
import logging
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from core.settings import DatabaseSettings
from core.storage_errors import CONNECTION_LOST, translate

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_embedded: dict[Path, Any] = {}


def asyncpg_url(url: str) -> str:
    """Normalise ``postgres://``/``postgresql://`` URLs to SQLAlchemy's asyncpg dialect."""
    parts = urlsplit(url)
    if parts.scheme in {"postgres", "postgresql"}:
        url = "postgresql+asyncpg" + url[len(parts.scheme) :]
    elif parts.scheme != "postgresql+asyncpg":
        raise ValueError(f"DATABASE_URL must be a PostgreSQL URL, got scheme {parts.scheme!r}")
    return url


def start_embedded(data_dir: Path, cleanup: str = "stop") -> str:
    """Start (or reuse) an embedded PostgreSQL in ``data_dir``; return its URL.

    pgserver ships PostgreSQL binaries in its wheel; the server listens on a Unix
    socket inside the data directory and stops when this process exits (``cleanup``
    "delete" also removes the data directory: for throwaway test servers).
    """
    data_dir = data_dir.resolve()
    if data_dir not in _embedded:
        # pgserver asks platformdirs for its lock directory when imported; without
        # XDG_RUNTIME_DIR (shells over ssh, containers, CI) platformdirs warns
        # (RuntimeDirWarning) and falls back to <tmp>/runtime-<uid>, which works. Not the
        # user's concern on every command: ignore exactly that warning, from platformdirs.
        warnings.filterwarnings(
            "ignore", message="XDG_RUNTIME_DIR", category=UserWarning, module="platformdirs"
        )
        import pgserver  # noqa: PLC0415 - only needed without DATABASE_URL

        data_dir.mkdir(parents=True, exist_ok=True)
        _embedded[data_dir] = pgserver.get_server(  # type: ignore[attr-defined]
            data_dir, cleanup_mode=cleanup
        )
        log.info("embedded PostgreSQL running in %s", data_dir)
    return str(_embedded[data_dir].get_uri())


def resolve_url(settings: DatabaseSettings) -> str:
    return asyncpg_url(settings.url or start_embedded(settings.data_dir))


#: the database handle the layers above core pass around (they never touch SQLAlchemy itself)
Engine = AsyncEngine


def create_engine(url: str, pool_size: int = 10) -> AsyncEngine:
    return create_async_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)


def alembic_config(url: str) -> Config:
    cfg = Config(str(MIGRATIONS_DIR / "alembic.ini"))
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # alembic's ini parser treats % as interpolation; escape it in passwords.
    cfg.set_main_option("sqlalchemy.url", asyncpg_url(url).replace("%", "%%"))
    return cfg


def migrate(url: str, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (blocking; alembic owns the schema)."""
    command.upgrade(alembic_config(url), revision)


async def migrate_async(url: str, revision: str = "head") -> None:
    await asyncio.to_thread(migrate, url, revision)


async def schema_revision(engine: AsyncEngine) -> str | None:
    """The revision the database's schema is at; :class:`core.errors.StorageError` when the
    database cannot be reached."""
    try:
        async with engine.connect() as conn:
            found = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
    except (DBAPIError, *CONNECTION_LOST) as exc:
        raise translate(exc) from exc
    return None if found is None else str(found)
