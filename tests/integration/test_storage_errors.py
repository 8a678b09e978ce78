"""Driver failures reach callers of core as core errors (``core.storage_errors``), never as
asyncpg or SQLAlchemy exceptions; text the database cannot store is the caller's error (422)."""

from __future__ import annotations

import uuid

import pytest

from core.compliance import issue_attestation
from core.credentials import Credentials
from core.errors import LedgerError
from core.ledger import Ledger
from core.types import Actor, Role

pytestmark = pytest.mark.integration

OFFICER = Actor("storage-errors", Role.COMPLIANCE)


async def test_text_the_database_cannot_store_is_a_validation_error_not_a_driver_error(
    ledger: Ledger,
) -> None:
    creds = Credentials(ledger.engine)
    user = await creds.create_user(email=None, role=Role.USER, actor=OFFICER)
    with pytest.raises(LedgerError) as caught:  # jsonb refuses \\u0000
        await issue_attestation(
            ledger, actor=OFFICER, subject_id=user.id, claim="kyc.note",
            value="a\x00b", evidence_hash="ab" * 32, reason="checked",
        )  # fmt: skip
    assert (caught.value.code, caught.value.status) == ("VALIDATION_ERROR", 422)
    with pytest.raises(LedgerError) as caught:  # text refuses NUL
        await creds.create_user(email=f"{uuid.uuid4().hex}\x00@x.io", role=Role.USER, actor=OFFICER)
    assert (caught.value.code, caught.value.status) == ("VALIDATION_ERROR", 422)
