"""The forensic ledger view: every entry on every account a user owns or is a vault
member of, newest first, with the operation type, the counterparty accounts and the
balance after each entry (``core.forensics``), keyset-paginated on ``seq``.

``GET /me/ledger`` is the caller's own view (any role: a principal reads itself).
``GET /users/{user_id}/ledger``: a USER only their own (somebody else's is a 404, as for
a user who does not exist); staff readers (``STAFF_READERS``) any user's.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import FromPath, QueryParameter

from api.auth import EVERYONE, allow
from api.context import Ctx
from api.controllers.vaults import MAX_ID
from api.schemas.common import AssetCode
from api.schemas.forensics import ForensicEntryRead, ForensicPageRead
from core.forensics import forensic_ledger

READ = [allow(EVERYONE, scope="read")]
Cursor = Annotated[int | None, QueryParameter(ge=1, le=MAX_ID)]
Limit = Annotated[int, QueryParameter(ge=1, le=500)]
AssetFilter = Annotated[AssetCode | None, QueryParameter()]
AccountFilter = Annotated[
    int | None, QueryParameter(ge=1, le=MAX_ID, description="only this account's entries")
]


async def forensic_page(
    ctx: Ctx,
    user: uuid.UUID,
    cursor: int | None,
    limit: int,
    asset: str | None,
    account_id: int | None,
) -> ForensicPageRead:
    page = await forensic_ledger(
        ctx.svc.ledger,
        user=user,
        before_seq=cursor,
        limit=limit,
        asset=asset,
        account_id=account_id,
    )
    fmt = ctx.svc.fmt
    return ForensicPageRead(
        user_id=user,
        entries=[
            ForensicEntryRead(
                seq=e.seq,
                operation_id=e.operation_id,
                operation_type=e.operation_type,
                account_id=e.account_id,
                account_kind=e.account_kind,
                vault_name=e.vault_name,
                asset=e.asset,
                amount=await fmt(e.amount, e.asset),
                balance_after=await fmt(e.balance_after, e.asset),
                counterparties=list(e.counterparties),
                epoch=e.epoch,
                created_at=e.created_at,
            )
            for e in page.entries
        ],
        next_cursor=page.next_cursor,
    )


class ForensicController(Controller):
    path = "/api/v1"
    tags = ["forensics"]

    @get("/me/ledger", guards=READ)
    async def my_ledger(
        self,
        ctx: NamedDependency[Ctx],
        cursor: Cursor = None,
        limit: Limit = 50,
        asset: AssetFilter = None,
        account_id: AccountFilter = None,
    ) -> ForensicPageRead:
        """The caller's forensic ledger (their accounts and the vaults they belong to)."""
        return await forensic_page(ctx, ctx.principal.user_id, cursor, limit, asset, account_id)

    @get("/users/{user_id:uuid}/ledger", guards=READ)
    async def user_ledger(
        self,
        ctx: NamedDependency[Ctx],
        user_id: FromPath[uuid.UUID],
        cursor: Cursor = None,
        limit: Limit = 50,
        asset: AssetFilter = None,
        account_id: AccountFilter = None,
    ) -> ForensicPageRead:
        """A user's forensic ledger (a USER: only their own)."""
        ctx.check_user(user_id)
        await ctx.svc.credentials.get_user(user_id)
        return await forensic_page(ctx, user_id, cursor, limit, asset, account_id)


ROUTES = [ForensicController]
