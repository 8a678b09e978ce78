"""Users (created by an admin with a role), the caller's identity, and wallets: a user's
compartments per asset with posted, pending and available balances."""

from __future__ import annotations

import uuid
from collections import defaultdict

from litestar import Controller, Response, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from api.auth import ADMIN, EVERYONE, allow
from api.context import Ctx
from api.idempotency import Attempt
from api.schemas.accounts import CompartmentRead, WalletRead
from api.schemas.users import MeRead, UserCreate, UserRead, UserUpdate
from core.credentials import User


def user_read(user: User) -> UserRead:
    return UserRead(user.id, user.email, user.role, user.status, user.created_at)


class UserController(Controller):
    path = "/api/v1"
    tags = ["users"]

    @get("/me", guards=[allow(EVERYONE, scope=None)])
    async def me(self, ctx: NamedDependency[Ctx]) -> MeRead:
        p = ctx.principal
        return MeRead(p.user_id, p.role, sorted(p.scopes), p.client)

    @post("/users", guards=[allow({ADMIN}, scope="admin")], opt={"rate_group": "admin"})
    async def create_user(
        self, ctx: NamedDependency[Ctx], data: JSONBody[UserCreate]
    ) -> Response[UserRead]:
        async def run(_: Attempt) -> UserRead:
            user = await ctx.svc.credentials.create_user(
                email=data.email, role=data.role, actor=ctx.actor
            )
            return user_read(user)

        return await ctx.once(data, run)

    @patch(
        "/users/{user_id:uuid}", guards=[allow({ADMIN}, scope="admin")], opt={"rate_group": "admin"}
    )
    async def update_user(
        self, ctx: NamedDependency[Ctx], user_id: FromPath[uuid.UUID], data: JSONBody[UserUpdate]
    ) -> UserRead:
        """Suspend or reactivate a user or change their role (audited with the reason)."""
        user = await ctx.svc.credentials.update_user(
            user_id, status=data.status, role=data.role, reason=data.reason, actor=ctx.actor
        )
        ctx.request.app.state.authenticator.forget()
        return user_read(user)

    @get("/users/{user_id:uuid}", guards=[allow(EVERYONE, scope="read")])
    async def get_user(self, ctx: NamedDependency[Ctx], user_id: FromPath[uuid.UUID]) -> UserRead:
        ctx.check_user(user_id)
        return user_read(await ctx.svc.credentials.get_user(user_id))

    @get("/users/{user_id:uuid}/wallets", guards=[allow(EVERYONE, scope="read")])
    async def wallets(
        self, ctx: NamedDependency[Ctx], user_id: FromPath[uuid.UUID]
    ) -> list[WalletRead]:
        """Every compartment the user has, per asset (empty until first credited)."""
        ctx.check_user(user_id)
        await ctx.svc.credentials.get_user(user_id)
        ledger = ctx.svc.ledger
        accounts = await ledger.accounts.list_accounts(user_id)
        balances = await ledger.queries.balances([a.id for a in accounts])
        by_asset: dict[str, list[CompartmentRead]] = defaultdict(list)
        totals: dict[str, int] = defaultdict(int)
        for account in accounts:
            b = balances[account.id]
            fmt = ctx.svc.fmt
            by_asset[account.asset].append(
                CompartmentRead(
                    account.id,
                    account.kind,
                    await fmt(b.posted, b.asset),
                    await fmt(b.pending, b.asset),
                    await fmt(b.available, b.asset),
                )
            )
            totals[account.asset] += b.posted
        return [
            WalletRead(
                asset,
                (await ctx.svc.asset(asset)).scale,
                compartments,
                await ctx.svc.fmt(totals[asset], asset),
            )
            for asset, compartments in sorted(by_asset.items())
        ]


ROUTES = [UserController]
