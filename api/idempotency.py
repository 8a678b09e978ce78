"""``Idempotency-Key`` for every creating endpoint, with the core's semantics.

Per (client, key) the first request's hash (method, path, query, canonical body) is
recorded before anything runs. A repeat with the same hash gets the stored response
(``Idempotent-Replayed: true``), a different hash ``409 IDEMPOTENCY_CONFLICT``.
Business failures are remembered like successes; validation failures (422) are not,
so a corrected request may reuse its key.

Ledger writes also carry the core's idempotency key ``http:<client>:<key>``: should the
process die after the ledger committed but before the response was stored, the retry
(allowed once the first attempt is ``STALE_AFTER`` old) gets the ledger's stored
result and posts nothing twice. Values the API derives at the first attempt (a hold's
deadline) are *pinned* with the record, so the retry builds the very same command.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from litestar import Request, Response
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from api.errors import ApiError
from core.errors import IdempotencyConflict, LedgerError, ValidationError

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
_KEY = re.compile(r"^[\x21-\x7e]{1,200}$")
STALE_AFTER_SECONDS = 30.0
WAIT_SECONDS = 5.0


@dataclass(slots=True)
class Attempt:
    #: the core idempotency key for the ledger command (None without a header)
    core_key: str | None
    #: values fixed at the first attempt; ``pin`` adds them, replays read them
    pinned: dict[str, Any] = field(default_factory=dict)


def request_hash(request: Request[Any, Any, Any], body: Any) -> bytes:
    canonical = msgspec.json.encode(body, order="sorted") if body is not None else b""
    parts = (request.method, request.url.path, request.url.query or "")
    return hashlib.sha256("\x00".join(parts).encode() + b"\x00" + canonical).digest()


class InProgress(ApiError):
    def __init__(self) -> None:
        super().__init__(
            409, "IDEMPOTENCY_IN_PROGRESS", "a request with this Idempotency-Key is in progress"
        )


async def _claim(
    engine: AsyncEngine, client: str, key: str, digest: bytes, pinned: dict[str, Any]
) -> tuple[str, Any]:
    """('new', pinned) | ('done', (status, response)) | ('retry', pinned) | ('busy', None)."""
    async with engine.begin() as conn:
        inserted = (
            await conn.execute(
                text(
                    "INSERT INTO api_idempotency (client, key, request_hash, pinned) "
                    "VALUES (:c, :k, :h, CAST(:p AS jsonb)) ON CONFLICT DO NOTHING RETURNING 1"
                ),
                {"c": client, "k": key, "h": digest, "p": json.dumps(pinned)},
            )
        ).first()
        if inserted is not None:
            return "new", pinned
        row = (
            await conn.execute(
                text(
                    "SELECT request_hash, pinned, status, response, "
                    "extract(epoch FROM now() - created_at) AS age "
                    "FROM api_idempotency WHERE client = :c AND key = :k FOR UPDATE"
                ),
                {"c": client, "k": key},
            )
        ).one()
        if bytes(row.request_hash) != digest:
            raise IdempotencyConflict(
                "this Idempotency-Key was used with a different request", field=HEADER
            )
        if row.status is not None:
            return "done", (row.status, row.response)
        if float(row.age) > STALE_AFTER_SECONDS:
            await conn.execute(
                text(
                    "UPDATE api_idempotency SET created_at = now() WHERE client = :c AND key = :k"
                ),
                {"c": client, "k": key},
            )
            return "retry", dict(row.pinned)
        return "busy", None


async def _finish(
    engine: AsyncEngine, client: str, key: str, status: int | None, response: Any
) -> None:
    async with engine.begin() as conn:
        if status is None:
            await conn.execute(
                text("DELETE FROM api_idempotency WHERE client = :c AND key = :k"),
                {"c": client, "k": key},
            )
        else:
            await conn.execute(
                text(
                    "UPDATE api_idempotency SET status = :s, response = CAST(:r AS jsonb), "
                    "completed_at = now() WHERE client = :c AND key = :k"
                ),
                {"c": client, "k": key, "s": status, "r": json.dumps(response)},
            )


def _replay(status: int, response: Any) -> Response[Any]:
    if status >= 400:
        err = response or {}
        error = ApiError(status, str(err.get("code")), str(err.get("message")), replayed=True)
        # the first answer's details too (a POLICY_DENIED's rule and policy version)
        error.details = {**dict(err.get("details") or {}), "replayed": True}
        raise error
    return Response(response, status_code=status, headers={REPLAYED_HEADER: "true"})


async def idempotent(
    request: Request[Any, Any, Any],
    engine: AsyncEngine,
    client: str,
    body: Any,
    run: Callable[[Attempt], Awaitable[Any]],
    *,
    status_code: int = 201,
    pin: Callable[[], Awaitable[dict[str, Any]]] | None = None,
    stored: Callable[[Any], Any] = msgspec.to_builtins,
) -> Response[Any]:
    """Run ``run`` at most once per (client, Idempotency-Key); see the module doc.

    ``stored`` turns the result into what is remembered for replays (e.g. without a
    secret shown only once)."""
    key = request.headers.get(HEADER)
    if key is None:
        return Response(
            await run(Attempt(None, await pin() if pin else {})), status_code=status_code
        )
    if not _KEY.match(key):
        raise ValidationError(
            "Idempotency-Key must be 1-200 visible ASCII characters", field=HEADER
        )
    digest = request_hash(request, body)
    pinned = await pin() if pin else {}
    deadline = asyncio.get_running_loop().time() + WAIT_SECONDS
    while True:
        state, value = await _claim(engine, client, key, digest, pinned)
        if state == "done":
            return _replay(*value)
        if state in {"new", "retry"}:
            break
        if asyncio.get_running_loop().time() > deadline:
            raise InProgress()
        await asyncio.sleep(0.05)
    try:
        result = await run(Attempt(f"http:{client}:{key}", value))
    except LedgerError as exc:
        remember = exc.status < 500 and exc.status != 422
        await _finish(engine, client, key, exc.status if remember else None, exc.to_dict())
        raise
    except BaseException:
        await _finish(engine, client, key, None, None)
        raise
    await _finish(engine, client, key, status_code, stored(result))
    return Response(result, status_code=status_code)
