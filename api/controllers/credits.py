"""Credits: mint (issuance → a user, admin/ops), transfer between users, move between
one's own compartments, burn (→ issuance)."""

from __future__ import annotations

from litestar import Controller, Response, post
from litestar.di import NamedDependency
from litestar.params import JSONBody

from api import render
from api.auth import ADMIN, OPS, USER, allow
from api.context import Ctx
from api.idempotency import Attempt
from api.schemas.credits import BurnCreate, MintCreate, MoveCreate, OperationRead, TransferCreate


class CreditController(Controller):
    path = "/api/v1/credits"
    tags = ["credits"]

    @post("/mint", guards=[allow({ADMIN, OPS}, scope="issuance")], opt={"rate_group": "admin"})
    async def mint(
        self, ctx: NamedDependency[Ctx], data: JSONBody[MintCreate]
    ) -> Response[OperationRead]:
        """Issue new credits into a user's AVAILABLE compartment."""

        async def run(a: Attempt) -> OperationRead:
            result = await ctx.svc.credits.mint(
                ctx.actor, user_id=data.user_id, asset=data.asset, amount=data.amount,
                memo=data.memo, idempotency_key=a.core_key,
            )  # fmt: skip
            return await render.operation(ctx.svc, result, ctx.sees)

        return await ctx.once(data, run)

    @post("/transfer", guards=[allow({USER}, scope="payments")])
    async def transfer(
        self, ctx: NamedDependency[Ctx], data: JSONBody[TransferCreate]
    ) -> Response[OperationRead]:
        """From one of the caller's AVAILABLE accounts to another user's AVAILABLE."""

        async def run(a: Attempt) -> OperationRead:
            result = await ctx.svc.payments.transfer(
                ctx.principal.user_id, ctx.actor, data.order(), idempotency_key=a.core_key
            )
            return await render.operation(ctx.svc, result, ctx.sees)

        return await ctx.once(data, run)

    @post("/move", guards=[allow({USER, ADMIN, OPS}, scope="payments")])
    async def move(
        self, ctx: NamedDependency[Ctx], data: JSONBody[MoveCreate]
    ) -> Response[OperationRead]:
        """Between compartments of one user (a USER: only their own, only to LOCKED)."""

        async def run(a: Attempt) -> OperationRead:
            result = await ctx.svc.credits.move(
                ctx.principal.user_id, ctx.actor, owner=data.user_id, asset=data.asset,
                from_kind=data.from_kind, to_kind=data.to_kind, amount=data.amount,
                reason=data.reason, idempotency_key=a.core_key,
            )  # fmt: skip
            return await render.operation(ctx.svc, result, ctx.sees)

        return await ctx.once(data, run)

    @post("/burn", guards=[allow({USER, ADMIN, OPS}, scope="payments")])
    async def burn(
        self, ctx: NamedDependency[Ctx], data: JSONBody[BurnCreate]
    ) -> Response[OperationRead]:
        """Retire credits from an AVAILABLE account (a user's own; staff: any, with a
        reason) back to issuance."""

        async def run(a: Attempt) -> OperationRead:
            result = await ctx.svc.credits.burn(
                ctx.principal.user_id, ctx.actor, account_id=data.account_id,
                amount=data.amount, reason=data.reason, idempotency_key=a.core_key,
            )  # fmt: skip
            return await render.operation(ctx.svc, result, ctx.sees)

        return await ctx.once(data, run)


ROUTES = [CreditController]
