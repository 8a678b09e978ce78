"""OpenAPI post-processing: every operation documents its errors as problem+json (the
one shape ``api.errors`` produces), and public routes need no credential."""

from __future__ import annotations

from litestar import Litestar
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, Parameter, Reference, Schema
from litestar.openapi.spec.enums import OpenAPIType

from api.errors import PROBLEM_JSON

_STR = Schema(type=OpenAPIType.STRING)
PROBLEM_SCHEMA = Schema(
    type=OpenAPIType.OBJECT,
    required=["type", "title", "status", "detail", "code", "trace_id"],
    properties={
        "type": _STR,
        "title": _STR,
        "status": Schema(type=OpenAPIType.INTEGER),
        "detail": _STR,
        "code": Schema(type=OpenAPIType.STRING, description="stable machine code"),
        "trace_id": _STR,
        "instance": _STR,
        "errors": Schema(
            type=OpenAPIType.ARRAY,
            items=Schema(
                type=OpenAPIType.OBJECT,
                required=["field", "message"],
                properties={"field": _STR, "message": _STR},
            ),
        ),
        "details": Schema(
            type=OpenAPIType.OBJECT,
            description="specifics of some codes, e.g. POLICY_DENIED: policy_id, version, "
            "rule, rule_kind; INVALID_POLICY: path, problem; HISTORY_TOO_LONG: limit",
        ),
    },
    description="RFC 9457 problem details",
)
#: POST routes that create something and therefore honour an Idempotency-Key
NOT_CREATING = ("/api/v1/auth/token", "/api/v1/holds/expire", "/revoke", "/dry-run")
IDEMPOTENCY_KEY = Parameter(
    name="Idempotency-Key",
    param_in="header",
    required=False,
    description="same key + same request: the stored response; a different request: 409",
    schema=Schema(type=OpenAPIType.STRING, min_length=1, max_length=200, pattern="^[!-~]+$"),
)
PUBLIC_PATHS = ("/health", "/ready", "/api/v1/webhooks/deposits")


def document_problems(app: Litestar) -> None:
    schema = app.openapi_schema
    if schema.components.schemas is None:
        schema.components.schemas = {}
    schema.components.schemas["Problem"] = PROBLEM_SCHEMA
    problem = OpenAPIResponse(
        description="an error (RFC 9457 problem details with a stable code)",
        content={PROBLEM_JSON: OpenAPIMediaType(schema=Reference("#/components/schemas/Problem"))},
    )
    for path, item in (schema.paths or {}).items():
        for method in ("get", "post", "put", "patch", "delete"):
            operation = getattr(item, method, None)
            if operation is None:
                continue
            responses = operation.responses or {}
            for status in [s for s in responses if s.startswith(("4", "5"))]:
                del responses[status]
            responses["default"] = problem
            operation.responses = responses
            if method == "post" and not path.endswith(NOT_CREATING):
                operation.parameters = [*(operation.parameters or []), IDEMPOTENCY_KEY]
            if path in PUBLIC_PATHS:
                operation.security = [{"WebhookSignature": []}] if "webhooks" in path else []
