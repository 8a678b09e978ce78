"""The reference flows as one use case: a provider's deposit into BLOCKED, the compliance
release, the lock for investment — each an operation inside a saga whose status is derived
from its operations (see ``core.sagas``).

Over HTTP a saga is a "transaction" (``/api/v1/transactions``): its audit records and error
messages use that word.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text

from core import audit
from core.directory import Directory
from core.errors import UnknownOperation, ValidationError
from core.sagas import SagaStatus, SagaType
from core.types import (
    AccountKind,
    Actor,
    OperationResult,
    OperationType,
    PostOperation,
    SystemAccount,
    transfer_legs,
)

__all__ = ["Saga", "SagaFlows"]


@dataclass(frozen=True, slots=True)
class Saga:
    id: uuid.UUID
    owner_id: uuid.UUID | None
    type: SagaType
    status: SagaStatus
    external_reference: str | None
    metadata: dict[str, Any]
    created_at: datetime
    #: (operation id, type, status)
    operations: list[tuple[int, str, str]]


class SagaFlows:
    def __init__(self, directory: Directory) -> None:
        self.directory = directory
        self.ledger = directory.ledger

    async def start(
        self,
        *,
        type_: SagaType,
        owner_id: uuid.UUID,
        actor: Actor,
        external_reference: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> uuid.UUID:
        """Create a saga (INITIATED), or return the one with the same external reference."""
        async with self.ledger.engine.begin() as conn:
            row = await conn.execute(
                text(
                    "INSERT INTO sagas (id, owner_id, type, status, external_reference, "
                    "metadata) VALUES (:id, :owner, :type, 'INITIATED', :ref, "
                    "CAST(:meta AS jsonb)) ON CONFLICT (type, external_reference) "
                    "WHERE external_reference IS NOT NULL DO NOTHING RETURNING id"
                ),
                {
                    "id": uuid.uuid4(),
                    "owner": owner_id,
                    "type": type_.value,
                    "ref": external_reference,
                    "meta": json.dumps(metadata or {}),
                },
            )
            created = row.scalar()
            if created is not None:
                await audit.record(
                    conn,
                    actor,
                    "transaction.created",
                    "transaction",
                    created,
                    after={"type": type_.value, "ref": external_reference},
                )
                return uuid.UUID(str(created))
            existing = await conn.execute(
                text("SELECT id FROM sagas WHERE type = :t AND external_reference = :r"),
                {"t": type_.value, "r": external_reference},
            )
            return uuid.UUID(str(existing.scalar_one()))

    async def get(self, saga_id: uuid.UUID, *, viewer: uuid.UUID | None = None) -> Saga:
        """The saga with its operations. ``viewer``: a user who may see only their own (another
        user's saga answers UNKNOWN_OPERATION, as a nonexistent one does)."""
        async with self.ledger.engine.connect() as conn:
            row = (
                await conn.execute(text("SELECT * FROM sagas WHERE id = :id"), {"id": saga_id})
            ).first()
            if row is None or (viewer is not None and row.owner_id != viewer):
                raise UnknownOperation(f"transaction {saga_id} does not exist")
            ops = await conn.execute(
                text("SELECT id, type, status FROM operations WHERE saga_id = :id ORDER BY id"),
                {"id": saga_id},
            )
            return Saga(
                row.id,
                row.owner_id,
                SagaType(row.type),
                SagaStatus(row.status),
                row.external_reference,
                dict(row.metadata),
                row.created_at,
                [(o.id, o.type, o.status) for o in ops],
            )

    async def deposit(
        self, *, owner_id: uuid.UUID, asset: str, amount: str, external_reference: str,
        actor: Actor,
    ) -> tuple[Saga, OperationResult]:  # fmt: skip
        """A deposit received from a provider lands in BLOCKED (OMNIBUS → BLOCKED), for a user
        who exists (a suspended one too: BLOCKED is where their money waits anyway).

        Idempotent on the provider's reference: the same deposit reported twice is credited
        once (the second call returns the first result)."""
        units = await self.directory.parse(amount, asset)
        wallet = await self.directory.recipient(owner_id, asset, actor, suspended_ok=True)
        if not external_reference.strip():
            raise ValidationError("a deposit needs the provider's reference", field="reference")
        omnibus = await self.directory.system(asset, SystemAccount.OMNIBUS, actor)
        saga_id = await self.start(
            type_=SagaType.DEPOSIT,
            owner_id=owner_id,
            actor=actor,
            external_reference=external_reference,
        )
        result = await self.ledger.post(
            PostOperation(
                OperationType.DEPOSIT,
                transfer_legs(omnibus, wallet[AccountKind.BLOCKED], asset, units),
                actor=actor,
                idempotency_key=f"deposit:{asset}:{external_reference}",
                metadata={"reference": external_reference},
                saga_id=saga_id,
            )
        )
        return await self.get(saga_id), result

    async def release(
        self, saga_id: uuid.UUID, *, amount: str | None = None, reason: str, actor: Actor
    ) -> OperationResult:
        """Compliance moves a deposit's funds BLOCKED → AVAILABLE (reason required); all of it,
        or ``amount`` (decimal text in the deposit's asset)."""
        saga = await self.get(saga_id)
        deposit = next(
            (o for o in saga.operations
             if o[1] == OperationType.DEPOSIT.value and o[2] == "COMPLETED"),
            None,
        )  # fmt: skip
        if saga.type is not SagaType.DEPOSIT or deposit is None or saga.owner_id is None:
            raise ValidationError("only a recorded deposit can be released", field="transaction_id")
        view = await self.ledger.queries.operation(deposit[0])
        _, blocked, asset, deposited, _ = view.entries[1]
        units = deposited if amount is None else await self.directory.parse(amount, asset)
        wallet = await self.directory.wallet(saga.owner_id, asset, actor)
        return await self.ledger.post(
            PostOperation(
                OperationType.RELEASE,
                transfer_legs(blocked, wallet[AccountKind.AVAILABLE], asset, units),
                actor=actor,
                reason=reason,
                idempotency_key=f"release:{saga_id}",
                saga_id=saga_id,
            )
        )

    async def lock_for_investment(
        self,
        *,
        owner_id: uuid.UUID,
        asset: str,
        amount: int,
        actor: Actor,
        external_reference: str | None = None,
    ) -> tuple[uuid.UUID, OperationResult]:
        """AVAILABLE → LOCKED for an investment, in an INVESTMENT saga."""
        wallet = await self.directory.wallet(owner_id, asset, actor)
        saga_id = await self.start(
            type_=SagaType.INVESTMENT,
            owner_id=owner_id,
            actor=actor,
            external_reference=external_reference,
        )
        result = await self.ledger.post(
            PostOperation(
                OperationType.LOCK,
                transfer_legs(
                    wallet[AccountKind.AVAILABLE], wallet[AccountKind.LOCKED], asset, amount
                ),
                actor=actor,
                idempotency_key=f"lock:{saga_id}",
                saga_id=saga_id,
            )
        )
        return saga_id, result
