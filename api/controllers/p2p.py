"""P2P requests: a USER asks another user for funds; the payer settles (one atomic
transfer, exactly once however many settles race) or declines; the requester cancels;
past the deadline a request expires.

Who may do what:

- Create, settle, decline, cancel: USER only, and only as the request's party
  (``core.p2p`` checks it: a non-party gets the same 404 as for a nonexistent id).
  Staff never settle or close somebody else's request.
- Reads: a USER reads their own requests; staff readers (``STAFF_READERS``) read any
  request, and list a user's requests by naming ``user_id``.
- The expiry sweep (the worker runs it too): ADMIN and OPS.

Settle is safe under concurrent calls: the core claims the request with one guarded
UPDATE (PENDING → SETTLING) before posting, so exactly one call wins; the others get
409 ``P2P_REQUEST_NOT_PENDING`` (or ``P2P_REQUEST_EXPIRED``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from litestar import Controller, Response, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, PathParameter, QueryParameter

from api import render
from api.auth import ADMIN, EVERYONE, OPS, USER, allow
from api.context import Ctx
from api.controllers.vaults import MAX_ID, UserParam, viewer
from api.idempotency import Attempt
from api.schemas.common import SweepRead
from api.schemas.p2p import (
    P2PCloseCreate,
    P2PPageRead,
    P2PRequestCreate,
    P2PRequestRead,
    P2PSettlementRead,
)
from core import p2p
from core.errors import ValidationError

RequestId = Annotated[int, PathParameter(ge=1, le=MAX_ID)]
READ = [allow(EVERYONE, scope="read")]
PARTY = [allow({USER}, scope="payments")]


async def request_read(ctx: Ctx, r: p2p.P2PRequest) -> P2PRequestRead:
    return P2PRequestRead(
        id=r.id,
        requester_id=r.requester_id,
        payer_id=r.payer_id,
        asset=r.asset,
        amount=await ctx.svc.fmt(r.amount, r.asset),
        memo=r.memo,
        status=r.status,
        expires_at=r.expires_at,
        operation_id=r.operation_id,
        created_at=r.created_at,
        updated_at=r.updated_at,
    )


async def _close(
    ctx: Ctx, close: Callable[..., Awaitable[p2p.P2PRequest]], request_id: int, data: P2PCloseCreate
) -> Response[P2PRequestRead]:
    """Decline or cancel (the core checks which party may): idempotent, 200 with the request."""

    async def run(_: Attempt) -> P2PRequestRead:
        closed = await close(
            ctx.svc.ledger,
            user=ctx.principal.user_id,
            request_id=request_id,
            actor=ctx.actor,
            reason=data.reason,
        )
        return await request_read(ctx, closed)

    return await ctx.once(data, run, status_code=200)


class P2PController(Controller):
    path = "/api/v1/p2p"
    tags = ["p2p"]

    @post("/requests", guards=PARTY)
    async def create_request(
        self, ctx: NamedDependency[Ctx], data: JSONBody[P2PRequestCreate]
    ) -> Response[P2PRequestRead]:
        """Ask ``payer_id`` for an amount. With an ``Idempotency-Key`` a retry answers
        the same request (the deadline is fixed at the first attempt)."""

        async def pin() -> dict[str, Any]:
            if data.expires_in is None:
                return {"expires_at": None}
            deadline = datetime.now(UTC) + timedelta(seconds=data.expires_in)
            return {"expires_at": deadline.isoformat()}

        async def run(a: Attempt) -> P2PRequestRead:
            amount = await ctx.svc.parse(data.amount, data.asset)
            expires_at = a.pinned.get("expires_at")
            created = await p2p.create_request(
                ctx.svc.ledger,
                user=ctx.principal.user_id,
                payer=data.payer_id,
                asset=data.asset,
                amount=amount,
                actor=ctx.actor,
                memo=data.memo,
                expires_at=None if expires_at is None else datetime.fromisoformat(expires_at),
                idempotency_key=a.core_key,
            )
            return await request_read(ctx, created)

        return await ctx.once(data, run, pin=pin)

    @get("/requests", guards=READ)
    async def list_requests(
        self,
        ctx: NamedDependency[Ctx],
        user_id: UserParam = None,
        role: Annotated[
            p2p.Party | None,
            QueryParameter(description="payer: incoming; requester: outgoing; omitted: both"),
        ] = None,
        status: Annotated[p2p.P2PStatus | None, QueryParameter()] = None,
        cursor: Annotated[int | None, QueryParameter(ge=1, le=MAX_ID)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
    ) -> P2PPageRead:
        """The caller's requests (staff: ``user_id``'s, required), newest first."""
        who = viewer(ctx, user_id)
        if who is None:
            raise ValidationError("staff name the user whose requests to list", field="user_id")
        page = await p2p.list_requests(
            ctx.svc.ledger, user=who, role=role, status=status, before_id=cursor, limit=limit
        )
        return P2PPageRead([await request_read(ctx, r) for r in page.requests], page.next_cursor)

    @get("/requests/{request_id:int}", guards=READ)
    async def get_request(self, ctx: NamedDependency[Ctx], request_id: RequestId) -> P2PRequestRead:
        found = await p2p.get_request(ctx.svc.ledger, user=ctx.viewer, request_id=request_id)
        return await request_read(ctx, found)

    @post("/requests/{request_id:int}/settle", guards=PARTY, status_code=200)
    async def settle(
        self, ctx: NamedDependency[Ctx], request_id: RequestId
    ) -> Response[P2PSettlementRead]:
        """The payer accepts: one transfer payer → requester, exactly once. A concurrent
        or repeated settle gets 409 P2P_REQUEST_NOT_PENDING."""

        async def run(_: Attempt) -> P2PSettlementRead:
            done = await p2p.settle(
                ctx.svc.ledger, user=ctx.principal.user_id, request_id=request_id, actor=ctx.actor
            )
            return P2PSettlementRead(
                await request_read(ctx, done.request),
                await render.operation(ctx.svc, done.operation, ctx.sees),
            )

        return await ctx.once(None, run, status_code=200)

    @post("/requests/{request_id:int}/decline", guards=PARTY, status_code=200)
    async def decline(
        self, ctx: NamedDependency[Ctx], request_id: RequestId, data: JSONBody[P2PCloseCreate]
    ) -> Response[P2PRequestRead]:
        """The payer refuses a PENDING request."""

        return await _close(ctx, p2p.decline, request_id, data)

    @post("/requests/{request_id:int}/cancel", guards=PARTY, status_code=200)
    async def cancel(
        self, ctx: NamedDependency[Ctx], request_id: RequestId, data: JSONBody[P2PCloseCreate]
    ) -> Response[P2PRequestRead]:
        """The requester withdraws a PENDING request."""

        return await _close(ctx, p2p.cancel, request_id, data)

    @post(
        "/expire",
        guards=[allow({ADMIN, OPS}, scope="admin")],
        status_code=200,
        opt={"rate_group": "admin"},
    )
    async def expire(self, ctx: NamedDependency[Ctx]) -> Response[SweepRead]:
        """Mark every PENDING request past its deadline EXPIRED (the worker does it too)."""

        async def run(_: Attempt) -> SweepRead:
            return SweepRead(await p2p.expire_due(ctx.svc.ledger, actor=ctx.actor))

        return await ctx.once(None, run, status_code=200)


ROUTES = [P2PController]
