"""Sagas: a user-visible flow whose status is derived from its operations.

Over HTTP a saga is a "transaction" (``/api/v1/transactions``); inside the service
"transaction" means a database transaction only.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from core.types import OperationStatus, OperationType


class SagaType(StrEnum):
    DEPOSIT = "DEPOSIT"
    WITHDRAWAL = "WITHDRAWAL"
    INVESTMENT = "INVESTMENT"


class SagaStatus(StrEnum):
    INITIATED = "INITIATED"
    COMPLIANCE_REVIEW = "COMPLIANCE_REVIEW"
    AVAILABLE = "AVAILABLE"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


#: per saga type: the operation that moves it to COMPLIANCE_REVIEW, then AVAILABLE
_MILESTONES: dict[SagaType, tuple[OperationType, OperationType | None]] = {
    SagaType.DEPOSIT: (OperationType.DEPOSIT, OperationType.RELEASE),
    SagaType.INVESTMENT: (OperationType.LOCK, None),
    SagaType.WITHDRAWAL: (OperationType.BURN, None),
}


def derive_status(
    type_: SagaType,
    operations: Iterable[tuple[OperationType, OperationStatus]],
    *,
    cancelled: bool = False,
) -> SagaStatus:
    """The deterministic status rules (reference: Vancelian's transaction status engine).

    FAILED if any operation failed; AVAILABLE once the final milestone completed;
    COMPLIANCE_REVIEW once the first one completed; INITIATED before that.
    """
    ops = list(operations)
    if cancelled:
        return SagaStatus.CANCELLED
    if any(status is OperationStatus.FAILED for _, status in ops):
        return SagaStatus.FAILED
    completed = {t for t, status in ops if status is OperationStatus.COMPLETED}
    first, final = _MILESTONES[type_]
    if final is not None and final in completed:
        return SagaStatus.AVAILABLE
    if first in completed:
        return SagaStatus.COMPLIANCE_REVIEW
    return SagaStatus.INITIATED
