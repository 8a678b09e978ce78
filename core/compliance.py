"""Compliance registry: attestations about users (claims such as ``kyc.level = 2``).

Only COMPLIANCE and ADMIN actors issue or revoke; every change is audited with a reason.
A user's current claims are the attestations that are issued, unexpired and unrevoked;
for one claim the latest issued wins. The write path reads them per batch at the batch's
own clock (``core.policy.store``), never from a cache: an expiry or a revocation counts
for the very next operation.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from core import audit
from core.errors import (
    AlreadyRevoked,
    Forbidden,
    NotFound,
    ReasonRequired,
    UnknownAttestation,
    ValidationError,
)
from core.money import check_int64
from core.policy.rules import ClaimValue
from core.storage_errors import translate
from core.types import Actor, Role

if TYPE_CHECKING:
    from core.ledger import Ledger

#: roles that may issue and revoke attestations
COMPLIANCE_ROLES = frozenset({Role.COMPLIANCE, Role.ADMIN})
_CLAIM = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")
_EVIDENCE = re.compile(r"^[0-9a-f]{16,128}$")


@dataclass(frozen=True, slots=True)
class Attestation:
    id: int
    subject_id: UUID
    claim: str
    value: ClaimValue
    issuer: str
    evidence_hash: str
    issued_at: datetime
    expires_at: datetime | None
    issued_by: str
    revoked_at: datetime | None
    revoked_by: str | None
    revoke_reason: str | None

    def current(self, now: datetime) -> bool:
        """Counts at ``now``: issued, not revoked, not expired (expiry itself excluded)."""
        return (
            self.revoked_at is None
            and self.issued_at <= now
            and (self.expires_at is None or now < self.expires_at)
        )


_SELECT = (
    "SELECT id, subject_id, claim, value::text AS value, issuer, evidence_hash, issued_at, "
    "expires_at, issued_by, revoked_at, revoked_by, revoke_reason FROM attestations "
)


def _attestation(r: Any) -> Attestation:
    return Attestation(
        r.id, r.subject_id, r.claim, json.loads(r.value), r.issuer, r.evidence_hash,
        r.issued_at, r.expires_at, r.issued_by, r.revoked_at, r.revoked_by, r.revoke_reason,
    )  # fmt: skip


def _guard(actor: Actor, reason: str, what: str) -> None:
    if actor.role not in COMPLIANCE_ROLES:
        raise Forbidden(f"role {actor.role.value} may not {what}", role=actor.role.value)
    if not reason.strip():
        raise ReasonRequired(f"to {what} needs a reason", field="reason")


def _check_value(value: object) -> ClaimValue:
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        check_int64(value, "value")
        return value
    raise ValidationError("a claim value is a boolean, an integer or a string", field="value")


def _as_json(a: Attestation) -> dict[str, Any]:
    return {
        "subject_id": str(a.subject_id),
        "claim": a.claim,
        "value": a.value,
        "issuer": a.issuer,
        "evidence_hash": a.evidence_hash,
        "issued_at": a.issued_at.isoformat(),
        "expires_at": a.expires_at.isoformat() if a.expires_at else None,
    }


async def issue_attestation(
    ledger: Ledger,
    *,
    actor: Actor,
    subject_id: UUID,
    claim: str,
    value: ClaimValue,
    evidence_hash: str,
    reason: str,
    issuer: str | None = None,
    expires_at: datetime | None = None,
    issued_at: datetime | None = None,
) -> Attestation:
    """Record that ``subject_id`` holds ``claim = value``. ``issuer`` (default: the actor)
    is who vouches for it; ``evidence_hash`` is the lowercase hex digest of the evidence;
    ``issued_at`` defaults to now and may be earlier (the check happened before)."""
    _guard(actor, reason, "issue an attestation")
    if len(claim) > 64 or not _CLAIM.match(claim):
        raise ValidationError(
            "claim must be dot-separated lowercase names, e.g. kyc.level", field="claim"
        )
    value = _check_value(value)
    if not _EVIDENCE.match(evidence_hash):
        raise ValidationError("evidence_hash must be 16-128 lowercase hex", field="evidence_hash")
    async with ledger.engine.begin() as conn:
        now: datetime = (await conn.execute(text("SELECT clock_timestamp()"))).scalar_one()
        issued = issued_at or now
        if issued > now:
            raise ValidationError("issued_at must not be in the future", field="issued_at")
        if expires_at is not None and expires_at <= issued:
            raise ValidationError("expires_at must be after issued_at", field="expires_at")
        try:
            row = (
                await conn.execute(
                    text(
                        "INSERT INTO attestations (subject_id, claim, value, issuer, "
                        "evidence_hash, issued_at, expires_at, issued_by) VALUES (:s, :c, "
                        "CAST(:v AS jsonb), :i, :e, :at, :exp, :by) RETURNING id"
                    ),
                    {
                        "s": subject_id,
                        "c": claim,
                        "v": json.dumps(value),
                        "i": issuer or actor.id,
                        "e": evidence_hash,
                        "at": issued,
                        "exp": expires_at,
                        "by": actor.id,
                    },
                )
            ).one()
        except DBAPIError as exc:
            if "attestations_subject_id_fkey" in str(exc):
                raise NotFound(f"user {subject_id} does not exist", user=str(subject_id)) from None
            raise translate(exc) from exc
        attestation = _attestation(
            (await conn.execute(text(_SELECT + "WHERE id = :id"), {"id": row.id})).one()
        )
        await audit.record(
            conn, actor, "attestation.issued", "attestation", attestation.id,
            after=_as_json(attestation), reason=reason,
        )  # fmt: skip
    return attestation


async def revoke_attestation(
    ledger: Ledger, attestation_id: int, *, actor: Actor, reason: str
) -> Attestation:
    """Revoke at once: the next operation planned no longer counts it."""
    _guard(actor, reason, "revoke an attestation")
    async with ledger.engine.begin() as conn:
        row = (
            await conn.execute(text(_SELECT + "WHERE id = :id FOR UPDATE"), {"id": attestation_id})
        ).first()
        if row is None:
            raise UnknownAttestation(
                f"attestation {attestation_id} does not exist", attestation_id=attestation_id
            )
        if row.revoked_at is not None:
            raise AlreadyRevoked(
                f"attestation {attestation_id} is already revoked", attestation_id=attestation_id
            )
        await conn.execute(
            text(
                "UPDATE attestations SET revoked_at = clock_timestamp(), revoked_by = :by, "
                "revoke_reason = :r WHERE id = :id"
            ),
            {"by": actor.id, "r": reason, "id": attestation_id},
        )
        await audit.record(
            conn, actor, "attestation.revoked", "attestation", attestation_id,
            before={"revoked": False}, after={"revoked": True}, reason=reason,
        )  # fmt: skip
        updated = (
            await conn.execute(text(_SELECT + "WHERE id = :id"), {"id": attestation_id})
        ).one()
    return _attestation(updated)


async def list_attestations(
    ledger: Ledger, subject_id: UUID, *, current_only: bool = False
) -> list[Attestation]:
    """A user's attestations, newest first (``current_only``: those that count now)."""
    async with ledger.engine.connect() as conn:
        rows = await conn.execute(
            text(
                _SELECT + "WHERE subject_id = :s AND (NOT :cur OR (revoked_at IS NULL "
                "AND issued_at <= clock_timestamp() AND (expires_at IS NULL "
                "OR expires_at > clock_timestamp()))) ORDER BY issued_at DESC, id DESC"
            ),
            {"s": subject_id, "cur": current_only},
        )
        return [_attestation(r) for r in rows]


async def current_claims(ledger: Ledger, subject_id: UUID) -> dict[str, ClaimValue]:
    """The claims that count now: per claim, the latest issued current attestation."""
    claims: dict[str, ClaimValue] = {}
    for a in await list_attestations(ledger, subject_id, current_only=True):
        claims.setdefault(a.claim, a.value)
    return claims
