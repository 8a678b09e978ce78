"""Test support: a PostgreSQL server (DATABASE_URL or embedded) and throwaway databases."""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from core.db import asyncpg_url, migrate_async, start_embedded

_server_url: str | None = None


def server_url() -> str:
    """The server tests use: ``DATABASE_URL`` if set, else one embedded PostgreSQL."""
    global _server_url  # noqa: PLW0603 - one server per test process
    if _server_url is None:
        url = os.environ.get("DATABASE_URL")
        if not url:
            # a short path: the Unix socket lives in the data directory (107-byte limit)
            url = start_embedded(Path(tempfile.mkdtemp(prefix="vo-pg-")), cleanup="delete")
        _server_url = asyncpg_url(url)
    return _server_url


def _plain(url: str, database: str) -> str:
    return (
        make_url(url)
        .set(drivername="postgresql", database=database)
        .render_as_string(hide_password=False)
    )


async def create_database(migrated: bool = True) -> str:
    """Create a fresh database on the test server; return its SQLAlchemy URL."""
    base = server_url()
    name = f"vo_test_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(_plain(base, "postgres"))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = make_url(base).set(database=name).render_as_string(hide_password=False)
    if migrated:
        await migrate_async(url)
    return url


async def drop_database(url: str) -> None:
    name = make_url(url).database
    conn = await asyncpg.connect(_plain(server_url(), "postgres"))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def raw_connect(url: str) -> asyncpg.Connection:
    return await asyncpg.connect(_plain(url, str(make_url(url).database)))


async def blocked_backend(
    database_url: str, task: asyncio.Task[Any], query_like: str
) -> int | None:
    """Wait (bounded) until a backend running a query ``LIKE query_like`` waits on a lock;
    its pid, or None when ``task`` finished first (it never had to wait)."""
    watcher = await raw_connect(database_url)
    try:
        for _ in range(500):  # bounded poll for the statement to be blocked on the lock
            pid: int | None = await watcher.fetchval(
                "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE $1 AND pid <> pg_backend_pid() AND datname = current_database()",
                query_like,
            )
            if pid is not None or task.done():
                return pid
            await asyncio.sleep(0.01)
        raise AssertionError(f"no backend running {query_like!r} blocked, and {task} runs on")
    finally:
        await watcher.close()


async def wait_until_blocked(
    database_url: str, tasks: Sequence[asyncio.Task[Any]], query_like: str, count: int
) -> None:
    """Wait (bounded) until ``count`` backends running a query ``LIKE query_like`` wait on a
    lock: every one of ``tasks`` is then in flight at the same point. Fails if a task
    finishes first (it never had to wait) or they never all block."""
    watcher = await raw_connect(database_url)
    try:
        for _ in range(1000):  # bounded poll for the statements to be blocked on the lock
            blocked: int = await watcher.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE $1 AND pid <> pg_backend_pid() AND datname = current_database()",
                query_like,
            )
            if blocked >= count:
                return
            done = [t for t in tasks if t.done()]
            if done:
                raise AssertionError(f"{done[0]} finished without waiting ({blocked} blocked)")
            await asyncio.sleep(0.01)
        raise AssertionError(f"only {blocked} of {count} backends running {query_like!r} blocked")
    finally:
        await watcher.close()


async def terminate_when_blocked(
    database_url: str, task: asyncio.Task[Any], query_like: str
) -> None:
    """Wait (bounded) until a backend running a query ``LIKE query_like`` waits on a lock,
    then kill it: a crash in the middle of that statement. Fails if it never blocks."""
    pid = await blocked_backend(database_url, task, query_like)
    assert pid is not None, "the batch never blocked"
    watcher = await raw_connect(database_url)
    try:
        await watcher.execute("SELECT pg_terminate_backend($1)", pid)
    finally:
        await watcher.close()
