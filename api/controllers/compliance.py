"""Compliance registry: attestations about users (claims such as ``kyc.level = 2``).

COMPLIANCE and ADMIN issue and revoke (with a reason, audited); they and AUDITOR read a
user's attestations and current claims; a USER reads their own current claims (another
user's look nonexistent)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

from litestar import Controller, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, PathParameter

from api.auth import ADMIN, AUDITOR, COMPLIANCE, USER, allow
from api.context import Ctx
from api.idempotency import Attempt
from api.schemas.common import ReasonCreate
from api.schemas.compliance import AttestationCreate, AttestationRead, ClaimsRead
from core import compliance
from core.compliance import Attestation
from core.errors import ValidationError

AttestationId = Annotated[int, PathParameter(ge=1, le=2**63 - 1)]
#: who may issue/revoke (core checks the actor's role too)
WRITERS = frozenset({COMPLIANCE, ADMIN})
READERS = WRITERS | {AUDITOR}


def read(a: Attestation) -> AttestationRead:
    return AttestationRead(
        a.id, a.subject_id, a.claim, a.value, a.issuer, a.evidence_hash, a.issued_at,
        a.expires_at, a.issued_by, a.revoked_at, a.revoked_by, a.revoke_reason,
    )  # fmt: skip


def storable(moment: datetime | None, field: str) -> datetime | None:
    """An aware time PostgreSQL and Python both represent (no overflow converting to UTC)."""
    if moment is None:
        return None
    try:
        return moment.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ValidationError(f"{field} is out of range", field=field) from None


class AttestationController(Controller):
    path = "/api/v1/attestations"
    tags = ["compliance"]

    @post("/", guards=[allow(WRITERS, scope="admin")], opt={"rate_group": "admin"})
    async def issue(
        self, ctx: NamedDependency[Ctx], data: JSONBody[AttestationCreate]
    ) -> Response[AttestationRead]:
        """Record that a user holds a claim (reason required; audited)."""
        expires_at = storable(data.expires_at, "expires_at")
        issued_at = storable(data.issued_at, "issued_at")

        async def run(_: Attempt) -> AttestationRead:
            await ctx.svc.credentials.get_user(data.subject_id)  # 404 UNKNOWN_USER
            return read(
                await compliance.issue_attestation(
                    ctx.svc.ledger,
                    actor=ctx.actor,
                    subject_id=data.subject_id,
                    claim=data.claim,
                    value=data.value,
                    evidence_hash=data.evidence_hash,
                    reason=data.reason,
                    issuer=data.issuer,
                    expires_at=expires_at,
                    issued_at=issued_at,
                )
            )

        return await ctx.once(data, run)

    @post(
        "/{attestation_id:int}/revoke",
        guards=[allow(WRITERS, scope="admin")],
        status_code=200,
        opt={"rate_group": "admin"},
    )
    async def revoke(
        self,
        ctx: NamedDependency[Ctx],
        attestation_id: AttestationId,
        data: JSONBody[ReasonCreate],
    ) -> AttestationRead:
        """Revoke at once (the very next operation no longer counts it). A second
        revocation is 409 ALREADY_REVOKED."""
        return read(
            await compliance.revoke_attestation(
                ctx.svc.ledger, attestation_id, actor=ctx.actor, reason=data.reason
            )
        )


class SubjectController(Controller):
    path = "/api/v1/users/{user_id:uuid}"
    tags = ["compliance"]

    @get("/attestations", guards=[allow(READERS, scope="read")])
    async def attestations(
        self,
        ctx: NamedDependency[Ctx],
        user_id: FromPath[uuid.UUID],
        current_only: FromQuery[bool] = False,
    ) -> list[AttestationRead]:
        """A user's attestations, newest first, revoked and expired ones included unless
        ``current_only``."""
        await ctx.svc.credentials.get_user(user_id)
        found = await compliance.list_attestations(
            ctx.svc.ledger, user_id, current_only=current_only
        )
        return [read(a) for a in found]

    @get("/claims", guards=[allow(READERS | {USER}, scope="read")])
    async def claims(self, ctx: NamedDependency[Ctx], user_id: FromPath[uuid.UUID]) -> ClaimsRead:
        """The claims that count now (a USER: their own only)."""
        ctx.check_user(user_id)
        await ctx.svc.credentials.get_user(user_id)
        return ClaimsRead(user_id, await compliance.current_claims(ctx.svc.ledger, user_id))


ROUTES = [AttestationController, SubjectController]
