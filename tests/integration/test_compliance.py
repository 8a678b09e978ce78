"""Compliance registry against the real PostgreSQL, and its effect on the write path."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text

from core.compliance import (
    current_claims,
    issue_attestation,
    list_attestations,
    revoke_attestation,
)
from core.errors import AlreadyRevoked, Forbidden, PolicyDenied, ReasonRequired, ValidationError
from core.policy.versions import activate_policy, create_policy
from core.types import AccountKind, Actor, OperationType, Role
from tests.conftest import ADMIN, World

pytestmark = pytest.mark.integration
OFFICER = Actor("officer-1", Role.COMPLIANCE)
EVIDENCE = "cd" * 32


async def _now(world: World):  # type: ignore[no-untyped-def]
    async with world.ledger.engine.connect() as conn:
        return (await conn.execute(text("SELECT clock_timestamp()"))).scalar_one()


async def test_only_compliance_and_admin_issue_and_revoke(world: World) -> None:
    led = world.ledger
    user = await world.ledger.accounts.create_user(email=None, actor=ADMIN)
    for role in (Role.USER, Role.OPS, Role.AUDITOR, Role.READ_ONLY, Role.SYSTEM):
        with pytest.raises(Forbidden):
            await issue_attestation(
                led, actor=Actor("x", role), subject_id=user, claim="kyc.level", value=2,
                evidence_hash=EVIDENCE, reason="r",
            )  # fmt: skip
    with pytest.raises(ReasonRequired):
        await issue_attestation(
            led, actor=OFFICER, subject_id=user, claim="kyc.level", value=2,
            evidence_hash=EVIDENCE, reason=" ",
        )  # fmt: skip
    att = await issue_attestation(
        led, actor=OFFICER, subject_id=user, claim="kyc.level", value=2,
        evidence_hash=EVIDENCE, reason="passed level 2", issuer="onfido",
    )  # fmt: skip
    assert (att.issuer, att.issued_by, att.value) == ("onfido", OFFICER.id, 2)
    with pytest.raises(Forbidden):
        await revoke_attestation(led, att.id, actor=Actor("u", Role.USER), reason="r")
    revoked = await revoke_attestation(led, att.id, actor=ADMIN, reason="fraud")
    assert revoked.revoked_by == ADMIN.id
    assert revoked.revoke_reason == "fraud"
    with pytest.raises(AlreadyRevoked):
        await revoke_attestation(led, att.id, actor=ADMIN, reason="again")
    async with led.engine.connect() as conn:
        audited = (
            await conn.execute(
                text(
                    "SELECT action, reason FROM audit_log WHERE entity_type = 'attestation' "
                    "AND entity_id = :id ORDER BY id"
                ),
                {"id": str(att.id)},
            )
        ).all()
    assert [tuple(r) for r in audited] == [
        ("attestation.issued", "passed level 2"),
        ("attestation.revoked", "fraud"),
    ]


async def test_claims_are_validated(world: World) -> None:
    led = world.ledger
    user = await world.ledger.accounts.create_user(email=None, actor=ADMIN)
    bad = [
        {"claim": "KYC", "value": 1, "evidence_hash": EVIDENCE},
        {"claim": "kyc.level", "value": 1.5, "evidence_hash": EVIDENCE},
        {"claim": "kyc.level", "value": 1, "evidence_hash": "not-hex"},
    ]
    for args in bad:
        with pytest.raises(ValidationError):
            await issue_attestation(led, actor=OFFICER, subject_id=user, reason="r", **args)  # type: ignore[arg-type]
    now = await _now(world)
    with pytest.raises(ValidationError):
        await issue_attestation(
            led, actor=OFFICER, subject_id=user, claim="age.over18", value=True,
            evidence_hash=EVIDENCE, reason="r", issued_at=now - timedelta(days=1),
            expires_at=now - timedelta(days=2),
        )  # fmt: skip


async def test_current_claims_latest_unexpired_unrevoked(world: World) -> None:
    led = world.ledger
    user = await world.ledger.accounts.create_user(email=None, actor=ADMIN)
    now = await _now(world)

    async def issue(claim: str, value: object, **kw: object) -> int:
        att = await issue_attestation(
            led, actor=OFFICER, subject_id=user, claim=claim, value=value,  # type: ignore[arg-type]
            evidence_hash=EVIDENCE, reason="r", **kw,  # type: ignore[arg-type]
        )  # fmt: skip
        return att.id

    await issue("kyc.level", 2, issued_at=now - timedelta(days=3))
    await issue("kyc.level", 1)  # later: wins
    await issue(
        "age.over18", True, issued_at=now - timedelta(days=400), expires_at=now - timedelta(days=35)
    )
    screened = await issue("sanctions.screened", True, expires_at=now + timedelta(days=30))
    assert await current_claims(led, user) == {"kyc.level": 1, "sanctions.screened": True}
    await revoke_attestation(led, screened, actor=OFFICER, reason="stale screening")
    assert await current_claims(led, user) == {"kyc.level": 1}
    assert len(await list_attestations(led, user)) == 4
    assert len(await list_attestations(led, user, current_only=True)) == 2


async def test_revoked_and_expired_attestations_stop_counting_at_once(world: World) -> None:
    led = world.ledger
    alice = await world.funded(1_000)
    bob = (await world.user_wallet())[AccountKind.AVAILABLE]
    owner = (await led.accounts.get_account(alice)).owner_id
    assert owner is not None
    record = await create_policy(
        led, asset=world.asset, operation_type=OperationType.TRANSFER, actor=OFFICER,
        reason="kyc required",
        document={"rules": [{"id": "kyc", "kind": "claims",
                             "require": [{"claim": "kyc.level", "op": ">=", "value": 2}]}]},
    )  # fmt: skip
    await activate_policy(led, record.id, actor=OFFICER, reason="go live")
    att = await issue_attestation(
        led, actor=OFFICER, subject_id=owner, claim="kyc.level", value=2,
        evidence_hash=EVIDENCE, reason="passed",
    )  # fmt: skip
    await led.transfer(source=alice, destination=bob, asset=world.asset, amount=1)
    await revoke_attestation(led, att.id, actor=OFFICER, reason="document forged")
    with pytest.raises(PolicyDenied) as denied:  # the very next operation
        await led.transfer(source=alice, destination=bob, asset=world.asset, amount=1)
    assert denied.value.details["claim"] == "kyc.level"
    # an attestation whose expiry has passed (issued for a check made earlier) never counts;
    # the batch compares expiry with its own clock, read inside its transaction
    now = await _now(world)
    await issue_attestation(
        led, actor=OFFICER, subject_id=owner, claim="kyc.level", value=3,
        evidence_hash=EVIDENCE, reason="old check", issued_at=now - timedelta(days=2),
        expires_at=now - timedelta(microseconds=1),
    )  # fmt: skip
    with pytest.raises(PolicyDenied):
        await led.transfer(source=alice, destination=bob, asset=world.asset, amount=1)
    await issue_attestation(
        led, actor=OFFICER, subject_id=owner, claim="kyc.level", value=2,
        evidence_hash=EVIDENCE, reason="re-checked", expires_at=now + timedelta(days=365),
    )  # fmt: skip
    await led.transfer(source=alice, destination=bob, asset=world.asset, amount=1)
    assert (await led.queries.balance(bob)).posted == 2
