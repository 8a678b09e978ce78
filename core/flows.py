"""The reference flows as service functions: deposit into BLOCKED, compliance release,
lock for investment — each an operation inside a transaction saga whose status is
derived from its operations (see ``core.sagas``)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text

from core import audit
from core.errors import UnknownOperation, ValidationError
from core.ledger import Ledger
from core.sagas import TransactionStatus, TransactionType
from core.types import (
    AccountKind,
    Actor,
    OperationResult,
    OperationType,
    PostOperation,
    SystemAccount,
    transfer_legs,
)


@dataclass(frozen=True, slots=True)
class Transaction:
    id: uuid.UUID
    owner_id: uuid.UUID | None
    type: TransactionType
    status: TransactionStatus
    external_reference: str | None
    metadata: dict[str, Any]
    created_at: datetime
    #: (operation id, type, status)
    operations: list[tuple[int, str, str]]


async def start_transaction(
    ledger: Ledger,
    *,
    type_: TransactionType,
    owner_id: uuid.UUID,
    actor: Actor,
    external_reference: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> uuid.UUID:
    """Create a saga (INITIATED), or return the one with the same external reference."""
    async with ledger.engine.begin() as conn:
        row = await conn.execute(
            text(
                "INSERT INTO transactions (id, owner_id, type, status, external_reference, "
                "metadata) VALUES (:id, :owner, :type, 'INITIATED', :ref, CAST(:meta AS jsonb)) "
                "ON CONFLICT (type, external_reference) WHERE external_reference IS NOT NULL "
                "DO NOTHING RETURNING id"
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
            text("SELECT id FROM transactions WHERE type = :t AND external_reference = :r"),
            {"t": type_.value, "r": external_reference},
        )
        return uuid.UUID(str(existing.scalar_one()))


async def get_transaction(ledger: Ledger, transaction_id: uuid.UUID) -> Transaction:
    async with ledger.engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT * FROM transactions WHERE id = :id"), {"id": transaction_id}
            )
        ).first()
        if row is None:
            raise UnknownOperation(f"transaction {transaction_id} does not exist")
        ops = await conn.execute(
            text("SELECT id, type, status FROM operations WHERE transaction_id = :id ORDER BY id"),
            {"id": transaction_id},
        )
        return Transaction(
            row.id,
            row.owner_id,
            TransactionType(row.type),
            TransactionStatus(row.status),
            row.external_reference,
            dict(row.metadata),
            row.created_at,
            [(o.id, o.type, o.status) for o in ops],
        )


async def record_deposit_blocked(
    ledger: Ledger,
    *,
    owner_id: uuid.UUID,
    asset: str,
    amount: int,
    external_reference: str,
    actor: Actor,
) -> tuple[uuid.UUID, OperationResult]:
    """A deposit received from a provider lands in BLOCKED (OMNIBUS → BLOCKED).

    Idempotent on the provider's reference: the same deposit reported twice is credited
    once (the second call returns the first result)."""
    if not external_reference.strip():
        raise ValidationError("a deposit needs the provider's reference", field="reference")
    wallet = await ledger.accounts.ensure_wallet(owner_id, asset, actor=actor)
    omnibus = await ledger.accounts.system_account(asset, SystemAccount.OMNIBUS, actor=actor)
    tx = await start_transaction(
        ledger,
        type_=TransactionType.DEPOSIT,
        owner_id=owner_id,
        actor=actor,
        external_reference=external_reference,
    )
    result = await ledger.post(
        PostOperation(
            OperationType.DEPOSIT,
            transfer_legs(omnibus, wallet[AccountKind.BLOCKED], asset, amount),
            actor=actor,
            idempotency_key=f"deposit:{asset}:{external_reference}",
            metadata={"reference": external_reference},
            transaction_id=tx,
        )
    )
    return tx, result


async def release_compliance_funds(
    ledger: Ledger,
    *,
    transaction_id: uuid.UUID,
    amount: int | None = None,
    reason: str,
    actor: Actor,
) -> OperationResult:
    """Compliance moves a deposit's funds BLOCKED → AVAILABLE (reason required)."""
    tx = await get_transaction(ledger, transaction_id)
    deposit = next(
        (o for o in tx.operations if o[1] == OperationType.DEPOSIT.value and o[2] == "COMPLETED"),
        None,
    )
    if tx.type is not TransactionType.DEPOSIT or deposit is None or tx.owner_id is None:
        raise ValidationError("only a recorded deposit can be released", field="transaction_id")
    view = await ledger.queries.operation(deposit[0])
    _, blocked, asset, deposited, _ = view.entries[1]
    wallet = await ledger.accounts.ensure_wallet(tx.owner_id, asset, actor=actor)
    return await ledger.post(
        PostOperation(
            OperationType.RELEASE,
            transfer_legs(blocked, wallet[AccountKind.AVAILABLE], asset, amount or deposited),
            actor=actor,
            reason=reason,
            idempotency_key=f"release:{transaction_id}",
            transaction_id=transaction_id,
        )
    )


async def lock_funds_for_investment(
    ledger: Ledger,
    *,
    owner_id: uuid.UUID,
    asset: str,
    amount: int,
    actor: Actor,
    external_reference: str | None = None,
) -> tuple[uuid.UUID, OperationResult]:
    """AVAILABLE → LOCKED for an investment, in an INVESTMENT saga."""
    wallet = await ledger.accounts.ensure_wallet(owner_id, asset, actor=actor)
    tx = await start_transaction(
        ledger,
        type_=TransactionType.INVESTMENT,
        owner_id=owner_id,
        actor=actor,
        external_reference=external_reference,
    )
    result = await ledger.post(
        PostOperation(
            OperationType.LOCK,
            transfer_legs(wallet[AccountKind.AVAILABLE], wallet[AccountKind.LOCKED], asset, amount),
            actor=actor,
            idempotency_key=f"lock:{tx}",
            transaction_id=tx,
        )
    )
    return tx, result
