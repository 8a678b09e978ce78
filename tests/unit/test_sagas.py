import pytest

from core.sagas import TransactionStatus, TransactionType, derive_status
from core.types import OperationStatus as S
from core.types import OperationType as T

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("ops", "expected"),
    [
        ([], TransactionStatus.INITIATED),
        ([(T.DEPOSIT, S.COMPLETED)], TransactionStatus.COMPLIANCE_REVIEW),
        ([(T.DEPOSIT, S.COMPLETED), (T.RELEASE, S.COMPLETED)], TransactionStatus.AVAILABLE),
        ([(T.DEPOSIT, S.COMPLETED), (T.RELEASE, S.FAILED)], TransactionStatus.FAILED),
    ],
)
def test_deposit_status_rules(ops: list, expected: TransactionStatus) -> None:
    assert derive_status(TransactionType.DEPOSIT, ops) is expected


def test_investment_and_cancel() -> None:
    assert (
        derive_status(TransactionType.INVESTMENT, [(T.LOCK, S.COMPLETED)])
        is TransactionStatus.COMPLIANCE_REVIEW
    )
    assert derive_status(TransactionType.DEPOSIT, [], cancelled=True) is TransactionStatus.CANCELLED
