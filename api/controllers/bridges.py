"""The ERC-20 bridge: bridge-outs (a USER's vCredits leave for their token on Ethereum), their
dry run and state, the tokens (registered and paused by staff), and the redemptions parked in
suspense (listed and resolved by staff).

A bridge-out answers 201 once the debit and its mint are stored together; the mint is then
sent, confirmed and finalized by the worker (``GET .../out/{id}`` follows it)."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Response, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, PathParameter, QueryParameter

from api import render
from api.auth import ADMIN, EVERYONE, OPS, STAFF_READERS, USER, allow
from api.context import Ctx
from api.idempotency import Attempt
from api.schemas.bridges import (
    BridgeOutCreate,
    BridgeOutPageRead,
    BridgeOutRead,
    BridgePause,
    BridgeTokenCreate,
    BridgeTokenRead,
    RedemptionRead,
    SuspenseResolve,
)
from api.schemas.policies import DryRunRead
from api.services import Services
from core.bridges import erc20, redemptions, tokens
from core.bridges.erc20 import BridgeOutView
from core.bridges.redemptions import RedemptionKey, RedemptionView
from core.bridges.tokens import BridgeToken
from core.types import OperationType

BridgeId = Annotated[str, PathParameter(pattern=r"^[0-9a-f]{64}$")]
Asset = Annotated[str, PathParameter(pattern=r"^[A-Z][A-Z0-9_]{0,31}$")]
STAFF = [allow({ADMIN, OPS}, scope="admin")]


async def out_read(svc: Services, v: BridgeOutView, head: int | None = None) -> BridgeOutRead:
    """``head``: the chain's latest block (:meth:`Services.chain_head`), for confirmations."""
    confirmations = None if head is None or v.block_number is None else head - v.block_number + 1
    return BridgeOutRead(
        v.id, v.user, v.asset, await svc.fmt(v.amount, v.asset), str(v.token_amount),
        v.to_address, v.chain_id, v.token, v.state, v.tx_status,
        None if v.tx_hash is None else "0x" + v.tx_hash.hex(), v.block_number,
        max(confirmations, 0) if confirmations is not None else None,
        v.debit_operation, v.settle_operation, v.created_at,
    )  # fmt: skip


def token_read(t: BridgeToken) -> BridgeTokenRead:
    return BridgeTokenRead(t.asset, t.chain_id, t.address, t.decimals, t.paused, t.pause_reason)


async def _set_paused(
    ctx: Ctx, asset: str, data: BridgePause, *, paused: bool
) -> Response[BridgeTokenRead]:
    async def run(_: Attempt) -> BridgeTokenRead:
        token = await tokens.set_paused(
            ctx.svc.ledger, asset, paused=paused, reason=data.reason, actor=ctx.actor
        )
        return token_read(token)

    return await ctx.once(data, run, status_code=200)


class BridgeOutController(Controller):
    path = "/api/v1/bridges/erc20"
    tags = ["bridges"]

    @post("/out", guards=[allow({USER}, scope="payments")])
    async def bridge_out(
        self, ctx: NamedDependency[Ctx], data: JSONBody[BridgeOutCreate]
    ) -> Response[BridgeOutRead]:
        """Debit the caller's AVAILABLE account into the asset's in-flight account and store
        the mint of the same amount to ``to_address``, together; the policy engine evaluates
        it as a BRIDGE_OUT operation first."""

        async def run(a: Attempt) -> BridgeOutRead:
            view = await ctx.svc.bridge_outs.bridge_out(
                ctx.principal.user_id, ctx.actor, data.order(), key=a.core_key
            )
            return await out_read(ctx.svc, view)

        return await ctx.once(data, run)

    @post("/out/dry-run", guards=[allow({USER}, scope="read")], status_code=200)
    async def dry_run(
        self, ctx: NamedDependency[Ctx], data: JSONBody[BridgeOutCreate]
    ) -> DryRunRead:
        """What this bridge-out would do now (policies, fees, postings); writes nothing."""
        outcome = await ctx.svc.bridge_outs.dry_run(ctx.principal.user_id, ctx.actor, data.order())
        return await render.dry_run(ctx.svc, OperationType.BRIDGE_OUT, outcome, ctx.sees)

    @get("/out/{bridge_id:str}", guards=[allow(EVERYONE, scope="read")])
    async def get_out(self, ctx: NamedDependency[Ctx], bridge_id: BridgeId) -> BridgeOutRead:
        """A bridge-out's state (a USER: only their own)."""
        user = ctx.viewer
        view = await erc20.get_bridge_out(ctx.svc.ledger, bridge_id, user=user)
        return await out_read(ctx.svc, view, await ctx.svc.chain_head())

    @get("/out", guards=[allow({USER}, scope="read")])
    async def list_out(
        self,
        ctx: NamedDependency[Ctx],
        cursor: Annotated[int | None, QueryParameter(ge=1, le=2**63 - 1)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=erc20.MAX_PAGE)] = 50,
    ) -> BridgeOutPageRead:
        """The caller's bridge-outs, newest first (``cursor``: the last page's next_cursor)."""
        found = await erc20.list_bridge_outs(
            ctx.svc.ledger, ctx.principal.user_id, before_operation=cursor, limit=limit
        )
        more = len(found) == limit
        head = await ctx.svc.chain_head() if found else None
        return BridgeOutPageRead(
            [await out_read(ctx.svc, v, head) for v in found],
            found[-1].debit_operation if more else None,
        )


class BridgeTokenController(Controller):
    path = "/api/v1/bridges/erc20/tokens"
    tags = ["bridges"]

    @post("/", guards=[allow({ADMIN}, scope="admin")], opt={"rate_group": "admin"})
    async def register(
        self, ctx: NamedDependency[Ctx], data: JSONBody[BridgeTokenCreate]
    ) -> Response[BridgeTokenRead]:
        """Record the token contract of an asset (deployed by ``valueos deploy-token``)."""

        async def run(_: Attempt) -> BridgeTokenRead:
            token = await tokens.register_token(
                ctx.svc.ledger, asset=data.asset, chain_id=data.chain_id,
                address=erc20.check_address(data.address), decimals=data.decimals,
                actor=ctx.actor,
            )  # fmt: skip
            return token_read(token)

        return await ctx.once(data, run)

    @get("/{asset:str}", guards=[allow(STAFF_READERS | {USER}, scope="read")])
    async def get_token(self, ctx: NamedDependency[Ctx], asset: Asset) -> BridgeTokenRead:
        return token_read(await tokens.get_token(ctx.svc.ledger, asset))

    @post("/{asset:str}/pause", guards=STAFF, status_code=200, opt={"rate_group": "admin"})
    async def pause(
        self, ctx: NamedDependency[Ctx], asset: Asset, data: JSONBody[BridgePause]
    ) -> Response[BridgeTokenRead]:
        """Stop bridge-outs of ``asset`` (the mints already stored still complete)."""
        return await _set_paused(ctx, asset, data, paused=True)

    @post("/{asset:str}/resume", guards=STAFF, status_code=200, opt={"rate_group": "admin"})
    async def resume(
        self, ctx: NamedDependency[Ctx], asset: Asset, data: JSONBody[BridgePause]
    ) -> Response[BridgeTokenRead]:
        return await _set_paused(ctx, asset, data, paused=False)


def redemption_read(v: RedemptionView) -> RedemptionRead:
    return RedemptionRead(
        v.key.chain_id, "0x" + v.key.tx_hash.hex(), v.key.log_index, v.token, v.block_number,
        v.sender, str(v.amount), "0x" + v.ledger_ref.hex(),
        None if v.outcome is None else str(v.outcome), v.reason, v.credit_operation,
        v.suspense_operation, v.resolved_operation, v.recorded_at,
    )  # fmt: skip


class SuspenseController(Controller):
    """Redemptions the bridge-in could not credit (unknown or unusable ledgerRef, an amount
    that does not map): parked in the asset's SUSPENSE account until staff resolve them."""

    path = "/api/v1/bridges/erc20/suspense"
    tags = ["bridges"]

    @get("/", guards=[allow(STAFF_READERS, scope="read")])
    async def list_suspense(
        self,
        ctx: NamedDependency[Ctx],
        unresolved_only: Annotated[bool, QueryParameter()] = True,
        limit: Annotated[int, QueryParameter(ge=1, le=redemptions.MAX_PAGE)] = 50,
    ) -> list[RedemptionRead]:
        """Suspended redemptions, oldest first (by default only those still to resolve)."""
        found = await redemptions.suspended_redemptions(
            ctx.svc.ledger, unresolved_only=unresolved_only, limit=limit
        )
        return [redemption_read(v) for v in found]

    @post("/resolve", guards=STAFF, status_code=200, opt={"rate_group": "admin"})
    async def resolve(
        self, ctx: NamedDependency[Ctx], data: JSONBody[SuspenseResolve]
    ) -> Response[RedemptionRead]:
        """Credit a suspended redemption to a named account, once (audited, with a reason)."""

        async def run(_: Attempt) -> RedemptionRead:
            key = RedemptionKey(data.chain_id, bytes.fromhex(data.tx_hash[2:]), data.log_index)
            view = await redemptions.resolve_suspense(
                ctx.svc.ledger, key, data.account_id, ctx.actor, data.reason
            )
            return redemption_read(view)

        return await ctx.once(data, run, status_code=200)


ROUTES = [BridgeOutController, BridgeTokenController, SuspenseController]
