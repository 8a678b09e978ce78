"""Policies: versioned documents attached to an (asset, operation type), and the dry run.

ADMIN and COMPLIANCE create versions (DRAFT), activate one (the previous active version
is retired; new operations only) and retire; staff readers (AUDITOR and READ_ONLY
included) list and read them. The document's JSON schema is served at
``/api/v1/policies/schema``; an invalid document is 422 INVALID_POLICY naming the exact
path (``details.path``, and the field ``document.<path>``).

The dry run evaluates a transfer exactly as ``POST /api/v1/credits/transfer`` would post
it — policies, fees, balances — and writes nothing to the ledger."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromQuery, JSONBody, PathParameter, QueryParameter

from api import render
from api.auth import ADMIN, COMPLIANCE, EVERYONE, STAFF_READERS, allow
from api.context import Ctx
from api.idempotency import Attempt
from api.schemas.common import ReasonCreate
from api.schemas.policies import (
    DryRunCreate,
    DryRunRead,
    PolicyCreate,
    PolicyRead,
    PolicyRetire,
)
from core.errors import InvalidPolicy, UnknownPolicy
from core.policy import versions
from core.policy.rules import json_schema
from core.policy.versions import PolicyRecord
from core.types import OperationType

PolicyId = Annotated[int, PathParameter(ge=1, le=2**63 - 1)]
AssetFilter = Annotated[str | None, QueryParameter(pattern=r"^[A-Z][A-Z0-9_]{0,31}$")]
WRITERS = frozenset({ADMIN, COMPLIANCE})


def read(p: PolicyRecord) -> PolicyRead:
    return PolicyRead(
        p.id, p.asset, p.operation_type, p.version, p.status, p.document, p.fee_account_id,
        p.created_by, p.created_at, p.activated_at,
    )  # fmt: skip


class PolicyController(Controller):
    path = "/api/v1/policies"
    tags = ["policies"]

    @post("/", guards=[allow(WRITERS, scope="admin")], opt={"rate_group": "admin"})
    async def create(
        self, ctx: NamedDependency[Ctx], data: JSONBody[PolicyCreate]
    ) -> Response[PolicyRead]:
        """Store a new DRAFT version of the (asset, operation type)'s policy."""
        if b"\\u0000" in msgspec.json.encode(data.document):
            raise InvalidPolicy(
                "$: NUL characters are not allowed", path="$", problem="NUL", field="document"
            )

        async def run(_: Attempt) -> PolicyRead:
            await ctx.svc.asset(data.asset)  # 404 UNKNOWN_ASSET
            try:
                record = await versions.create_policy(
                    ctx.svc.ledger,
                    asset=data.asset,
                    operation_type=data.operation_type,
                    document=data.document,
                    actor=ctx.actor,
                    reason=data.reason,
                )
            except InvalidPolicy as exc:
                path = str(exc.details.get("path", "$"))
                raise InvalidPolicy(
                    exc.message, **{**exc.details, "field": "document" + path[1:]}
                ) from None
            return read(record)

        return await ctx.once(data, run)

    @get("/", guards=[allow(STAFF_READERS, scope="read")])
    async def list_policies(
        self,
        ctx: NamedDependency[Ctx],
        asset: AssetFilter = None,
        operation_type: FromQuery[OperationType | None] = None,
        active_only: FromQuery[bool] = False,
    ) -> list[PolicyRead]:
        """Every version, by asset, operation type and version."""
        found = await versions.list_policies(
            ctx.svc.ledger,
            asset=asset,
            operation_type=operation_type,
            active_only=active_only,
        )
        return [read(p) for p in found]

    @get("/schema", guards=[allow(EVERYONE, scope="read")])
    async def schema(self) -> dict[str, Any]:
        """The JSON Schema of a policy document."""
        return json_schema()

    @get("/{policy_id:int}", guards=[allow(STAFF_READERS, scope="read")])
    async def get_policy(self, ctx: NamedDependency[Ctx], policy_id: PolicyId) -> PolicyRead:
        return read(await versions.get_policy(ctx.svc.ledger, policy_id))

    @post(
        "/{policy_id:int}/activate",
        guards=[allow(WRITERS, scope="admin")],
        status_code=200,
        opt={"rate_group": "admin"},
    )
    async def activate(
        self, ctx: NamedDependency[Ctx], policy_id: PolicyId, data: JSONBody[ReasonCreate]
    ) -> Response[PolicyRead]:
        """Make this version THE policy of its (asset, operation type); the previous one
        is retired. Operations planned after this see it; none before."""

        async def run(_: Attempt) -> PolicyRead:
            record = await versions.activate_policy(
                ctx.svc.ledger, policy_id, actor=ctx.actor, reason=data.reason
            )
            return read(record)

        return await ctx.once(data, run, status_code=200)

    @post(
        "/retire",
        guards=[allow(WRITERS, scope="admin")],
        status_code=200,
        opt={"rate_group": "admin"},
    )
    async def retire(
        self, ctx: NamedDependency[Ctx], data: JSONBody[PolicyRetire]
    ) -> Response[PolicyRead]:
        """Leave the (asset, operation type) without a policy; returns the retired version
        (404 UNKNOWN_POLICY when none is active)."""

        async def run(_: Attempt) -> PolicyRead:
            record = await versions.retire_policy(
                ctx.svc.ledger,
                asset=data.asset,
                operation_type=data.operation_type,
                actor=ctx.actor,
                reason=data.reason,
            )
            if record is None:
                raise UnknownPolicy(
                    f"no active policy for {data.asset}/{data.operation_type.value}",
                    asset=data.asset,
                    operation_type=data.operation_type.value,
                )
            return read(record)

        return await ctx.once(data, run, status_code=200)

    @post("/dry-run", guards=[allow(EVERYONE, scope="read")], status_code=200)
    async def dry_run(self, ctx: NamedDependency[Ctx], data: JSONBody[DryRunCreate]) -> DryRunRead:
        """What this transfer would do now: allowed or the denial (code, rule, policy
        version), the fees and the resulting postings. Writes nothing to the ledger (the
        recipient's wallet is opened if they have none, as a transfer would)."""
        payer = ctx.viewer
        outcome = await ctx.svc.payments.dry_run(payer, ctx.actor, data.order())
        return await render.dry_run(ctx.svc, OperationType.TRANSFER, outcome, ctx.sees)


ROUTES = [PolicyController]
