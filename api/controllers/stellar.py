"""The Stellar bridge: bridge-outs (a USER's vCredits leave for the asset's Stellar Asset
Contract), their dry run and state, address linking (a signed challenge proves a Stellar
account is the user's, so their burns come back to them), the SACs (registered, paused and
resumed by staff), and the burns parked in suspense. Shapes are the ERC-20 bridge's.

A bridge-out answers 201 once the destination was checked on the network (an authorized
trustline, or a contract), and the debit and its mint are stored together; the worker then
sends, follows and settles the mint (``GET .../out/{id}``)."""

from __future__ import annotations

import base64
from typing import Annotated

from litestar import Controller, Response, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, QueryParameter

from api import render
from api.auth import ADMIN, EVERYONE, STAFF_READERS, USER, allow
from api.context import Ctx
from api.controllers.bridges import (
    STAFF,
    Asset,
    BridgeId,
    SuspenseController,
    _set_paused,
    out_read,
)
from api.idempotency import Attempt
from api.schemas.bridges import BridgeOutPageRead, BridgeOutRead, BridgePause, BridgeTokenRead
from api.schemas.policies import DryRunRead
from api.schemas.stellar import (
    LinkChallengeCreate,
    LinkChallengeRead,
    LinkCreate,
    LinkRead,
    StellarBridgeOutCreate,
    StellarTokenCreate,
    StellarTokenRead,
)
from core.bridges import erc20, stellar, stellar_in
from core.bridges.stellar import StellarToken
from core.bridges.stellar_in import StellarLink
from core.types import OperationType


def token_read(t: StellarToken) -> StellarTokenRead:
    return StellarTokenRead(
        t.asset, t.chain_id, t.contract, t.code, t.issuer, t.paused, t.pause_reason
    )


def link_read(v: StellarLink) -> LinkRead:
    return LinkRead(v.address, v.user, v.linked_at)


class StellarOutController(Controller):
    path = "/api/v1/bridges/stellar"
    tags = ["bridges"]

    @post("/out", guards=[allow({USER}, scope="payments")])
    async def bridge_out(
        self, ctx: NamedDependency[Ctx], data: JSONBody[StellarBridgeOutCreate]
    ) -> Response[BridgeOutRead]:
        """Check the destination on the network, then debit the caller's AVAILABLE account into
        the asset's in-flight account and store the SAC ``mint`` of the same amount, together
        (a BRIDGE_OUT operation, evaluated by the policy engine first)."""

        async def run(a: Attempt) -> BridgeOutRead:
            view = await ctx.svc.stellar_outs.bridge_out(
                ctx.principal.user_id, ctx.actor, data.order(), key=a.core_key
            )
            return await out_read(ctx.svc, view)

        return await ctx.once(data, run)

    @post("/out/dry-run", guards=[allow({USER}, scope="read")], status_code=200)
    async def dry_run(
        self, ctx: NamedDependency[Ctx], data: JSONBody[StellarBridgeOutCreate]
    ) -> DryRunRead:
        outcome = await ctx.svc.stellar_outs.dry_run(ctx.principal.user_id, ctx.actor, data.order())
        return await render.dry_run(ctx.svc, OperationType.BRIDGE_OUT, outcome, ctx.sees)

    @get("/out/{bridge_id:str}", guards=[allow(EVERYONE, scope="read")])
    async def get_out(self, ctx: NamedDependency[Ctx], bridge_id: BridgeId) -> BridgeOutRead:
        """A bridge-out's state (a USER: only their own); ``block_number`` is the ledger."""
        user = ctx.viewer
        return await out_read(
            ctx.svc, await erc20.get_bridge_out(ctx.svc.ledger, bridge_id, user=user)
        )

    @get("/out", guards=[allow({USER}, scope="read")])
    async def list_out(
        self,
        ctx: NamedDependency[Ctx],
        cursor: Annotated[int | None, QueryParameter(ge=1, le=2**63 - 1)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=erc20.MAX_PAGE)] = 50,
    ) -> BridgeOutPageRead:
        """The caller's bridge-outs (every chain's), newest first."""
        found = await erc20.list_bridge_outs(
            ctx.svc.ledger, ctx.principal.user_id, before_operation=cursor, limit=limit
        )
        return BridgeOutPageRead(
            [await out_read(ctx.svc, v) for v in found],
            found[-1].debit_operation if len(found) == limit else None,
        )

    @post("/links/challenge", guards=[allow({USER}, scope="payments")], status_code=201)
    async def challenge(
        self, ctx: NamedDependency[Ctx], data: JSONBody[LinkChallengeCreate]
    ) -> LinkChallengeRead:
        """A single-use challenge (10 minutes) to sign with the address's key (SEP-53)."""
        ch = await stellar_in.link_challenge(
            ctx.svc.ledger, ctx.principal.user_id, data.address, ctx.actor
        )
        return LinkChallengeRead(ch.id, ch.address, ch.challenge, ch.expires_at)

    @post("/links", guards=[allow({USER}, scope="payments")])
    async def link(
        self, ctx: NamedDependency[Ctx], data: JSONBody[LinkCreate]
    ) -> Response[LinkRead]:
        """Link the challenge's address to the caller once the signature verifies: its burns
        are then credited to the caller's account."""

        async def run(_: Attempt) -> LinkRead:
            done = await stellar_in.link_address(
                ctx.svc.ledger, ctx.principal.user_id, data.challenge_id,
                base64.b64decode(data.signature), ctx.actor,
            )  # fmt: skip
            return link_read(done)

        return await ctx.once(data, run)

    @get("/links", guards=[allow({USER}, scope="read")])
    async def links(self, ctx: NamedDependency[Ctx]) -> list[LinkRead]:
        found = await stellar_in.list_links(ctx.svc.ledger, ctx.principal.user_id)
        return [link_read(v) for v in found]


class StellarTokenController(Controller):
    path = "/api/v1/bridges/stellar/tokens"
    tags = ["bridges"]

    @post("/", guards=[allow({ADMIN}, scope="admin")], opt={"rate_group": "admin"})
    async def register(
        self, ctx: NamedDependency[Ctx], data: JSONBody[StellarTokenCreate]
    ) -> Response[StellarTokenRead]:
        async def run(_: Attempt) -> StellarTokenRead:
            token = await stellar.register_stellar_token(
                ctx.svc.ledger, asset=data.asset,
                passphrase=ctx.svc.settings.stellar_passphrase or "", code=data.asset_code,
                issuer=data.issuer, contract=data.contract, actor=ctx.actor,
            )  # fmt: skip
            return token_read(token)

        return await ctx.once(data, run)

    @get("/{asset:str}", guards=[allow(STAFF_READERS | {USER}, scope="read")])
    async def get_token(self, ctx: NamedDependency[Ctx], asset: Asset) -> StellarTokenRead:
        return token_read(await stellar.get_stellar_token(ctx.svc.ledger, asset))

    @post("/{asset:str}/pause", guards=STAFF, status_code=200, opt={"rate_group": "admin"})
    async def pause(
        self, ctx: NamedDependency[Ctx], asset: Asset, data: JSONBody[BridgePause]
    ) -> Response[BridgeTokenRead]:
        """Stop Stellar bridge-outs of ``asset`` (the mints already stored still complete)."""
        return await _set_paused(ctx, asset, data, paused=True)

    @post("/{asset:str}/resume", guards=STAFF, status_code=200, opt={"rate_group": "admin"})
    async def resume(
        self, ctx: NamedDependency[Ctx], asset: Asset, data: JSONBody[BridgePause]
    ) -> Response[BridgeTokenRead]:
        return await _set_paused(ctx, asset, data, paused=False)


class StellarSuspenseController(SuspenseController):
    """Burns the watcher could not credit (a ``from`` linked to nobody, an amount that does not
    map): the same suspense as the ERC-20 bridge's (key: chain id, transaction hash, operation
    << 16 | event index)."""

    path = "/api/v1/bridges/stellar/suspense"


ROUTES = [StellarOutController, StellarTokenController, StellarSuspenseController]
