"""Assets (vCredit definitions): create (admin), list, get."""

from __future__ import annotations

from litestar import Controller, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from api.auth import ADMIN, EVERYONE, allow
from api.context import Ctx
from api.idempotency import Attempt
from api.schemas.assets import AssetCreate, AssetRead
from core.accounts import Asset


def _read(asset: Asset) -> AssetRead:
    return AssetRead(asset.code, asset.name, asset.scale, asset.kind)


class AssetController(Controller):
    path = "/api/v1/assets"
    tags = ["assets"]

    @post("/", guards=[allow({ADMIN}, scope="admin")], opt={"rate_group": "admin"})
    async def create_asset(
        self, ctx: NamedDependency[Ctx], data: JSONBody[AssetCreate]
    ) -> Response[AssetRead]:
        async def run(_: Attempt) -> AssetRead:
            asset = await ctx.svc.ledger.accounts.create_asset(
                code=data.code, name=data.name, scale=data.scale, kind=data.kind, actor=ctx.actor
            )
            return _read(asset)

        return await ctx.once(data, run)

    @get("/", guards=[allow(EVERYONE, scope="read")])
    async def list_assets(self, ctx: NamedDependency[Ctx]) -> list[AssetRead]:
        return [_read(a) for a in await ctx.svc.ledger.accounts.list_assets()]

    @get("/{code:str}", guards=[allow(EVERYONE, scope="read")])
    async def get_asset(self, ctx: NamedDependency[Ctx], code: FromPath[str]) -> AssetRead:
        return _read(await ctx.svc.asset(code))


ROUTES = [AssetController]
