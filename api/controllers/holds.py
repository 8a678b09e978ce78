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
from litestar.exceptions import PermissionDeniedException
from litestar.params import JSONBody, PathParameter

from api import render
from api.auth import ADMIN, EVERYONE, OPS, USER, allow
from api.context import Ctx
from api.idempotency import Attempt
from api.schemas.common import SweepRead
from api.schemas.credits import OperationRead
from api.schemas.holds import CaptureCreate, HoldCreate, HoldRead, VoidCreate
from core.errors import AllowanceHold, UnknownHold
from core.queries import HoldView
from core.types import CaptureHold, HoldResult, OperationResult, VoidHold

HoldId = Annotated[int, PathParameter(ge=1, le=2**63 - 1)]
PARTIES = [allow({USER, ADMIN, OPS}, scope="payments")]


async def _party_hold(
    ctx: NamedDependency[Ctx], hold_id: int, *, staff: bool, moving: bool = False
) -> HoldView:
    """The hold if the caller is its payer or payee (or staff allowed here). ``moving``:
    about to capture or void it, which an offline allowance's hold (the one kind of hold
    whose destination is its own source) refuses: its vouchers and release move it."""
    hold = await ctx.svc.ledger.queries.hold(hold_id)
    if moving and hold.source == hold.destination:
        raise AllowanceHold(
            f"hold {hold_id} backs an offline allowance: see /api/v1/offline/allowances",
            hold_id=hold_id,
        )
    if ctx.is_user or not staff:
        source = await ctx.svc.account(hold.source)
        destination = await ctx.svc.account(hold.destination)
        if not (ctx.owns(source) or ctx.owns(destination)):
            raise UnknownHold(f"hold {hold_id} does not exist", hold_id=hold_id)
    return hold


def _expect(result: Any, kind: type[Any]) -> Any:
    if isinstance(result, Exception):
        raise result
    if not isinstance(result, kind):  # pragma: no cover - the core answers in kind
        raise TypeError(f"unexpected result {type(result).__name__}")
    return result


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
        hold = await _party_hold(ctx, hold_id, staff=True)
        return await render.hold(ctx.svc, hold)

    @post("/{hold_id:int}/capture", guards=PARTIES)
    async def capture(
        self, ctx: NamedDependency[Ctx], hold_id: HoldId, data: JSONBody[CaptureCreate]
    ) -> Response[OperationRead]:
        """Post the hold, fully or partly (the rest is released). Staff capture only a
        hold that pays a system account (a card authorization settling); one that pays a
        user is the parties' to capture."""

        async def run(a: Attempt) -> OperationRead:
            hold = await _party_hold(ctx, hold_id, staff=True, moving=True)
            if not ctx.is_user and (await ctx.svc.account(hold.destination)).owner_id:
                raise PermissionDeniedException("staff never capture a hold that pays a user")
            amount = None if data.amount is None else await ctx.svc.parse(data.amount, hold.asset)
            command = CaptureHold(hold_id, amount, ctx.actor, a.core_key)
            result = _expect(await ctx.svc.ledger.submit(command), OperationResult)
            return await render.operation(ctx.svc, result, ctx.sees)

        return await ctx.once(data, run)

    @post("/{hold_id:int}/void", guards=PARTIES, status_code=200)
    async def void(
        self, ctx: NamedDependency[Ctx], hold_id: HoldId, data: JSONBody[VoidCreate]
    ) -> Response[HoldRead]:
        async def run(a: Attempt) -> HoldRead:
            await _party_hold(ctx, hold_id, staff=True, moving=True)
            command = VoidHold(hold_id, ctx.actor, data.reason, a.core_key)
            result = _expect(await ctx.svc.ledger.submit(command), HoldResult)
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
