"""The outermost layer of every HTTP request, routed or not (404s and 405s included):
trace id (accepted from ``X-Request-ID`` or W3C ``traceparent``, else generated; echoed
as ``X-Request-ID``), security headers, and one structured access-log line."""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from api.logs import trace_id_var

log = logging.getLogger("valueos.access")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), payment=()"),
    (b"cross-origin-opener-policy", b"same-origin"),
)
HSTS = (b"strict-transport-security", b"max-age=63072000; includeSubDomains")
#: answers under /api/ are per caller (balances, keys): no shared or private cache keeps them
NO_STORE = (b"cache-control", b"no-store")


def trace_id_from(headers: list[tuple[bytes, bytes]]) -> str:
    request_id = traceparent = None
    for name, value in headers:
        if name == b"x-request-id":
            request_id = value.decode("latin-1")
        elif name == b"traceparent":
            traceparent = value.decode("latin-1")
    if request_id and _REQUEST_ID.match(request_id):
        return request_id
    if traceparent and (m := _TRACEPARENT.match(traceparent)) and set(m[1]) != {"0"}:
        return m[1]
    return uuid.uuid4().hex


def current_trace_id(scope: Scope | None = None) -> str:
    trace = trace_id_var.get()
    if trace is None and scope is not None:
        trace = scope.get("state", {}).get("trace_id")
    return trace or "-"


class Edge:
    """Pure ASGI wrapper (cheaper than a per-route middleware, and it sees 404s)."""

    def __init__(self, app: ASGIApp, *, hsts: bool) -> None:
        self.app = app
        self.extra = (*SECURITY_HEADERS, HSTS) if hsts else SECURITY_HEADERS

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        trace = trace_id_from(list(scope["headers"]))
        scope.setdefault("state", {})["trace_id"] = trace
        token = trace_id_var.set(trace)
        started = time.perf_counter()
        status = 500
        extra = (*self.extra, (b"x-request-id", trace.encode()))
        if scope["path"].startswith("/api/"):
            extra = (*extra, NO_STORE)

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.extend(extra)
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            user: Any = scope.get("user")
            client = scope.get("client")
            log.info(
                "request",
                extra={
                    "method": scope.get("method"),
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                    "client_ip": client[0] if client else None,
                    "principal": getattr(user, "client", None),
                },
            )
            trace_id_var.reset(token)
