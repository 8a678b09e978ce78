"""Fiat repayments of credit lines through a payment provider.

``initiate`` records the repayment (INITIATED) and names it to the provider by its id (the
``provider_ref``); the provider reports the outcome on a signed webhook, which lands in
:meth:`Repayments.settle`:

* the event id is recorded once (``provider_events``): a replayed event changes nothing;
* under the line's row lock (serialized with the risk loop's actions and withdrawals), a
  success posts one REPAYMENT: OMNIBUS -> credit account for what is owed (posted debt),
  OMNIBUS -> the user's AVAILABLE for any overpayment; a failure only marks the row;
* the posting's key is ``repayment:<id>``, so a retried webhook never pays twice.

:func:`reconcile` compares the provider's payout report with the ledger and returns every
mismatch (missing on either side, amount or status differing).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import text

from core import audit
from core.errors import IdempotencyConflict, StorageError, UnknownRepayment, ValidationError
from core.ledger import Ledger
from core.risk.lines import Line, locked_line, read_state
from core.types import (
    Actor,
    EntrySpec,
    OperationType,
    PostOperation,
    Side,
    SystemAccount,
)


class RepaymentMethod(StrEnum):
    CARD = "CARD"
    BANK_TRANSFER = "BANK_TRANSFER"
    SEPA = "SEPA"


class RepaymentStatus(StrEnum):
    INITIATED = "INITIATED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


@dataclass(frozen=True, slots=True)
class Repayment:
    id: uuid.UUID
    line_id: int
    amount: int
    method: RepaymentMethod
    status: RepaymentStatus
    provider_ref: str | None
    operation_id: int | None
    repaid: int | None
    overpaid: int | None
    created_at: datetime
    updated_at: datetime


def _repayment(r: Any) -> Repayment:
    return Repayment(
        r.id, r.line_id, r.amount, RepaymentMethod(r.method), RepaymentStatus(r.status),
        r.provider_ref, r.operation_id, r.repaid, r.overpaid, r.created_at, r.updated_at,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class ProviderPayout:
    """One line of the provider's report: what it collected for a reference."""

    provider_ref: str
    amount: int
    status: RepaymentStatus


@dataclass(frozen=True, slots=True)
class Mismatch:
    provider_ref: str
    kind: str  # MISSING_IN_LEDGER | MISSING_AT_PROVIDER | AMOUNT | STATUS
    ledger: str | None
    provider: str | None


class Repayments:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.engine = ledger.engine

    async def initiate(self, line_id: int, amount: int, method: str, actor: Actor) -> Repayment:
        if amount <= 0:
            raise ValidationError("amount must be positive", field="amount")
        try:
            kind = RepaymentMethod(method.upper())
        except ValueError:
            raise ValidationError(
                f"method must be one of {', '.join(RepaymentMethod)}", field="method"
            ) from None
        repayment_id = uuid.uuid4()
        async with self.engine.begin() as conn:
            await read_state(conn, line_id)  # the line exists
            row = (
                await conn.execute(
                    text(
                        "INSERT INTO repayments (id, line_id, amount, method, status, "
                        "provider_ref, created_by) VALUES (:id, :l, :a, :m, 'INITIATED', "
                        ":ref, :by) RETURNING *"
                    ),
                    {"id": repayment_id, "l": line_id, "a": amount, "m": kind.value,
                     "ref": str(repayment_id), "by": actor.id},
                )
            ).one()  # fmt: skip
            await audit.record(
                conn, actor, "repayment.initiated", "repayment", repayment_id,
                after={"line": line_id, "amount": amount, "method": kind.value},
            )  # fmt: skip
        return _repayment(row)

    async def get(self, repayment_id: uuid.UUID) -> Repayment:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    text("SELECT * FROM repayments WHERE id = :id"), {"id": repayment_id}
                )
            ).first()
        if row is None:
            raise UnknownRepayment(f"repayment {repayment_id} does not exist")
        return _repayment(row)

    async def settle(
        self,
        repayment_id: uuid.UUID,
        event_id: str,
        *,
        succeeded: bool,
        actor: Actor,
        amount: int | None = None,
    ) -> Repayment:
        """Apply the provider's outcome once (see the module's rules)."""
        current = await self.get(repayment_id)
        async with locked_line(self.engine, current.line_id) as conn:
            fresh = (
                await conn.execute(
                    text(
                        "INSERT INTO provider_events (event_id, kind) VALUES (:e, 'repayment') "
                        "ON CONFLICT DO NOTHING RETURNING event_id"
                    ),
                    {"e": event_id},
                )
            ).first()
            row = (
                await conn.execute(
                    text("SELECT * FROM repayments WHERE id = :id FOR UPDATE"),
                    {"id": repayment_id},
                )
            ).one()
            if fresh is None or row.status != RepaymentStatus.INITIATED.value:
                return _repayment(row)  # a replayed event, or already settled
            paid = row.amount if amount is None else amount
            if paid <= 0:
                raise ValidationError("amount must be positive", field="amount")
            if not succeeded:
                await conn.execute(
                    text(
                        "UPDATE repayments SET status = 'FAILED', updated_at = "
                        "clock_timestamp() WHERE id = :id"
                    ),
                    {"id": repayment_id},
                )
                return await self._after(conn, repayment_id)
            state = await read_state(conn, current.line_id)
            line = state.line
            repaid = min(paid, state.owed)
            overpaid = paid - repaid
            omnibus = await self.ledger.accounts.system_account(
                line.debt_asset, SystemAccount.OMNIBUS, actor=actor
            )
            legs = [EntrySpec(omnibus, line.debt_asset, paid, Side.DEBIT)]
            if repaid:
                legs.append(EntrySpec(line.credit_account_id, line.debt_asset, repaid, Side.CREDIT))
            if overpaid:
                legs.append(
                    EntrySpec(line.available_account_id, line.debt_asset, overpaid, Side.CREDIT)
                )
            key = f"repayment:{repayment_id}"
            try:
                result = await self.ledger.post(
                    PostOperation(
                        OperationType.REPAYMENT, tuple(legs), actor, key,
                        {"credit_line": line.id, "repayment": str(repayment_id),
                         "event": event_id},
                    )
                )  # fmt: skip
                operation_id = result.operation_id
            except IdempotencyConflict:
                # an earlier attempt posted this repayment and died before recording it (the
                # debt moved since, so the split differs): adopt what was posted
                operation_id, repaid, overpaid = await self._posted(conn, key, line)
            await conn.execute(
                text(
                    "UPDATE repayments SET status = 'SUCCEEDED', operation_id = :o, repaid = :r, "
                    "overpaid = :v, amount = :a, updated_at = clock_timestamp() WHERE id = :id"
                ),
                {"o": operation_id, "r": repaid, "v": overpaid, "a": paid,
                 "id": repayment_id},
            )  # fmt: skip
            return await self._after(conn, repayment_id)

    @staticmethod
    async def _posted(conn: Any, key: str, line: Line) -> tuple[int, int, int]:
        """(operation, repaid, overpaid) of the REPAYMENT already posted under ``key``."""
        rows = (
            await conn.execute(
                text(
                    "SELECT o.id, e.account_id, e.amount FROM operations o JOIN ledger_entries "
                    "e ON e.operation_id = o.id WHERE o.idempotency_key = :k "
                    "AND o.status = 'COMPLETED' AND e.amount > 0"
                ),
                {"k": key},
            )
        ).all()
        if not rows:
            raise StorageError(f"{key} conflicts but no completed operation carries it")
        by_account = {r.account_id: int(r.amount) for r in rows}
        return (
            int(rows[0].id),
            by_account.get(line.credit_account_id, 0),
            by_account.get(line.available_account_id, 0),
        )

    @staticmethod
    async def _after(conn: Any, repayment_id: uuid.UUID) -> Repayment:
        row = (
            await conn.execute(
                text("SELECT * FROM repayments WHERE id = :id"), {"id": repayment_id}
            )
        ).one()
        return _repayment(row)

    async def reconcile(self, payouts: list[ProviderPayout]) -> list[Mismatch]:
        """Every difference between the provider's report and the ledger's repayments (the
        ledger side read from the REPAYMENT operations' entries, not the rows alone)."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT r.provider_ref, r.status, coalesce(sum(e.amount) FILTER "
                    "(WHERE e.amount < 0), 0) AS debited FROM repayments r "
                    "LEFT JOIN ledger_entries e ON e.operation_id = r.operation_id "
                    "WHERE r.status <> 'INITIATED' GROUP BY r.provider_ref, r.status"
                )
            )
            ours = {r.provider_ref: (r.status, -int(r.debited)) for r in rows}
        return reconcile_payouts(ours, payouts)


def reconcile_payouts(
    ours: dict[str, tuple[str, int]], payouts: list[ProviderPayout]
) -> list[Mismatch]:
    """Pure comparison: ``ours`` maps a reference to (status, amount in the ledger)."""
    theirs = {p.provider_ref: p for p in payouts}
    out: list[Mismatch] = []
    for ref in sorted(set(ours) | set(theirs)):
        mine, other = ours.get(ref), theirs.get(ref)
        if other is None:
            if mine is not None and mine[0] == RepaymentStatus.SUCCEEDED.value:
                out.append(Mismatch(ref, "MISSING_AT_PROVIDER", str(mine[1]), None))
            continue
        if mine is None:
            if other.status is RepaymentStatus.SUCCEEDED:
                out.append(Mismatch(ref, "MISSING_IN_LEDGER", None, str(other.amount)))
            continue
        if mine[0] != other.status.value:
            out.append(Mismatch(ref, "STATUS", mine[0], other.status.value))
        elif other.status is RepaymentStatus.SUCCEEDED and mine[1] != other.amount:
            out.append(Mismatch(ref, "AMOUNT", str(mine[1]), str(other.amount)))
    return out
