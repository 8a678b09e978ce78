"""Holds (two-phase transfers): reserve, capture (fully or partly), void; expiry.

A hold is created by the payer from their own AVAILABLE account to a user (e.g. a
merchant); either party may capture or void it. Staff (admin/ops) may void one — the
funds go back to the payer — but never capture one that pays a user: staff never move
users' money. They do capture a card authorization (a hold paying the card settlement
system account). A
capture after the deadline is refused; the sweep marks past-deadline holds EXPIRED."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from litestar import Controller, Response, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, PathParameter

from api import render
from api.auth import ADMIN, EVERYONE, OPS, USER, allow
from api.context import Ctx
from api.idempotency import Attempt
from api.schemas.common import SweepRead
from api.schemas.credits import OperationRead
from api.schemas.holds import CaptureCreate, HoldCreate, HoldRead, VoidCreate

HoldId = Annotated[int, PathParameter(ge=1, le=2**63 - 1)]
PARTIES = [allow({USER, ADMIN, OPS}, scope="payments")]


class HoldController(Controller):
    path = "/api/v1/holds"
    tags = ["holds"]

    @post("/", guards=[allow({USER}, scope="payments")])
    async def create_hold(
        self, ctx: NamedDependency[Ctx], data: JSONBody[HoldCreate]
    ) -> Response[HoldRead]:
        async def pin() -> dict[str, Any]:
            deadline = await ctx.svc.payments.deadline(timedelta(seconds=data.expires_in))
            return {"expires_at": deadline.isoformat()}

        async def run(a: Attempt) -> HoldRead:
            result = await ctx.svc.payments.hold(
                ctx.principal.user_id, ctx.actor, data.order(),
                expires_at=datetime.fromisoformat(a.pinned["expires_at"]),
                idempotency_key=a.core_key,
            )  # fmt: skip
            return await render.hold(ctx.svc, result)

        return await ctx.once(data, run, pin=pin)

    @get("/{hold_id:int}", guards=[allow(EVERYONE, scope="read")])
    async def get_hold(self, ctx: NamedDependency[Ctx], hold_id: HoldId) -> HoldRead:
        return await render.hold(ctx.svc, await ctx.svc.payments.party_hold(hold_id, ctx.viewer))

    @post("/{hold_id:int}/capture", guards=PARTIES)
    async def capture(
        self, ctx: NamedDependency[Ctx], hold_id: HoldId, data: JSONBody[CaptureCreate]
    ) -> Response[OperationRead]:
        """Post the hold, fully or partly (the rest is released). Staff capture only a
        hold that pays a system account (a card authorization settling); one that pays a
        user is the parties' to capture."""

        async def run(a: Attempt) -> OperationRead:
            result = await ctx.svc.payments.capture(
                hold_id, ctx.viewer, ctx.actor, amount=data.amount, idempotency_key=a.core_key
            )
            return await render.operation(ctx.svc, result, ctx.sees)

        return await ctx.once(data, run)

    @post("/{hold_id:int}/void", guards=PARTIES, status_code=200)
    async def void(
        self, ctx: NamedDependency[Ctx], hold_id: HoldId, data: JSONBody[VoidCreate]
    ) -> Response[HoldRead]:
        async def run(a: Attempt) -> HoldRead:
            result = await ctx.svc.payments.void(
                hold_id, ctx.viewer, ctx.actor, reason=data.reason, idempotency_key=a.core_key
            )
            return await render.hold(ctx.svc, result)

        return await ctx.once(data, run, status_code=200)

    @post(
        "/expire",
        guards=[allow({ADMIN, OPS}, scope="admin")],
        status_code=200,
        opt={"rate_group": "admin"},
    )
    async def expire(self, ctx: NamedDependency[Ctx]) -> SweepRead:
        """Mark every pending hold past its deadline EXPIRED (the worker does it too)."""
        return SweepRead(await ctx.svc.ledger.expire_holds(actor=ctx.actor))


ROUTES = [HoldController]
