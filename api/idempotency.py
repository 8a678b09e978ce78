"""``Idempotency-Key`` for every creating endpoint, with the core's semantics.

Per (client, key) the first request's hash (method, path, query, canonical body) is
recorded before anything runs. A repeat with the same hash gets the stored response
(``Idempotent-Replayed: true``), a different hash ``409 IDEMPOTENCY_CONFLICT``.
Business failures are remembered like successes; validation failures (422) are not,
so a corrected request may reuse its key.

Ledger writes also carry the core's idempotency key ``http:<client>:<key>``: should the
process die after the ledger committed but before the response was stored, the retry
gets the ledger's stored result and posts nothing twice. A retry while the first attempt
runs answers 409 ``IDEMPOTENCY_IN_PROGRESS`` (after waiting up to ``WAIT_SECONDS``) for as
long as the process running it is alive — once it has died, the next retry takes over at
once (``core.request_records``: each process holds a liveness lock in PostgreSQL).
Values the API derives at the first attempt (a hold's deadline) are *pinned* with the
record, so the retry builds the very same command.

The records are stored by :class:`core.request_records.Records` (group-committed; each
caller awaits its own row, so nothing is answered before its record is durable).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from litestar import Request, Response

from api.errors import ApiError
from core.errors import IdempotencyConflict, LedgerError, ValidationError
from core.request_records import Records

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
_KEY = re.compile(r"^[\x21-\x7e]{1,200}$")
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
    records: Records,
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
        state, value = await records.claim(client, key, digest, pinned)
        if state == "done":
            return _replay(*value)
        if state == "conflict":
            raise IdempotencyConflict(
                "this Idempotency-Key was used with a different request", field=HEADER
            )
        if state in {"new", "retry"}:
            break
        if asyncio.get_running_loop().time() > deadline:
            raise InProgress()
        await asyncio.sleep(0.05)
    try:
        result = await run(Attempt(f"http:{client}:{key}", value))
    except LedgerError as exc:
        remember = exc.status < 500 and exc.status != 422
        await records.finish(client, key, exc.status if remember else None, exc.to_dict())
        raise
    except BaseException:
        await records.finish(client, key, None, None)
        raise
    await records.finish(client, key, status_code, stored(result))
    return Response(result, status_code=status_code)
