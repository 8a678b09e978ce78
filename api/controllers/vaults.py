"""Vaults: named accounts a user opens per asset and shares as OWNER / CONTRIBUTOR /
VIEWER (``core.vaults`` enforces membership; a non-member gets the same 404 as for a
vault that does not exist), and atomic moves between one's own accounts and vaults.

Who may do what:

- Writes (create, set/remove members, moves) are USER only: staff never act inside a
  user's vaults, and moving other people's money is not a staff power.
- Reads follow the project's rule for accounts (``STAFF_READERS``): a USER reads the
  vaults they are a member of; staff readers (ADMIN, OPS, COMPLIANCE, READ_ONLY,
  AUDITOR) read any vault, as seen by its creator or by the member they name with
  ``user_id`` (a list needs ``user_id``). A USER naming somebody else gets 404.

Moves have their own route, ``POST /vaults/moves``, rather than ``/credits/move``: that
one moves between kinds of compartments of a wallet (LOCK/UNLOCK, with staff powers),
while a vault move addresses accounts by id, is a USER's own act (INTERNAL_MOVE) and is
checked against vault membership.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from litestar import Controller, Response, delete, get, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, PathParameter, QueryParameter

from api import render
from api.auth import EVERYONE, USER, allow
from api.context import Ctx
from api.idempotency import Attempt
from api.schemas.accounts import HistoryRead
from api.schemas.common import AssetCode
from api.schemas.credits import OperationRead
from api.schemas.vaults import (
    VaultCreate,
    VaultMemberRead,
    VaultMemberSet,
    VaultMoveCreate,
    VaultRead,
)
from core import vaults
from core.errors import ValidationError

MAX_ID = 2**63 - 1
VaultId = Annotated[int, PathParameter(ge=1, le=MAX_ID)]
UserParam = Annotated[
    uuid.UUID | None,
    QueryParameter(description="staff readers: whose view (a USER may only name themselves)"),
]
READ = [allow(EVERYONE, scope="read")]
WRITE = [allow({USER}, scope="payments")]


def viewer(ctx: Ctx, user_id: uuid.UUID | None) -> uuid.UUID | None:
    """Whose data a read is for: a USER always themselves (naming somebody else is a 404,
    as for a user who does not exist); staff readers whom they name, or None."""
    if ctx.is_user:
        if user_id is not None:
            ctx.check_user(user_id)
        return ctx.principal.user_id
    return user_id


async def vault_read(ctx: Ctx, v: vaults.Vault) -> VaultRead:
    fmt = ctx.svc.fmt
    return VaultRead(
        id=v.id,
        name=v.name,
        asset=v.asset,
        owner_id=v.owner_id,
        role=v.role,
        status=v.status,
        posted=await fmt(v.posted, v.asset),
        pending=await fmt(v.pending, v.asset),
        available=await fmt(v.available, v.asset),
        created_at=v.created_at,
    )


def member_read(m: vaults.VaultMember) -> VaultMemberRead:
    return VaultMemberRead(m.vault_id, m.user_id, m.role, m.added_by, m.created_at, m.updated_at)


class VaultController(Controller):
    path = "/api/v1/vaults"
    tags = ["vaults"]

    @post("/", guards=WRITE)
    async def create_vault(
        self, ctx: NamedDependency[Ctx], data: JSONBody[VaultCreate]
    ) -> Response[VaultRead]:
        """Open a vault for one asset; the caller becomes its OWNER (and creator)."""

        async def run(_: Attempt) -> VaultRead:
            vault = await vaults.create_vault(
                ctx.svc.ledger,
                user=ctx.principal.user_id,
                asset=data.asset,
                name=data.name,
                actor=ctx.actor,
            )
            return await vault_read(ctx, vault)

        return await ctx.once(data, run)

    @get("/", guards=READ)
    async def list_vaults(
        self,
        ctx: NamedDependency[Ctx],
        user_id: UserParam = None,
        asset: Annotated[AssetCode | None, QueryParameter()] = None,
    ) -> list[VaultRead]:
        """The vaults the caller (staff: ``user_id``, required) is a member of."""
        who = viewer(ctx, user_id)
        if who is None:
            raise ValidationError("staff name the user whose vaults to list", field="user_id")
        found = await vaults.list_vaults(ctx.svc.ledger, user=who, asset=asset)
        return [await vault_read(ctx, v) for v in found]

    @get("/{vault_id:int}", guards=READ)
    async def get_vault(
        self, ctx: NamedDependency[Ctx], vault_id: VaultId, user_id: UserParam = None
    ) -> VaultRead:
        """A vault with its balance and the viewer's role."""
        who = viewer(ctx, user_id)
        return await vault_read(
            ctx, await vaults.get_vault(ctx.svc.ledger, user=who, vault_id=vault_id)
        )

    @get("/{vault_id:int}/entries", guards=READ)
    async def vault_history(
        self,
        ctx: NamedDependency[Ctx],
        vault_id: VaultId,
        user_id: UserParam = None,
        cursor: Annotated[int | None, QueryParameter(ge=1, le=MAX_ID)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
    ) -> HistoryRead:
        """The vault's entries, newest first, with ``balance_after`` (cursor pagination)."""
        who = viewer(ctx, user_id)
        vault, page = await vaults.vault_history(
            ctx.svc.ledger, user=who, vault_id=vault_id, before_seq=cursor, limit=limit
        )
        return await render.history(ctx.svc, vault_id, vault.asset, page)

    @get("/{vault_id:int}/members", guards=READ)
    async def list_members(
        self, ctx: NamedDependency[Ctx], vault_id: VaultId, user_id: UserParam = None
    ) -> list[VaultMemberRead]:
        who = viewer(ctx, user_id)
        found = await vaults.list_members(ctx.svc.ledger, user=who, vault_id=vault_id)
        return [member_read(m) for m in found]

    @put("/{vault_id:int}/members/{member_id:uuid}", guards=WRITE)
    async def set_member(
        self,
        ctx: NamedDependency[Ctx],
        vault_id: VaultId,
        member_id: FromPath[uuid.UUID],
        data: JSONBody[VaultMemberSet],
    ) -> VaultMemberRead:
        """Add a member with a role or change their role (the vault's OWNERs only)."""
        member = await vaults.set_member(
            ctx.svc.ledger,
            user=ctx.principal.user_id,
            vault_id=vault_id,
            member=member_id,
            role=data.role,
            actor=ctx.actor,
        )
        return member_read(member)

    @delete("/{vault_id:int}/members/{member_id:uuid}", guards=WRITE)
    async def remove_member(
        self, ctx: NamedDependency[Ctx], vault_id: VaultId, member_id: FromPath[uuid.UUID]
    ) -> None:
        """Remove a member (an OWNER removes others; any member may remove themselves)."""
        await vaults.remove_member(
            ctx.svc.ledger,
            user=ctx.principal.user_id,
            vault_id=vault_id,
            member=member_id,
            actor=ctx.actor,
        )

    @post("/moves", guards=WRITE)
    async def move(
        self, ctx: NamedDependency[Ctx], data: JSONBody[VaultMoveCreate]
    ) -> Response[OperationRead]:
        """Move funds between the caller's AVAILABLE compartment and vaults they own or
        contribute to, as ONE ledger operation (both sides or neither)."""

        if data.from_account_id == data.to_account_id:
            raise ValidationError("source and destination must differ", field="to_account_id")

        async def run(a: Attempt) -> OperationRead:
            amount = await ctx.svc.parse(data.amount, data.asset)
            result = await vaults.move(
                ctx.svc.ledger,
                user=ctx.principal.user_id,
                source=data.from_account_id,
                destination=data.to_account_id,
                asset=data.asset,
                amount=amount,
                actor=ctx.actor,
                idempotency_key=a.core_key,
                memo=data.memo,
            )
            return await render.operation(ctx.svc, result, ctx.sees)

        return await ctx.once(data, run)


ROUTES = [VaultController]
