"""Transaction sagas: a user-visible flow whose status is derived from its operations."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from core.types import OperationStatus, OperationType


class TransactionType(StrEnum):
    DEPOSIT = "DEPOSIT"
    WITHDRAWAL = "WITHDRAWAL"
    INVESTMENT = "INVESTMENT"


class TransactionStatus(StrEnum):
    INITIATED = "INITIATED"
    COMPLIANCE_REVIEW = "COMPLIANCE_REVIEW"
    AVAILABLE = "AVAILABLE"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


#: per transaction type: the operation that moves it to COMPLIANCE_REVIEW, then AVAILABLE
_MILESTONES: dict[TransactionType, tuple[OperationType, OperationType | None]] = {
    TransactionType.DEPOSIT: (OperationType.DEPOSIT, OperationType.RELEASE),
    TransactionType.INVESTMENT: (OperationType.LOCK, None),
    TransactionType.WITHDRAWAL: (OperationType.BURN, None),
}


def derive_status(
    type_: TransactionType,
    operations: Iterable[tuple[OperationType, OperationStatus]],
    *,
    cancelled: bool = False,
) -> TransactionStatus:
    """The deterministic status rules (reference: Vancelian's transaction status engine).

    FAILED if any operation failed; AVAILABLE once the final milestone completed;
    COMPLIANCE_REVIEW once the first one completed; INITIATED before that.
    """
    ops = list(operations)
    if cancelled:
        return TransactionStatus.CANCELLED
    if any(status is OperationStatus.FAILED for _, status in ops):
        return TransactionStatus.FAILED
    completed = {t for t, status in ops if status is OperationStatus.COMPLETED}
    first, final = _MILESTONES[type_]
    if final is not None and final in completed:
        return TransactionStatus.AVAILABLE
    if first in completed:
        return TransactionStatus.COMPLIANCE_REVIEW
    return TransactionStatus.INITIATED
