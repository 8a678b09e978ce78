"""P2P transitions out of PENDING: settle (exactly once), decline, cancel, expiry.

(The state machine is drawn in ``core.p2p``; a database trigger enforces it.)

Exactly-once settlement without holding a row lock across the posting:

1. *claim*: ``UPDATE ... SET status = 'SETTLING' WHERE status = 'PENDING' ...`` commits
   first. Of any number of concurrent settles exactly one claims; the others get
   ``P2P_REQUEST_NOT_PENDING``. Decline, cancel and expiry only act on PENDING, so none
   of them can race a payment in flight.
2. *post* the transfer payer AVAILABLE -> requester AVAILABLE under the idempotency key
   ``p2p:<id>:settle:<attempt>``, derived from the request alone: however often this
   step runs (a retry, the recovery job, both at once) the ledger applies it once.
3. *finish*: SETTLED with the operation id; or, after a definite refusal (insufficient
   funds, frozen account), back to PENDING with ``attempt + 1`` so the next settle uses
   a fresh key instead of replaying the remembered failure.

A crash (or a lost connection, whose COMMIT outcome is unknown) between the steps leaves
the request SETTLING; ``resume_settling`` (a scheduled job) re-runs steps 2-3 with the
same key: the payment happens once, and the request ends SETTLED or PENDING.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from core import audit
from core.errors import (
    Forbidden,
    IdempotencyConflict,
    LedgerError,
    P2PRequestExpired,
    P2PRequestNotPending,
    StorageError,
)
from core.ledger import Ledger
from core.p2p.requests import (
    COLUMNS,
    NOT_EXPIRED,
    P2PRequest,
    P2PStatus,
    Party,
    fetch,
    from_row,
    not_found,
    snapshot,
)
from core.types import (
    SYSTEM_ACTOR,
    AccountKind,
    Actor,
    OperationResult,
    OperationType,
    PostOperation,
    transfer_legs,
)


@dataclass(frozen=True, slots=True)
class Settlement:
    request: P2PRequest
    operation: OperationResult


def settlement_key(request_id: int, attempt: int) -> str:
    """The idempotency key of a settlement attempt: a function of the request alone."""
    return f"p2p:{request_id}:settle:{attempt}"


# -- transitions -------------------------------------------------------------------------


async def _refusal(
    conn: AsyncConnection, request_id: int, user: uuid.UUID, party: Party, actor: Actor
) -> LedgerError:
    """Why a guarded transition matched no row. A PENDING request past its deadline is
    marked EXPIRED here (in the caller's transaction, which must commit)."""
    found = await fetch(conn, request_id, lock=True)
    if found is None or user not in (found.requester_id, found.payer_id):
        return not_found(request_id)
    if user != (found.payer_id if party == "payer" else found.requester_id):
        return Forbidden(
            f"only the {party} of p2p request {request_id} may do this", request_id=request_id
        )
    if found.status is P2PStatus.PENDING and await _expire_one(conn, found, actor):
        return P2PRequestExpired(f"p2p request {request_id} expired", request_id=request_id)
    if found.status is P2PStatus.EXPIRED:
        return P2PRequestExpired(f"p2p request {request_id} expired", request_id=request_id)
    return P2PRequestNotPending(
        f"p2p request {request_id} is {found.status.value}",
        request_id=request_id,
        status=found.status.value,
    )


async def _expire_one(conn: AsyncConnection, request: P2PRequest, actor: Actor) -> bool:
    expired = (
        await conn.execute(
            text(
                "UPDATE p2p_requests SET status = 'EXPIRED', updated_at = clock_timestamp() "
                "WHERE id = :id AND status = 'PENDING' AND expires_at <= clock_timestamp() "
                "RETURNING id"
            ),
            {"id": request.id},
        )
    ).first()
    if expired is not None:
        await audit.record(
            conn,
            actor,
            "p2p.expired",
            "p2p_request",
            request.id,
            before=snapshot(request),
            after={"status": P2PStatus.EXPIRED.value},
        )
    return expired is not None


async def _close(
    ledger: Ledger,
    *,
    user: uuid.UUID,
    request_id: int,
    party: Party,
    status: P2PStatus,
    actor: Actor,
    reason: str | None,
) -> P2PRequest:
    async with ledger.engine.begin() as conn:
        row = (
            await conn.execute(
                text(
                    f"UPDATE p2p_requests SET status = :s, updated_at = clock_timestamp() "
                    f"WHERE id = :id AND {party}_id = :u AND status = 'PENDING' "
                    f"AND {NOT_EXPIRED} RETURNING {COLUMNS}"
                ),
                {"s": status.value, "id": request_id, "u": user},
            )
        ).first()
        if row is not None:
            closed = from_row(row)
            await audit.record(
                conn,
                actor,
                f"p2p.{status.value.lower()}",
                "p2p_request",
                request_id,
                before={"status": P2PStatus.PENDING.value, "attempt": closed.attempt},
                after={"status": status.value},
                reason=reason,
            )
            return closed
        error = await _refusal(conn, request_id, user, party, actor)
    raise error  # after the commit: an expiry noticed here stays recorded


async def decline(
    ledger: Ledger, *, user: uuid.UUID, request_id: int, actor: Actor, reason: str | None = None
) -> P2PRequest:
    """The payer refuses a PENDING request. Errors: P2P_REQUEST_NOT_FOUND (not a party),
    FORBIDDEN (the requester), P2P_REQUEST_EXPIRED, P2P_REQUEST_NOT_PENDING."""
    return await _close(
        ledger,
        user=user,
        request_id=request_id,
        party="payer",
        status=P2PStatus.DECLINED,
        actor=actor,
        reason=reason,
    )


async def cancel(
    ledger: Ledger, *, user: uuid.UUID, request_id: int, actor: Actor, reason: str | None = None
) -> P2PRequest:
    """The requester withdraws a PENDING request. Errors: P2P_REQUEST_NOT_FOUND (not a
    party), FORBIDDEN (the payer), P2P_REQUEST_EXPIRED, P2P_REQUEST_NOT_PENDING."""
    return await _close(
        ledger,
        user=user,
        request_id=request_id,
        party="requester",
        status=P2PStatus.CANCELLED,
        actor=actor,
        reason=reason,
    )


async def settle(ledger: Ledger, *, user: uuid.UUID, request_id: int, actor: Actor) -> Settlement:
    """The payer accepts: payer AVAILABLE -> requester AVAILABLE (P2P_SETTLEMENT), once.

    Errors: P2P_REQUEST_NOT_FOUND (not a party), FORBIDDEN (the requester),
    P2P_REQUEST_EXPIRED, P2P_REQUEST_NOT_PENDING (settled, declined, cancelled, or another
    settle is in flight), and the ledger's refusals INSUFFICIENT_FUNDS / ACCOUNT_FROZEN
    (the request stays PENDING and can be settled later). STORAGE_ERROR leaves it
    SETTLING until ``resume_settling`` finishes it."""
    async with ledger.engine.connect() as conn:
        found = await fetch(conn, request_id)
    if found is None or user not in (found.requester_id, found.payer_id):
        raise not_found(request_id)
    if user != found.payer_id:
        raise Forbidden(
            f"only the payer of p2p request {request_id} may settle it", request_id=request_id
        )
    if found.status is P2PStatus.PENDING:
        # both wallets exist before the claim, so a claimed settlement only has to post
        await ledger.accounts.ensure_wallet(found.payer_id, found.asset, actor=actor)
        await ledger.accounts.ensure_wallet(found.requester_id, found.asset, actor=actor)
    claimed = await _claim(ledger, request_id, user, actor)
    return await _finish(ledger, claimed, actor)


async def _claim(ledger: Ledger, request_id: int, user: uuid.UUID, actor: Actor) -> P2PRequest:
    async with ledger.engine.begin() as conn:
        row = (
            await conn.execute(
                text(
                    "UPDATE p2p_requests SET status = 'SETTLING', updated_at = clock_timestamp() "
                    f"WHERE id = :id AND payer_id = :u AND status = 'PENDING' AND {NOT_EXPIRED} "
                    f"RETURNING {COLUMNS}"
                ),
                {"id": request_id, "u": user},
            )
        ).first()
        if row is not None:
            claimed = from_row(row)
            await audit.record(
                conn,
                actor,
                "p2p.settling",
                "p2p_request",
                request_id,
                before={"status": P2PStatus.PENDING.value, "attempt": claimed.attempt},
                after=snapshot(claimed),
            )
            return claimed
        error = await _refusal(conn, request_id, user, "payer", actor)
    raise error


async def settlement_command(ledger: Ledger, request: P2PRequest, actor: Actor) -> PostOperation:
    """The posting of a settlement attempt: the same for every run of the same attempt."""
    payer = await ledger.accounts.ensure_wallet(request.payer_id, request.asset, actor=actor)
    requester = await ledger.accounts.ensure_wallet(
        request.requester_id, request.asset, actor=actor
    )
    return PostOperation(
        OperationType.P2P_SETTLEMENT,
        transfer_legs(
            payer[AccountKind.AVAILABLE],
            requester[AccountKind.AVAILABLE],
            request.asset,
            request.amount,
        ),
        actor=actor,
        idempotency_key=settlement_key(request.id, request.attempt),
        metadata={"p2p_request": request.id},
    )


async def _finish(ledger: Ledger, request: P2PRequest, actor: Actor) -> Settlement:
    """Steps 2-3 for a SETTLING request (safe to run any number of times, concurrently)."""
    outcome = await ledger.submit(await settlement_command(ledger, request, actor))
    if isinstance(outcome, OperationResult):
        async with ledger.engine.begin() as conn:
            row = (
                await conn.execute(
                    text(
                        "UPDATE p2p_requests SET status = 'SETTLED', operation_id = :op, "
                        "last_error = NULL, updated_at = clock_timestamp() "
                        "WHERE id = :id AND status = 'SETTLING' AND attempt = :attempt "
                        f"RETURNING {COLUMNS}"
                    ),
                    {"op": outcome.operation_id, "id": request.id, "attempt": request.attempt},
                )
            ).first()
            if row is not None:
                await audit.record(
                    conn,
                    actor,
                    "p2p.settled",
                    "p2p_request",
                    request.id,
                    before=snapshot(request),
                    after={
                        "status": P2PStatus.SETTLED.value,
                        "operation_id": outcome.operation_id,
                    },
                )
                settled = from_row(row)
            else:  # a concurrent run finished it (with this same operation)
                current = await fetch(conn, request.id)
                if current is None:  # pragma: no cover - requests are never deleted
                    raise not_found(request.id)
                settled = current
        return Settlement(settled, outcome)
    if isinstance(outcome, StorageError | IdempotencyConflict):
        # unknown outcome (or the key holds something else): only this same key may run
        # again, so the request stays SETTLING for ``resume_settling``
        raise outcome
    if not isinstance(outcome, LedgerError):  # pragma: no cover - a posting answers one
        raise StorageError("unexpected settlement outcome", request_id=request.id)
    # a definite refusal, remembered under this attempt's key: reopen with a fresh key
    async with ledger.engine.begin() as conn:
        reopened = (
            await conn.execute(
                text(
                    "UPDATE p2p_requests SET status = 'PENDING', attempt = attempt + 1, "
                    "last_error = CAST(:err AS jsonb), updated_at = clock_timestamp() "
                    "WHERE id = :id AND status = 'SETTLING' AND attempt = :attempt RETURNING id"
                ),
                {
                    "err": json.dumps(outcome.to_dict(), default=str),
                    "id": request.id,
                    "attempt": request.attempt,
                },
            )
        ).first()
        if reopened is not None:
            await audit.record(
                conn,
                actor,
                "p2p.settle_failed",
                "p2p_request",
                request.id,
                before=snapshot(request),
                after={"status": P2PStatus.PENDING.value, "attempt": request.attempt + 1},
                reason=outcome.code,
            )
    raise outcome


# -- jobs --------------------------------------------------------------------------------


async def expire_due(ledger: Ledger, *, limit: int = 1000, actor: Actor = SYSTEM_ACTOR) -> int:
    """Expire PENDING requests past their deadline (a scheduled job). Returns how many."""
    async with ledger.engine.begin() as conn:
        rows = (
            await conn.execute(
                text(
                    "WITH due AS (SELECT id, attempt FROM p2p_requests WHERE status = 'PENDING' "
                    "  AND expires_at <= clock_timestamp() ORDER BY expires_at LIMIT :n "
                    "  FOR UPDATE SKIP LOCKED), "
                    "expired AS (UPDATE p2p_requests p SET status = 'EXPIRED', "
                    "  updated_at = clock_timestamp() FROM due WHERE p.id = due.id "
                    "  RETURNING p.id, due.attempt) "
                    "INSERT INTO audit_log (actor_id, actor_role, ip, action, entity_type, "
                    "  entity_id, before, after, reason) "
                    "SELECT :actor, :role, :ip, 'p2p.expired', 'p2p_request', id::text, "
                    "  jsonb_build_object('status', 'PENDING', 'attempt', attempt), "
                    "  jsonb_build_object('status', 'EXPIRED'), 'expired' FROM expired "
                    "RETURNING entity_id"
                ),
                {"n": limit, "actor": actor.id, "role": actor.role.value, "ip": actor.ip},
            )
        ).all()
    return len(rows)


async def resume_settling(
    ledger: Ledger,
    *,
    older_than: timedelta = timedelta(seconds=30),
    limit: int = 100,
    actor: Actor = SYSTEM_ACTOR,
) -> int:
    """Finish settlements interrupted between claim and finish (a scheduled job).

    Re-runs the posting under the attempt's own key, so a payment that already committed
    is replayed, not repeated. Returns how many requests left SETTLING."""
    async with ledger.engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    f"SELECT {COLUMNS} FROM p2p_requests WHERE status = 'SETTLING' "
                    "AND updated_at <= clock_timestamp() - CAST(:age AS interval) "
                    "ORDER BY updated_at LIMIT :n"
                ),
                {"age": older_than, "n": limit},
            )
        ).all()
    finished = 0
    for row in rows:
        try:
            await _finish(ledger, from_row(row), actor)
        except (StorageError, IdempotencyConflict):
            continue  # still unknown: the next run tries again
        except LedgerError:
            pass  # refused: the request is PENDING again
        finished += 1
    return finished
