"""Errors of the SDK: problem+json answers become typed exceptions carrying the server's
stable ``code``; an unreachable server is :class:`Unreachable`; a voucher that fails the
payee's offline check is :class:`VoucherRejected`; a mirror that finds the server's history
inconsistent raises :class:`MirrorMismatch`."""

from __future__ import annotations

from typing import Any


class ValueOSError(Exception):
    """Base of every SDK error."""


class Unreachable(ValueOSError):
    """The server could not be reached (or kept failing) after every retry."""


class ApiError(ValueOSError):
    """An RFC 9457 problem from the server. ``code`` is the stable machine code."""

    def __init__(self, status: int, code: str, detail: str, problem: dict[str, Any]) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.problem = problem
        self.trace_id: str | None = problem.get("trace_id")
        self.details: dict[str, Any] = dict(problem.get("details") or {})


class BadRequest(ApiError):
    pass


class Unauthorized(ApiError):
    pass


class Forbidden(ApiError):
    pass


class NotFound(ApiError):
    pass


class Conflict(ApiError):
    pass


class Invalid(ApiError):
    """422: the request is malformed; ``problem['errors']`` names the fields."""


class RateLimited(ApiError):
    pass


class ServerError(ApiError):
    pass


class InsufficientFunds(Conflict):
    pass


class IdempotencyConflict(Conflict):
    pass


class IdempotencyInProgress(Conflict):
    """The same Idempotency-Key is being processed: retry later (the SDK does)."""


class PolicyDenied(Forbidden):
    pass


class VouchersOutstanding(Conflict):
    pass


class AllowanceNotActive(Conflict):
    pass


class DeviceRevoked(Conflict):
    """The device key was revoked: no new allowance for it."""


class HistoryTooLong(Invalid):
    """422: a history bundle would list more entries than the server's limit
    (``details['limit']``); ask for pieces between sealed epochs."""


BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict,
    422: Invalid, 429: RateLimited,
}  # fmt: skip
BY_CODE: dict[str, type[ApiError]] = {
    "INSUFFICIENT_FUNDS": InsufficientFunds,
    "IDEMPOTENCY_CONFLICT": IdempotencyConflict,
    "IDEMPOTENCY_IN_PROGRESS": IdempotencyInProgress,
    "POLICY_DENIED": PolicyDenied,
    "VOUCHERS_OUTSTANDING": VouchersOutstanding,
    "ALLOWANCE_NOT_ACTIVE": AllowanceNotActive,
    "ALLOWANCE_RELEASED": AllowanceNotActive,
    "ALLOWANCE_EXPIRED": AllowanceNotActive,
    "ALLOWANCE_ABANDONED": AllowanceNotActive,
    "DEVICE_REVOKED": DeviceRevoked,
    "HISTORY_TOO_LONG": HistoryTooLong,
}


def from_problem(status: int, problem: dict[str, Any]) -> ApiError:
    code = str(problem.get("code") or f"HTTP_{status}")
    detail = str(problem.get("detail") or problem.get("title") or "")
    cls = BY_CODE.get(code) or BY_STATUS.get(status) or (ServerError if status >= 500 else ApiError)
    return cls(status, code, detail, problem)


class VoucherRejected(ValueOSError):
    """A payment failed the payee's offline check; ``code`` says which rule."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class MirrorMismatch(ValueOSError):
    """What the server sent contradicts itself or the anchored root."""
