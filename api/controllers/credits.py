"""Credits: mint (issuance → a user, admin/ops), transfer between users, move between
one's own compartments, burn (→ issuance)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Response, post
from litestar.di import NamedDependency
from litestar.params import JSONBody

from api import render
from api.auth import ADMIN, OPS, USER, allow
from api.context import Ctx
from api.idempotency import Attempt
from api.schemas.credits import BurnCreate, MintCreate, MoveCreate, OperationRead, TransferCreate
from core.errors import ReasonRequired, ValidationError
from core.types import AccountKind, OperationType, PostOperation, SystemAccount, transfer_legs

#: compartment moves: (from, to) -> (operation type, roles allowed, reason required)
MOVES: dict[tuple[AccountKind, AccountKind], tuple[OperationType, frozenset[Any], bool]] = {
    (AccountKind.AVAILABLE, AccountKind.LOCKED): (
        OperationType.LOCK, frozenset({USER, ADMIN, OPS}), False,
    ),
    (AccountKind.LOCKED, AccountKind.AVAILABLE): (
        OperationType.UNLOCK, frozenset({ADMIN, OPS}), True,
    ),
}  # fmt: skip


def _memo(memo: str | None) -> dict[str, Any]:
    return {"memo": memo} if memo else {}


class CreditController(Controller):
    path = "/api/v1/credits"
    tags = ["credits"]

    @post("/mint", guards=[allow({ADMIN, OPS}, scope="issuance")], opt={"rate_group": "admin"})
    async def mint(
        self, ctx: NamedDependency[Ctx], data: JSONBody[MintCreate]
    ) -> Response[OperationRead]:
        """Issue new credits into a user's AVAILABLE compartment."""

        async def run(a: Attempt) -> OperationRead:
            amount = await ctx.svc.parse(data.amount, data.asset)
            wallet = await ctx.svc.wallet(data.user_id, data.asset, ctx.actor)
            issuance = await ctx.svc.system(data.asset, SystemAccount.ISSUANCE, ctx.actor)
            legs = transfer_legs(issuance, wallet[AccountKind.AVAILABLE], data.asset, amount)
            result = await ctx.svc.ledger.post(
                PostOperation(OperationType.MINT, legs, ctx.actor, a.core_key, _memo(data.memo))
            )
            return await render.operation(ctx.svc, result)

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
            return await render.operation(ctx.svc, result)

        return await ctx.once(data, run)

    @post("/move", guards=[allow({USER, ADMIN, OPS}, scope="payments")])
    async def move(
        self, ctx: NamedDependency[Ctx], data: JSONBody[MoveCreate]
    ) -> Response[OperationRead]:
        """Between compartments of one user (a USER: only their own, only to LOCKED)."""

        async def run(a: Attempt) -> OperationRead:
            owner = data.user_id or ctx.principal.user_id
            ctx.check_user(owner)
            rule = MOVES.get((data.from_kind, data.to_kind))
            if rule is None:
                raise ValidationError(
                    f"no move from {data.from_kind.value} to {data.to_kind.value}",
                    field="to_kind",
                )
            type_, roles, needs_reason = rule
            if ctx.principal.role not in roles:
                raise ValidationError(
                    f"a {ctx.principal.role.value} cannot move {data.from_kind.value} "
                    f"to {data.to_kind.value}",
                    field="to_kind",
                )
            if needs_reason and not data.reason:
                raise ReasonRequired("this move needs a reason", field="reason")
            amount = await ctx.svc.parse(data.amount, data.asset)
            wallet = await ctx.svc.wallet(owner, data.asset, ctx.actor)
            legs = transfer_legs(wallet[data.from_kind], wallet[data.to_kind], data.asset, amount)
            result = await ctx.svc.ledger.post(
                PostOperation(type_, legs, ctx.actor, a.core_key, reason=data.reason)
            )
            return await render.operation(ctx.svc, result)

        return await ctx.once(data, run)

    @post("/burn", guards=[allow({USER, ADMIN, OPS}, scope="payments")])
    async def burn(
        self, ctx: NamedDependency[Ctx], data: JSONBody[BurnCreate]
    ) -> Response[OperationRead]:
        """Retire credits from an AVAILABLE account (a user's own; staff: any, with a
        reason) back to issuance."""

        async def run(a: Attempt) -> OperationRead:
            if ctx.is_user:
                account = await ctx.source_account(data.account_id)
            else:
                account = await ctx.svc.account(data.account_id)
                if account.kind is not AccountKind.AVAILABLE:
                    raise ValidationError("only AVAILABLE credits can be burnt", field="account_id")
                if not data.reason:
                    raise ReasonRequired("burning a user's credits needs a reason", field="reason")
            amount = await ctx.svc.parse(data.amount, account.asset)
            issuance = await ctx.svc.system(account.asset, SystemAccount.ISSUANCE, ctx.actor)
            legs = transfer_legs(account.id, issuance, account.asset, amount)
            result = await ctx.svc.ledger.post(
                PostOperation(OperationType.BURN, legs, ctx.actor, a.core_key, reason=data.reason)
            )
            return await render.operation(ctx.svc, result)

        return await ctx.once(data, run)


ROUTES = [CreditController]
