"""Deposits and their sagas (reference: deposit → BLOCKED → compliance release).

The provider notifies a deposit on a webhook signed with HMAC-SHA256 over
``"<X-Webhook-Timestamp>.<raw body>"`` with ``VALUEOS_WEBHOOK_SECRET`` (header
``X-Webhook-Signature: sha256=<hex>``; timestamps older than 5 minutes are refused).
The deposit lands in the user's BLOCKED compartment inside a DEPOSIT saga; the
compliance role releases it to AVAILABLE with a reason. Saga status is derived."""

from __future__ import annotations

import hmac
import time
import uuid
from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency
from litestar.exceptions import TooManyRequestsException
from litestar.handlers.base import BaseRouteHandler
from litestar.params import FromPath, JSONBody

from api import render
from api.auth import COMPLIANCE, EVERYONE, PUBLIC, allow, note_failures
from api.context import Ctx, client_ip
from api.errors import ApiError
from api.idempotency import Attempt, idempotent
from api.schemas.credits import OperationRead
from api.schemas.deposits import DepositCreate, DepositRead, ReleaseCreate, TransactionRead
from api.services import Services
from api.throttle import FailureThrottle, WindowCounts
from core.risk.loop import sign
from core.types import Actor, Role

SIGNATURE_HEADER = "X-Webhook-Signature"
TIMESTAMP_HEADER = "X-Webhook-Timestamp"
TOLERANCE_SECONDS = 300


async def webhook_signature(
    connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler
) -> None:
    """Guard: the body must be signed by the provider (runs before the body is parsed).

    Rate limits count after the check, apart: a request whose signature fails counts
    against its address as a failed authentication (``api.throttle``; 429 once over),
    a verified one against the provider's budget (``VALUEOS_RATE_WEBHOOKS`` a minute) —
    forged traffic, even from the provider's own address, cannot use up the provider's."""
    svc: Services = connection.app.state.services
    secret = svc.settings.webhook_secret
    if not secret:
        raise ApiError(503, "WEBHOOK_DISABLED", "VALUEOS_WEBHOOK_SECRET is not configured")
    stamp = connection.headers.get(TIMESTAMP_HEADER, "")
    given = connection.headers.get(SIGNATURE_HEADER, "")
    assert isinstance(connection, Request)  # noqa: S101 - HTTP routes get a Request
    body = await connection.body()
    fresh = stamp.isdigit() and abs(time.time() - int(stamp)) <= TOLERANCE_SECONDS
    if not fresh or not hmac.compare_digest(given, sign(secret, stamp, body)):
        failures: FailureThrottle = connection.app.state.auth_failures
        ip = f"ip:{connection.client.host if connection.client else 'unknown'}"
        if await failures.blocked(ip):
            raise TooManyRequestsException("too many failed webhook signatures; wait a minute")
        await note_failures(connection, ip)
        problem = "webhook signature does not match" if fresh else "missing or stale timestamp"
        raise ApiError(401, "INVALID_SIGNATURE", problem)
    verified: WindowCounts = connection.app.state.webhook_traffic
    if await verified.over("provider"):
        raise TooManyRequestsException("webhook rate limit exceeded")
    await verified.add("provider")


class DepositWebhook(Controller):
    path = "/api/v1/webhooks"
    tags = ["webhooks"]

    @post(
        "/deposits",
        guards=[webhook_signature],
        opt={**PUBLIC, "public": False, "webhook": True, "rate_group": None},
        security=[{"WebhookSignature": []}],
    )
    async def deposit(
        self, request: Request[Any, Any, Any], data: JSONBody[DepositCreate]
    ) -> Response[DepositRead]:
        """Record a provider's deposit into the user's BLOCKED compartment (idempotent
        on the provider's ``reference``)."""
        svc: Services = request.app.state.services
        actor = Actor(
            "provider:deposits", Role.SYSTEM, client_ip(request, svc.settings.trusted_proxy)
        )

        async def run(_: Attempt) -> DepositRead:
            saga, result = await svc.sagas.deposit(
                owner_id=data.user_id,
                asset=data.asset,
                amount=data.amount,
                external_reference=data.reference,
                actor=actor,
            )
            return DepositRead(
                render.transaction(saga), await render.operation(svc, result, render.everything)
            )

        return await idempotent(request, svc.idempotency, "webhook:deposits", data, run)


class TransactionController(Controller):
    path = "/api/v1/transactions/{transaction_id:uuid}"
    tags = ["transactions"]

    @get("/", guards=[allow(EVERYONE, scope="read")])
    async def get_transaction(
        self, ctx: NamedDependency[Ctx], transaction_id: FromPath[uuid.UUID]
    ) -> TransactionRead:
        """A saga with its operations and derived status (a USER: their own only)."""
        viewer = ctx.viewer
        return render.transaction(await ctx.svc.sagas.get(transaction_id, viewer=viewer))

    @post(
        "/release",
        guards=[allow({COMPLIANCE}, scope="admin")],
        opt={"rate_group": "admin"},
    )
    async def release(
        self,
        ctx: NamedDependency[Ctx],
        transaction_id: FromPath[uuid.UUID],
        data: JSONBody[ReleaseCreate],
    ) -> Response[OperationRead]:
        """Compliance releases a deposit BLOCKED → AVAILABLE (reason required)."""

        async def run(_: Attempt) -> OperationRead:
            result = await ctx.svc.sagas.release(
                transaction_id, amount=data.amount, reason=data.reason, actor=ctx.actor
            )
            return await render.operation(ctx.svc, result, ctx.sees)

        return await ctx.once(data, run)


ROUTES = [DepositWebhook, TransactionController]
