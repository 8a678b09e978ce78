"""One account: its balance, its history (newest first, keyset cursor, ``balance_after``
on every entry) and its balance as of a sequence number or a time."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import FromQuery, PathParameter, QueryParameter

from api import render
from api.auth import EVERYONE, allow
from api.context import Ctx
from api.schemas.accounts import AccountRead, BalanceAtRead, BalanceRead, HistoryRead
from core.errors import ValidationError

READ = [allow(EVERYONE, scope="read")]
MAX_ID = 2**63 - 1


class AccountController(Controller):
    path = "/api/v1/accounts/{account_id:int}"
    tags = ["accounts"]

    @get("/", guards=READ)
    async def get_account(
        self, ctx: NamedDependency[Ctx], account_id: Annotated[int, PathParameter(ge=1, le=MAX_ID)]
    ) -> AccountRead:
        account = await ctx.readable_account(account_id)
        b = await ctx.svc.ledger.queries.balance(account_id)
        fmt = ctx.svc.fmt
        return AccountRead(
            id=account.id,
            asset=account.asset,
            kind=account.kind,
            owner_id=account.owner_id,
            status=account.status,
            floor=None if b.floor is None else await fmt(b.floor, b.asset),
            created_at=account.created_at,
            balance=BalanceRead(
                account.id,
                b.asset,
                await fmt(b.posted, b.asset),
                await fmt(b.pending, b.asset),
                await fmt(b.available, b.asset),
            ),
        )

    @get("/entries", guards=READ)
    async def history(
        self,
        ctx: NamedDependency[Ctx],
        account_id: Annotated[int, PathParameter(ge=1, le=MAX_ID)],
        cursor: Annotated[int | None, QueryParameter(ge=1, le=MAX_ID)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
    ) -> HistoryRead:
        account = await ctx.readable_account(account_id)
        page = await ctx.svc.ledger.queries.history(account_id, before_seq=cursor, limit=limit)
        return await render.history(ctx.svc, account_id, account.asset, page)

    @get("/balance", guards=READ)
    async def balance_at(
        self,
        ctx: NamedDependency[Ctx],
        account_id: Annotated[int, PathParameter(ge=1, le=MAX_ID)],
        seq: Annotated[int | None, QueryParameter(ge=0, le=MAX_ID)] = None,
        at: FromQuery[datetime | None] = None,
    ) -> BalanceAtRead:
        """Posted balance as of a global sequence number or a time (exactly one)."""
        account = await ctx.readable_account(account_id)
        if (seq is None) == (at is None):
            raise ValidationError("give exactly one of seq or at", field="seq")
        if at is not None and at.tzinfo is None:
            raise ValidationError("at needs a time zone (e.g. 2026-01-01T00:00:00Z)", field="at")
        posted = await ctx.svc.ledger.queries.balance_at(account_id, seq=seq, at=at)
        return BalanceAtRead(
            account_id, account.asset, await ctx.svc.fmt(posted, account.asset), seq, at
        )


ROUTES = [AccountController]
