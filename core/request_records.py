"""The ``api_idempotency`` records: per (client, Idempotency-Key) the request's hash, the
values pinned at its first attempt, and the remembered response.

Every idempotent request writes twice: its claim before it runs and its completion after.
:class:`Records` writes whatever is waiting in one statement on one held connection
(group commit); each caller still awaits its own row being committed before it goes on, so
the semantics are the per-request ones. The HTTP side (hashing a request, replaying a
response) is :mod:`api.idempotency`. Driver failures reach callers as core errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import weakref
from dataclasses import dataclass
from functools import partial
from typing import Any

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from core.storage_errors import translate

__all__ = ["STALE_AFTER_SECONDS", "Records"]

#: an unfinished claim of a process that is still alive is taken over after this long (the
#: first attempt is stuck); one whose process died is taken over at once (``owner``)
STALE_AFTER_SECONDS = 600.0
#: the same, for claims without an owner (written before owners were recorded)
UNOWNED_STALE_AFTER_SECONDS = 30.0
#: the advisory-lock class of the processes' liveness locks (``pg_advisory_lock(7301, id)``)
LIVENESS_LOCK_CLASS = 7301


async def _existing(
    engine: AsyncEngine, client: str, key: str, digest: bytes, me: int
) -> tuple[str, Any]:
    """The claim's slow path, when the record exists: ('done', (status, response)) |
    ('retry', pinned) | ('busy', None) | ('conflict', None) (another request under the key) |
    ('gone', None) (deleted meanwhile: claim again).

    An unfinished record is busy while the process that claimed it lives — its liveness
    lock is held — and taken over (``owner`` becomes ``me``) once it does not."""
    async with engine.begin() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT request_hash, pinned, status, response, owner, "
                    "extract(epoch FROM now() - created_at) AS age, "
                    "EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' "
                    "  AND classid = :class AND objid::bigint = owner AND objsubid = 2 "
                    "  AND granted) AS owner_alive "
                    "FROM api_idempotency WHERE client = :c AND key = :k FOR UPDATE"
                ),
                {"c": client, "k": key, "class": LIVENESS_LOCK_CLASS},
            )
        ).first()
        if row is None:
            return "gone", None
        if bytes(row.request_hash) != digest:
            return "conflict", None
        if row.status is not None:
            return "done", (row.status, row.response)
        age = float(row.age)
        if row.owner is None:
            stale = age > UNOWNED_STALE_AFTER_SECONDS
        else:
            stale = not row.owner_alive or age > STALE_AFTER_SECONDS
        if stale:
            await conn.execute(
                text(
                    "UPDATE api_idempotency SET created_at = now(), owner = :me "
                    "WHERE client = :c AND key = :k"
                ),
                {"c": client, "k": key, "me": me},
            )
            return "retry", dict(row.pinned)
        return "busy", None


# Claims and completions of concurrent requests in ONE autocommit statement (atomic on
# its own: no BEGIN/COMMIT round trips). The sub-statements see one snapshot, so a
# batch never carries a claim and a completion of the same record (see ``_split``).
_FLUSH = """
WITH done AS (
    UPDATE api_idempotency i
    SET status = u.status, response = u.response, completed_at = now()
    FROM unnest($1::text[], $2::text[], $3::int[], $4::jsonb[]) AS u(client, key, status, response)
    WHERE i.client = u.client AND i.key = u.key
), dropped AS (
    DELETE FROM api_idempotency i
    USING unnest($5::text[], $6::text[]) AS u(client, key)
    WHERE i.client = u.client AND i.key = u.key
)
INSERT INTO api_idempotency (client, key, request_hash, pinned, owner)
SELECT *, $11::integer FROM unnest($7::text[], $8::text[], $9::bytea[], $10::jsonb[])
ON CONFLICT DO NOTHING
RETURNING client, key
"""


@dataclass(slots=True)
class _Write:
    client: str
    key: str
    #: a claim: the request hash; a completion: None
    digest: bytes | None
    #: a claim: the pinned values; a completion: the stored response (JSON text)
    payload: str | None
    #: a completion: the status to remember; None with a claim, or to forget the record
    status: int | None
    future: asyncio.Future[bool]


class Records:
    """The ``api_idempotency`` writes of one process, group-committed: one statement on one
    held connection for whatever is waiting, instead of a pool checkout and a transaction
    per write (so concurrent requests do not queue the ledger's own batches behind them).

    Before its first claim the process takes its liveness lock, ``pg_advisory_lock(7301,
    owner)`` on a connection it keeps: its claims are in progress exactly while that lock is
    held, so after the process dies a retry elsewhere takes over at once (``_existing``).
    """

    def __init__(self, engine: AsyncEngine, *, workers: int = 1, batch_max: int = 500) -> None:
        self.engine = engine
        #: this process's liveness lock id, written as the ``owner`` of its claims
        self.owner = secrets.randbelow(2**31 - 1) + 1
        self._liveness: AsyncConnection | None = None
        self._liveness_lock = asyncio.Lock()
        self.batch_max = batch_max
        self._workers = workers
        self._queue: asyncio.Queue[_Write] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        #: statements written and rows carried (benchmarks, tests)
        self.flushes = 0
        self.rows = 0

    @classmethod
    def of(cls, engine: AsyncEngine) -> Records:
        """The records writer of ``engine`` (one per engine, made on first use)."""
        found = _BY_ENGINE.get(engine)
        if found is None:
            found = _BY_ENGINE[engine] = cls(engine)
        return found

    async def _alive(self) -> None:
        """Hold this process's liveness lock (taken once, kept until ``close``)."""
        if self._liveness is not None and not self._liveness.closed:
            return
        async with self._liveness_lock:
            if self._liveness is not None and not self._liveness.closed:
                return
            conn = await self.engine.connect()
            try:
                await conn.execute(
                    text("SELECT pg_advisory_lock(:class, :owner)"),
                    {"class": LIVENESS_LOCK_CLASS, "owner": self.owner},
                )
                await conn.commit()
            except BaseException:
                await conn.invalidate()
                await conn.close()
                raise
            self._liveness = conn

    async def close(self) -> None:
        if self._liveness is not None:
            # invalidate: the session ends (and its lock with it) instead of going back
            # to the pool still holding the lock
            await self._liveness.invalidate()
            await self._liveness.close()
            self._liveness = None
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def claim(
        self, client: str, key: str, digest: bytes, pinned: dict[str, Any]
    ) -> tuple[str, Any]:
        """('new', pinned) | ('done', (status, response)) | ('retry', pinned) | ('busy', None)
        | ('conflict', None)."""
        try:
            await self._alive()
        except Exception as exc:
            raise translate(exc) from exc
        while True:
            future = self._submit(client, key, digest, json.dumps(pinned), None)
            try:
                inserted = await asyncio.shield(future)
            except asyncio.CancelledError:
                # the claim may still commit: forget it then, or the key stays busy
                future.add_done_callback(partial(self._forget_if_claimed, client, key))
                raise
            if inserted:
                return "new", pinned
            state, value = await _existing(self.engine, client, key, digest, self.owner)
            if state != "gone":
                return state, value

    async def finish(self, client: str, key: str, status: int | None, response: Any) -> None:
        """Remember the outcome (``status`` None: forget the record, the key is free)."""
        payload = json.dumps(response) if status is not None else None
        await asyncio.shield(self._submit(client, key, None, payload, status))

    def _forget_if_claimed(self, client: str, key: str, future: asyncio.Future[bool]) -> None:
        if not future.cancelled() and future.exception() is None and future.result():
            self._submit(client, key, None, None, None)

    def _submit(
        self, client: str, key: str, digest: bytes | None, payload: str | None, status: int | None
    ) -> asyncio.Future[bool]:
        loop = asyncio.get_running_loop()
        if not self._tasks:
            self._tasks = [loop.create_task(self._run()) for _ in range(self._workers)]
        future: asyncio.Future[bool] = loop.create_future()
        self._queue.put_nowait(_Write(client, key, digest, payload, status, future))
        return future

    async def _run(self) -> None:
        while True:
            first: _Write | None = await self._queue.get()
            try:
                async with self.engine.connect() as sa_conn:
                    raw = await sa_conn.get_raw_connection()
                    conn: asyncpg.Connection = raw.driver_connection
                    # keep the connection while writes keep coming (one checkout and
                    # pre-ping per busy spell, not per statement)
                    while first is not None:
                        if not await self._flush(conn, self._gather(first)):
                            await sa_conn.invalidate()
                            break
                        first = None if self._queue.empty() else self._queue.get_nowait()
            except Exception as exc:  # no connection: the write in hand fails
                if first is not None and not first.future.done():
                    first.future.set_exception(translate(exc))

    def _gather(self, first: _Write) -> list[_Write]:
        """``first`` and whatever else waits, one write per record (see ``_split``)."""
        batch = [first]
        while len(batch) < self.batch_max and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        now, later = _split(batch)
        for item in later:
            self._queue.put_nowait(item)
        return now

    async def _flush(self, conn: asyncpg.Connection, batch: list[_Write]) -> bool:
        """Write ``batch``, resolve its callers; False when the connection is broken."""
        try:
            inserted = await self._write(conn, batch)
        except Exception as exc:
            rejected = isinstance(exc, asyncpg.PostgresError) and not isinstance(
                exc, asyncpg.PostgresConnectionError
            )
            if rejected and len(batch) > 1:
                # the statement was rejected as a whole (nothing written): one row at a
                # time, so only the offending request fails
                for item in batch:
                    await self._flush(conn, [item])
                return True
            # connection lost, or the one row is bad: its callers fail
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(translate(exc))
            return rejected
        self.flushes += 1
        self.rows += len(batch)
        for item in batch:
            if not item.future.done():
                item.future.set_result((item.client, item.key) in inserted)
        return True

    async def _write(self, conn: asyncpg.Connection, batch: list[_Write]) -> set[tuple[str, str]]:
        claims = [w for w in batch if w.digest is not None]
        done = [w for w in batch if w.digest is None and w.status is not None]
        dropped = [w for w in batch if w.digest is None and w.status is None]
        rows = await conn.fetch(
            _FLUSH,
            [w.client for w in done], [w.key for w in done],
            [w.status for w in done], [w.payload for w in done],
            [w.client for w in dropped], [w.key for w in dropped],
            [w.client for w in claims], [w.key for w in claims],
            [w.digest for w in claims], [w.payload for w in claims], self.owner,
        )  # fmt: skip
        return {(r["client"], r["key"]) for r in rows}


_BY_ENGINE: weakref.WeakKeyDictionary[AsyncEngine, Records] = weakref.WeakKeyDictionary()


def _split(batch: list[_Write]) -> tuple[list[_Write], list[_Write]]:
    """(this statement, the next one): one write per record per statement, so a record
    is never claimed and completed (or claimed twice) in one snapshot."""
    seen: set[tuple[str, str]] = set()
    now: list[_Write] = []
    later: list[_Write] = []
    for w in batch:
        ident = (w.client, w.key)
        (later if ident in seen else now).append(w)
        seen.add(ident)
    return now, later
