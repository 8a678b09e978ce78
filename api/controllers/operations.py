"""Operations: read one with its entries; reverse (admin, with a reason); adjustments
(ops, with a reason)."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Response, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, PathParameter

from api import render
from api.auth import ADMIN, EVERYONE, OPS, allow
from api.context import Ctx
from api.idempotency import Attempt
from api.schemas.credits import OperationRead
from api.schemas.operations import AdjustmentCreate, ReverseCreate
from core.errors import UnknownOperation
from core.types import EntrySpec

OperationId = Annotated[int, PathParameter(ge=1, le=2**63 - 1)]


class OperationController(Controller):
    path = "/api/v1"
    tags = ["operations"]

    @get("/operations/{operation_id:int}", guards=[allow(EVERYONE, scope="read")])
    async def get_operation(
        self, ctx: NamedDependency[Ctx], operation_id: OperationId
    ) -> OperationRead:
        """A USER sees an operation only if it touched one of their accounts."""
        view = await ctx.svc.ledger.queries.operation(operation_id)
        if ctx.is_user:
            owned = [ctx.owns(await ctx.svc.account(e[1])) for e in view.entries]
            if not any(owned):
                raise UnknownOperation(
                    f"operation {operation_id} does not exist", operation_id=operation_id
                )
        return await render.operation_view(ctx.svc, view, ctx.sees)

    @post(
        "/operations/{operation_id:int}/reverse",
        guards=[allow({ADMIN}, scope="admin")],
        opt={"rate_group": "admin"},
    )
    async def reverse(
        self, ctx: NamedDependency[Ctx], operation_id: OperationId, data: JSONBody[ReverseCreate]
    ) -> Response[OperationRead]:
        """Post the exact opposite of an operation, once, with a reason."""

        async def run(a: Attempt) -> OperationRead:
            result = await ctx.svc.ledger.reverse(
                operation_id, reason=data.reason, actor=ctx.actor, idempotency_key=a.core_key
            )
            return await render.operation(ctx.svc, result, ctx.sees)

        return await ctx.once(data, run)

    @post("/adjustments", guards=[allow({OPS}, scope="admin")], opt={"rate_group": "admin"})
    async def adjust(
        self, ctx: NamedDependency[Ctx], data: JSONBody[AdjustmentCreate]
    ) -> Response[OperationRead]:
        """A balanced correction across accounts (each leg in its account's asset)."""

        async def run(a: Attempt) -> OperationRead:
            legs = []
            for i, leg in enumerate(data.entries):
                account = await ctx.svc.account(leg.account_id)
                amount = await ctx.svc.parse(leg.amount, account.asset, f"entries[{i}].amount")
                legs.append(EntrySpec(account.id, account.asset, amount, leg.side))
            result = await ctx.svc.ledger.adjust(
                legs, reason=data.reason, actor=ctx.actor, idempotency_key=a.core_key
            )
            return await render.operation(ctx.svc, result, ctx.sees)

        return await ctx.once(data, run)


ROUTES = [OperationController]
