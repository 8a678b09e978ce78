import pytest

from core.sagas import SagaStatus, SagaType, derive_status
from core.types import OperationStatus as S
from core.types import OperationType as T

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("ops", "expected"),
    [
        ([], SagaStatus.INITIATED),
        ([(T.DEPOSIT, S.COMPLETED)], SagaStatus.COMPLIANCE_REVIEW),
        ([(T.DEPOSIT, S.COMPLETED), (T.RELEASE, S.COMPLETED)], SagaStatus.AVAILABLE),
        ([(T.DEPOSIT, S.COMPLETED), (T.RELEASE, S.FAILED)], SagaStatus.FAILED),
    ],
)
def test_deposit_status_rules(ops: list, expected: SagaStatus) -> None:
    assert derive_status(SagaType.DEPOSIT, ops) is expected


def test_investment_and_cancel() -> None:
    assert (
        derive_status(SagaType.INVESTMENT, [(T.LOCK, S.COMPLETED)]) is SagaStatus.COMPLIANCE_REVIEW
    )
    assert derive_status(SagaType.DEPOSIT, [], cancelled=True) is SagaStatus.CANCELLED
