"""Pure rules of P2P requests and their errors (no I/O)."""

import uuid

import pytest

from core.errors import (
    ERRORS_BY_CODE,
    AmountOverflow,
    Forbidden,
    InvalidAmount,
    P2PRequestExpired,
    P2PRequestNotFound,
    P2PRequestNotPending,
    ValidationError,
    VaultNotFound,
    error_from_dict,
)
from core.p2p import MAX_MEMO, settlement_key, validate_request

pytestmark = pytest.mark.unit

A, B = uuid.uuid4(), uuid.uuid4()


def test_a_valid_request_passes() -> None:
    validate_request(requester=A, payer=B, amount=1, memo="x" * MAX_MEMO)
    validate_request(requester=A, payer=B, amount=2**63 - 1, memo=None)


@pytest.mark.parametrize(
    ("payer", "amount", "memo", "error", "field"),
    [
        (B, 0, None, InvalidAmount, "amount"),
        (B, -1, None, InvalidAmount, "amount"),
        (B, 2**63, None, AmountOverflow, "amount"),
        (A, 5, None, ValidationError, "payer"),
        (B, 5, "x" * (MAX_MEMO + 1), ValidationError, "memo"),
    ],
)
def test_invalid_requests_name_the_field(
    payer: uuid.UUID, amount: int, memo: str | None, error: type, field: str
) -> None:
    with pytest.raises(error) as caught:
        validate_request(requester=A, payer=payer, amount=amount, memo=memo)
    assert caught.value.details.get("field") == field


def test_settlement_keys_depend_only_on_request_and_attempt() -> None:
    assert settlement_key(7, 0) == settlement_key(7, 0) == "p2p:7:settle:0"
    assert len({settlement_key(7, 0), settlement_key(7, 1), settlement_key(70, 0)}) == 3


def test_new_errors_have_stable_codes_and_statuses() -> None:
    expected = {
        Forbidden: ("FORBIDDEN", 403),
        VaultNotFound: ("VAULT_NOT_FOUND", 404),
        P2PRequestNotFound: ("P2P_REQUEST_NOT_FOUND", 404),
        P2PRequestNotPending: ("P2P_REQUEST_NOT_PENDING", 409),
        P2PRequestExpired: ("P2P_REQUEST_EXPIRED", 409),
    }
    for cls, (code, status) in expected.items():
        assert (cls.code, cls.status) == (code, status)
        # registered, so a remembered failure replays as the same class
        assert ERRORS_BY_CODE[code] is cls
        assert type(error_from_dict({"code": code, "message": "m"})) is cls
    assert issubclass(P2PRequestExpired, P2PRequestNotPending)
