"""P2P requests: the rules, the states and the rows, creating and reading them.

A requester asks a payer for an amount of an asset (optionally with a memo and a
deadline). ``create_request`` checks the shape (``validate_request``) and the parties,
and is idempotent per requester key. ``get_request`` / ``list_requests`` answer only the
two parties; anyone else gets the same 404 as for a request that does not exist.

What moves a request out of PENDING (settle, decline, cancel, expiry) is in
``core.p2p.transitions``; ``core.p2p`` re-exports both modules.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from core import audit
from core.errors import (
    IdempotencyConflict,
    InvalidAmount,
    P2PRequestNotFound,
    UnknownAsset,
    ValidationError,
)
from core.ledger import Ledger
from core.money import check_int64
from core.queries import MAX_PAGE
from core.types import Actor, request_hash
from core.vaults import require_user

MAX_MEMO = 280

Party = Literal["payer", "requester"]


class P2PStatus(StrEnum):
    PENDING = "PENDING"
    SETTLING = "SETTLING"
    SETTLED = "SETTLED"
    DECLINED = "DECLINED"
    CANCELLED = "CANCELLED"
    EXPIRED = "EXPIRED"


@dataclass(frozen=True, slots=True)
class P2PRequest:
    id: int
    requester_id: uuid.UUID
    payer_id: uuid.UUID
    asset: str
    amount: int
    memo: str | None
    status: P2PStatus
    expires_at: datetime | None
    #: the settlement's ledger operation (SETTLED only)
    operation_id: int | None
    attempt: int
    created_at: datetime
    updated_at: datetime
    #: True when ``create_request`` answered an earlier request with the same key
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class P2PPage:
    requests: list[P2PRequest]
    #: pass as ``before_id`` for the next (older) page; None at the end
    next_cursor: int | None


COLUMNS = (
    "id, requester_id, payer_id, asset, amount, memo, status, expires_at, operation_id, "
    "attempt, created_at, updated_at"
)
NOT_EXPIRED = "(expires_at IS NULL OR expires_at > clock_timestamp())"


def from_row(row: Any) -> P2PRequest:
    return P2PRequest(
        row.id,
        row.requester_id,
        row.payer_id,
        row.asset,
        row.amount,
        row.memo,
        P2PStatus(row.status),
        row.expires_at,
        row.operation_id,
        row.attempt,
        row.created_at,
        row.updated_at,
    )


def snapshot(request: P2PRequest) -> dict[str, Any]:
    return {"status": request.status.value, "attempt": request.attempt}


# -- create and read ---------------------------------------------------------------------


def validate_request(
    *, requester: uuid.UUID, payer: uuid.UUID, amount: int, memo: str | None
) -> None:
    """Shape rules of a new request (no I/O)."""
    check_int64(amount, "amount")
    if amount <= 0:
        raise InvalidAmount("a requested amount must be positive", field="amount")
    if payer == requester:
        raise ValidationError("you cannot request funds from yourself", field="payer")
    if memo is not None and len(memo) > MAX_MEMO:
        raise ValidationError(f"a memo has at most {MAX_MEMO} characters", field="memo")


async def create_request(
    ledger: Ledger,
    *,
    user: uuid.UUID,
    payer: uuid.UUID,
    asset: str,
    amount: int,
    actor: Actor,
    memo: str | None = None,
    expires_at: datetime | None = None,
    idempotency_key: str | None = None,
) -> P2PRequest:
    """``user`` (the requester) asks ``payer`` for ``amount`` of ``asset``.

    ``idempotency_key`` is scoped to the requester: the same key with the same request
    answers the stored request (``replayed=True``), with a different one
    IDEMPOTENCY_CONFLICT. Errors: INVALID_AMOUNT, AMOUNT_OVERFLOW, VALIDATION_ERROR
    (payer is the requester, memo too long, expiry not in the future or naive),
    UNKNOWN_USER (payer), UNKNOWN_ASSET."""
    validate_request(requester=user, payer=payer, amount=amount, memo=memo)
    if expires_at is not None and expires_at.tzinfo is None:
        raise ValidationError("expires_at needs a time zone", field="expires_at")
    digest = request_hash(
        "p2p_request",
        [str(payer), asset, amount, memo, expires_at.isoformat() if expires_at else None],
    )
    async with ledger.engine.begin() as conn:
        now: datetime = (await conn.execute(text("SELECT clock_timestamp()"))).scalar_one()
        if expires_at is not None and expires_at <= now:
            raise ValidationError("expires_at must be in the future", field="expires_at")
        await require_user(conn, user, "user")
        await require_user(conn, payer, "payer")
        known = (
            await conn.execute(text("SELECT 1 FROM assets WHERE code = :a"), {"a": asset})
        ).first()
        if known is None:
            raise UnknownAsset(f"asset {asset} does not exist", code=asset)
        row = (
            await conn.execute(
                text(
                    "INSERT INTO p2p_requests (requester_id, payer_id, asset, amount, memo, "
                    "expires_at, idempotency_key, request_hash) "
                    "VALUES (:r, :p, :a, :n, :memo, :exp, :key, :hash) "
                    "ON CONFLICT (requester_id, idempotency_key) "
                    "WHERE idempotency_key IS NOT NULL DO NOTHING RETURNING " + COLUMNS
                ),
                {
                    "r": user,
                    "p": payer,
                    "a": asset,
                    "n": amount,
                    "memo": memo,
                    "exp": expires_at,
                    "key": idempotency_key,
                    "hash": digest,
                },
            )
        ).first()
        if row is None:  # the key was used before (possibly by a concurrent call)
            earlier = (
                await conn.execute(
                    text(
                        f"SELECT {COLUMNS}, request_hash FROM p2p_requests "
                        "WHERE requester_id = :r AND idempotency_key = :key"
                    ),
                    {"r": user, "key": idempotency_key},
                )
            ).one()
            if bytes(earlier.request_hash) != digest:
                raise IdempotencyConflict(
                    "this idempotency key was used with a different request", key=idempotency_key
                )
            return replace(from_row(earlier), replayed=True)
        created = from_row(row)
        await audit.record(
            conn,
            actor,
            "p2p.created",
            "p2p_request",
            created.id,
            after={
                "status": created.status.value,
                "requester_id": user,
                "payer_id": payer,
                "asset": asset,
                "amount": amount,
                "memo": memo,
                "expires_at": expires_at,
            },
        )
    return created


async def fetch(conn: AsyncConnection, request_id: int, *, lock: bool = False) -> P2PRequest | None:
    row = (
        await conn.execute(
            text(
                f"SELECT {COLUMNS} FROM p2p_requests WHERE id = :id"
                + (" FOR UPDATE" if lock else "")
            ),
            {"id": request_id},
        )
    ).first()
    return None if row is None else from_row(row)


def not_found(request_id: int) -> P2PRequestNotFound:
    return P2PRequestNotFound(f"p2p request {request_id} does not exist", request_id=request_id)


async def get_request(ledger: Ledger, *, user: uuid.UUID | None, request_id: int) -> P2PRequest:
    """A request the user is the requester or the payer of (``user`` None: staff readers, any
    request). Errors: P2P_REQUEST_NOT_FOUND (also for somebody else's request)."""
    async with ledger.engine.connect() as conn:
        found = await fetch(conn, request_id)
    if found is None or (user is not None and user not in (found.requester_id, found.payer_id)):
        raise not_found(request_id)
    return found


async def list_requests(
    ledger: Ledger,
    *,
    user: uuid.UUID,
    role: Party | None = None,
    status: P2PStatus | None = None,
    before_id: int | None = None,
    limit: int = 50,
) -> P2PPage:
    """The user's requests, newest first: as ``payer`` (incoming), as ``requester``
    (outgoing), or both; keyset-paginated on the id. Errors: VALIDATION_ERROR (limit)."""
    if not 1 <= limit <= MAX_PAGE:
        raise ValidationError(f"limit must be between 1 and {MAX_PAGE}", field="limit")
    if role == "payer":
        who = "payer_id = :u"
    elif role == "requester":
        who = "requester_id = :u"
    else:
        who = "(payer_id = :u OR requester_id = :u)"
    async with ledger.engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    f"SELECT {COLUMNS} FROM p2p_requests WHERE {who} AND id < :before "
                    "AND (CAST(:status AS text) IS NULL OR status = :status) "
                    "ORDER BY id DESC LIMIT :n"
                ),
                {
                    "u": user,
                    "before": before_id or 2**63 - 1,
                    "status": None if status is None else P2PStatus(status).value,
                    "n": limit + 1,
                },
            )
        ).all()
    requests = [from_row(r) for r in rows[:limit]]
    return P2PPage(requests, requests[-1].id if len(rows) > limit else None)
