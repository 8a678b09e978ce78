"""The ONE place errors become HTTP: RFC 9457 problem+json with a stable ``code``, a
message, the trace id and, for validation failures, the fields at fault.

Domain errors carry their own ``code`` and ``status`` (``core.errors``); framework
errors (validation, 401/403/404/405/429) get codes here. Anything else is a 500 with
no detail, logged with its traceback under the same trace id.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import (
    HTTPException,
    MethodNotAllowedException,
    NotAuthorizedException,
    NotFoundException,
    PermissionDeniedException,
    TooManyRequestsException,
    ValidationException,
)
from prometheus_client import Counter

from api.edge import current_trace_id
from core.errors import LedgerError

log = logging.getLogger("valueos.api")

PROBLEM_JSON = "application/problem+json"
ERRORS = Counter("valueos_api_errors", "Error responses by stable code", ["code", "status"])

_HTTP_CODES: dict[int, str] = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    406: "NOT_ACCEPTABLE",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "VALIDATION_ERROR",
    429: "RATE_LIMITED",
    500: "INTERNAL_ERROR",
    503: "UNAVAILABLE",
}
_TITLES: dict[int, str] = {
    400: "Bad request",
    401: "Authentication required",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    422: "Invalid request",
    429: "Too many requests",
    500: "Internal error",
    503: "Service unavailable",
}
#: the error details a client may see, per code (other details stay server-side: they
#: may name accounts or users the caller should not learn about)
PUBLIC_DETAILS: dict[str, tuple[str, ...]] = {
    "POLICY_DENIED": (
        "policy_id", "asset", "operation_type", "version", "rule", "rule_kind", "claim",
    ),
    "INVALID_POLICY": ("path", "problem"),
    "HISTORY_TOO_LONG": ("limit",),
}  # fmt: skip
_AT_PATH = re.compile(r"at `\$\.?([A-Za-z0-9_.\[\]]*)`")
_MISSING = re.compile(r"missing required field `([^`]+)`")


class FieldError(msgspec.Struct):
    field: str
    message: str


class Problem(msgspec.Struct, omit_defaults=True):
    """RFC 9457 problem details, plus ``code`` (stable) and ``trace_id``."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    trace_id: str
    instance: str | None = None
    errors: list[FieldError] = msgspec.field(default_factory=list)
    #: machine-readable specifics of some codes (``PUBLIC_DETAILS``), e.g. the policy
    #: version and rule of a POLICY_DENIED
    details: dict[str, Any] | None = None


class ApiError(LedgerError):
    """An error raised by the API layer itself with its own code and status."""

    def __init__(self, status: int, code: str, message: str, **details: Any) -> None:
        super().__init__(message, **details)
        self.status = status
        self.code = code


def _field_errors(extra: Any) -> list[FieldError]:
    out: list[FieldError] = []
    for item in extra if isinstance(extra, list) else []:
        if not isinstance(item, dict):
            continue
        message = str(item.get("message", "invalid value"))
        key = str(item.get("key") or "")
        if key in {"", "data"}:
            at = _AT_PATH.search(message)
            missing = _MISSING.search(message)
            parts = [at[1] if at else "", missing[1] if missing else ""]
            key = ".".join(p for p in parts if p) or "body"
        out.append(FieldError(key, message))
    return out


def problem(
    request: Request[Any, Any, Any],
    status: int,
    code: str,
    detail: str,
    *,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
    details: dict[str, Any] | None = None,
) -> Response[Problem]:
    ERRORS.labels(code, str(status)).inc()
    body = Problem(
        type=f"https://valueos.dev/problems/{code.lower().replace('_', '-')}",
        title=_TITLES.get(status, "Error"),
        status=status,
        detail=detail,
        code=code,
        trace_id=current_trace_id(request.scope),
        instance=request.scope.get("path"),
        errors=errors or [],
        details=details or None,
    )
    return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def handle_exception(request: Request[Any, Any, Any], exc: Exception) -> Response[Problem]:
    if isinstance(exc, LedgerError):
        field = exc.details.get("field")
        errors = [FieldError(str(field), exc.message)] if field and exc.status == 422 else None
        shown = PUBLIC_DETAILS.get(exc.code, ())
        details = {k: exc.details[k] for k in shown if k in exc.details}
        return problem(request, exc.status, exc.code, exc.message, errors=errors, details=details)
    if isinstance(exc, ValidationException):
        errors = _field_errors(exc.extra)
        if not errors:  # e.g. a body that is not JSON at all
            return problem(request, 400, "BAD_REQUEST", exc.detail or "malformed request")
        detail = "; ".join(f"{e.field}: {e.message}" for e in errors)
        return problem(request, 422, "VALIDATION_ERROR", detail, errors=errors)
    if isinstance(exc, TooManyRequestsException):
        headers = dict(exc.headers or {})
        if "RateLimit-Reset" in headers:
            headers["Retry-After"] = headers["RateLimit-Reset"]
        return problem(request, 429, "RATE_LIMITED", "rate limit exceeded", headers=headers)
    if isinstance(exc, NotAuthorizedException):
        return problem(
            request,
            401,
            "UNAUTHENTICATED",
            "a valid bearer token or API key is required",
            headers={"WWW-Authenticate": 'Bearer realm="valueos"'},
        )
    if isinstance(exc, PermissionDeniedException):
        return problem(request, 403, "FORBIDDEN", exc.detail or "not allowed for this role")
    if isinstance(exc, NotFoundException):
        return problem(request, 404, "NOT_FOUND", "no such resource")
    if isinstance(exc, MethodNotAllowedException):
        return problem(
            request, 405, "METHOD_NOT_ALLOWED", "method not allowed", headers=exc.headers
        )
    if isinstance(exc, HTTPException) and exc.status_code < 500:
        code = _HTTP_CODES.get(exc.status_code, "CLIENT_ERROR")
        return problem(request, exc.status_code, code, exc.detail or code.lower())
    log.error("unhandled error", exc_info=exc)
    return problem(request, 500, "INTERNAL_ERROR", "internal error; quote the trace id")
