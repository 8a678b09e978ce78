"""The application factory: ``create_app(settings)`` wires the controllers, auth, guards,
the one error mapping, rate limits, metrics, OpenAPI and the edge layer.

Layers of a request, outermost first: ``Edge`` (trace id, security headers, access
log; it sees every request, routed or not) → Litestar's exception handling (errors →
problem+json) → Prometheus → authentication (API key or JWT) → rate limit of the
route's group → guards (role and scope) → the request screen (``api.body``: content
type, hostile bytes) → the controller.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

from alembic.script import ScriptDirectory
from litestar import Litestar, Request
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import NotAuthorizedException
from litestar.middleware.rate_limit import RateLimitConfig
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController
from litestar.stores.base import Store
from litestar.stores.memory import MemoryStore
from litestar.types import LifeSpanReceive, LifeSpanScope, LifeSpanSend, Receive, Scope, Send

from api.auth import API_KEY_HEADER, PUBLIC, Authenticator, Principal, access_of, jwt_auth
from api.body import screen_request
from api.context import provide_ctx
from api.controllers import all_routes
from api.edge import Edge
from api.errors import handle_exception
from api.openapi import document_problems
from api.services import Services
from api.settings import ApiSettings, api_settings
from api.throttle import FailureThrottle, WindowCounts
from core.db import alembic_config, create_engine, resolve_url
from core.ledger import Ledger

#: route groups Litestar's limiter counts per client before the guards (webhooks count
#: in their signature guard instead: ``api.controllers.deposits.webhook_signature``)
RATE_GROUPS = ("api", "admin", "auth")


class ValueOSApp(Litestar):
    """Litestar with the ``Edge`` layer around everything (404s and 405s included)."""

    edge: Edge

    async def __call__(
        self,
        scope: Scope | LifeSpanScope,
        receive: Receive | LifeSpanReceive,
        send: Send | LifeSpanSend,
    ) -> None:
        await self.edge(scope, receive, send)  # type: ignore[arg-type]


class Metrics(PrometheusController):
    path = "/metrics"
    opt = {**PUBLIC, "rate_group": None}
    include_in_schema = False


def _metrics(token: str | None) -> type[Metrics]:
    """``/metrics``: public, or behind ``Authorization: Bearer <VALUEOS_METRICS_TOKEN>``."""
    if not token:
        return Metrics
    expected = f"Bearer {token}".encode()

    async def scraper_only(connection: ASGIConnection[Any, Any, Any, Any], _: Any) -> None:
        presented = connection.headers.get("authorization", "").encode()
        if not hmac.compare_digest(presented, expected):
            raise NotAuthorizedException("the metrics token is required")

    return type("ProtectedMetrics", (Metrics,), {"guards": [scraper_only]})


def _client(request: Request[Any, Any, Any]) -> str:
    user = request.scope.get("user")
    if isinstance(user, Principal):
        return user.client
    return "ip:" + (request.client.host if request.client else "unknown")


def _limiter(group: str, per_minute: int) -> RateLimitConfig:
    async def in_group(request: Request[Any, Any, Any]) -> bool:
        # async on purpose: Litestar runs a sync check in a worker thread
        return bool(request.route_handler.opt.get("rate_group", "api") == group)

    return RateLimitConfig(
        rate_limit=("minute", per_minute),
        identifier_for_request=lambda request: f"{group}:{_client(request)}",
        check_throttle_handler=in_group,
        exclude=["^/schema", "^/metrics"],
        store="rate_limit",
    )


def _rate_store(settings: ApiSettings) -> Store:
    if settings.redis_url:
        from litestar.stores.redis import RedisStore  # noqa: PLC0415 - only with Redis

        return RedisStore.with_client(url=settings.redis_url, namespace="valueos-rate")
    return MemoryStore()


def schema_head() -> str | None:
    """The revision ``valueos migrate`` brings the schema to."""
    return ScriptDirectory.from_config(alembic_config("postgresql://unused/x")).get_current_head()


def _check_guards(app: Litestar) -> None:
    """A route without an explicit guard decision is a bug: refuse to start."""
    missing = [
        f"{sorted(handler.http_methods)} {route.path}"
        for route in app.routes
        if not route.path.startswith("/schema")
        for handler in getattr(route, "route_handlers", [])
        if access_of(handler) is None
    ]
    if missing:
        raise RuntimeError(f"routes without a guard decision: {missing}")


def create_app(settings: ApiSettings | None = None) -> ValueOSApp:
    settings = settings or api_settings()
    jwt = jwt_auth(settings.jwt_secret, settings.token_ttl_seconds)
    limits = settings.rate_limits
    limiters = [
        _limiter(group, per_minute).middleware
        for group, per_minute in zip(
            RATE_GROUPS, (limits.api, limits.admin, limits.auth), strict=True
        )
        if per_minute > 0
    ]
    rate_store = _rate_store(settings)
    prometheus = PrometheusConfig(
        app_name="valueos", prefix="valueos", group_path=True, exclude=["^/metrics"]
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        url = await asyncio.to_thread(resolve_url, settings.database)
        ledger = Ledger(create_engine(url, settings.database.pool_size), settings.database)
        services = Services(ledger, settings)
        app.state.services = services
        app.state.authenticator = Authenticator(services.credentials)
        try:
            yield
        finally:
            await services.close()
            await ledger.close()

    openapi = OpenAPIConfig(
        title="Value OS API",
        version="1.0.0",
        description="Double-entry ledger of internal credits (vCredits). Amounts are decimal "
        "strings in the asset's scale. Errors are RFC 9457 problem+json with a stable `code`.",
        path="/schema",
        render_plugins=[SwaggerRenderPlugin(), ScalarRenderPlugin(path="/scalar")],
        components=[
            jwt.openapi_components,
            Components(
                security_schemes={
                    "ApiKey": SecurityScheme(
                        type="apiKey", name=API_KEY_HEADER, security_scheme_in="header"
                    ),
                    "WebhookSignature": SecurityScheme(
                        type="apiKey", name="X-Webhook-Signature", security_scheme_in="header"
                    ),
                }
            ),
        ],
        security=[{"BearerToken": []}, {"ApiKey": []}],
    )
    app = ValueOSApp(
        route_handlers=[*all_routes(), _metrics(settings.metrics_token)],
        dependencies={"ctx": Provide(provide_ctx, sync_to_thread=False)},
        exception_handlers={Exception: handle_exception},
        before_request=screen_request,
        middleware=[prometheus.middleware, jwt.middleware, *limiters],
        stores={"rate_limit": rate_store},
        openapi_config=openapi,
        lifespan=[lifespan],
        state=State(
            {
                "jwt_auth": jwt,
                "schema_head": schema_head(),
                "auth_failures": FailureThrottle(rate_store, limits.auth_failures),
                "webhook_traffic": WindowCounts(rate_store, "webhooks", limits.webhooks),
            }
        ),
        request_max_body_size=1_048_576,
        debug=False,
        logging_config=None,
    )
    app.edge = Edge(partial(Litestar.__call__, app), hsts=settings.hsts)
    _check_guards(app)
    document_problems(app)
    return app
