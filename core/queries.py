"""Read side: balances (now and as of a past point), history, operations."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from core.errors import UnknownAccount, UnknownHold, UnknownOperation, ValidationError
from core.types import Balance, HoldStatus, OperationStatus, OperationType

MAX_PAGE = 500


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    seq: int
    operation_id: int
    operation_type: OperationType
    amount: int
    balance_after: int
    epoch: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class HistoryPage:
    entries: list[HistoryEntry]
    #: pass as ``before_seq`` to get the next (older) page; None at the end
    next_cursor: int | None


@dataclass(frozen=True, slots=True)
class OperationView:
    id: int
    type: OperationType
    status: OperationStatus
    epoch: int | None
    actor_id: str
    reason: str | None
    reverses: int | None
    reversed_by: int | None
    saga_id: Any
    metadata: dict[str, Any]
    created_at: datetime
    #: (seq, account_id, asset, amount, balance_after)
    entries: list[tuple[int, int, str, int, int]]


@dataclass(frozen=True, slots=True)
class HoldView:
    id: int
    status: HoldStatus
    source: int
    destination: int
    asset: str
    amount: int
    remaining: int
    captured: int
    expires_at: datetime
    created_at: datetime
    updated_at: datetime


class Queries:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def balance(self, account_id: int) -> Balance:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    text(
                        "SELECT b.account_id, a.asset, b.posted, b.pending, b.floor "
                        "FROM balances b JOIN accounts a ON a.id = b.account_id "
                        "WHERE b.account_id = :id"
                    ),
                    {"id": account_id},
                )
            ).first()
        if row is None:
            raise UnknownAccount(f"account {account_id} does not exist", account_id=account_id)
        return Balance(row.account_id, row.asset, row.posted, row.pending, row.floor)

    async def balances(self, account_ids: list[int]) -> dict[int, Balance]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT b.account_id, a.asset, b.posted, b.pending, b.floor FROM balances b "
                    "JOIN accounts a ON a.id = b.account_id WHERE b.account_id = ANY(:ids)"
                ),
                {"ids": account_ids},
            )
            return {
                r.account_id: Balance(r.account_id, r.asset, r.posted, r.pending, r.floor)
                for r in rows
            }

    async def balance_at(
        self, account_id: int, *, seq: int | None = None, at: datetime | None = None
    ) -> int:
        """Posted balance as of a global sequence number or a point in time (inclusive)."""
        if (seq is None) == (at is None):
            raise ValidationError("give exactly one of seq or at", field="seq")
        condition = "seq <= :p" if seq is not None else "created_at <= :p"
        async with self.engine.connect() as conn:
            exists = (
                await conn.execute(
                    text("SELECT 1 FROM accounts WHERE id = :id"), {"id": account_id}
                )
            ).first()
            if exists is None:
                raise UnknownAccount(f"account {account_id} does not exist", account_id=account_id)
            value = (
                await conn.execute(
                    text(
                        f"SELECT balance_after FROM ledger_entries WHERE account_id = :id "
                        f"AND {condition} ORDER BY seq DESC LIMIT 1"
                    ),
                    {"id": account_id, "p": seq if seq is not None else at},
                )
            ).scalar()
        return int(value or 0)

    async def history(
        self, account_id: int, *, before_seq: int | None = None, limit: int = 50
    ) -> HistoryPage:
        """Entries of an account, newest first, with ``balance_after`` (keyset pagination)."""
        if not 1 <= limit <= MAX_PAGE:
            raise ValidationError(f"limit must be between 1 and {MAX_PAGE}", field="limit")
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT e.seq, e.operation_id, o.type, e.amount, e.balance_after, e.epoch, "
                        "e.created_at FROM ledger_entries e JOIN operations o "
                        "ON o.id = e.operation_id WHERE e.account_id = :id AND e.seq < :before "
                        "ORDER BY e.seq DESC LIMIT :limit"
                    ),
                    {"id": account_id, "before": before_seq or 2**63 - 1, "limit": limit + 1},
                )
            ).all()
        entries = [
            HistoryEntry(
                r.seq,
                r.operation_id,
                OperationType(r.type),
                r.amount,
                r.balance_after,
                r.epoch,
                r.created_at,
            )
            for r in rows[:limit]
        ]
        return HistoryPage(entries, entries[-1].seq if len(rows) > limit else None)

    async def operation(self, operation_id: int) -> OperationView:
        async with self.engine.connect() as conn:
            op = (
                await conn.execute(
                    text(
                        "SELECT o.*, r.id AS reversed_by FROM operations o "
                        "LEFT JOIN operations r ON r.reverses_id = o.id WHERE o.id = :id"
                    ),
                    {"id": operation_id},
                )
            ).first()
            if op is None:
                raise UnknownOperation(
                    f"operation {operation_id} does not exist", operation_id=operation_id
                )
            entries = (
                await conn.execute(
                    text(
                        "SELECT seq, account_id, asset, amount, balance_after FROM ledger_entries "
                        "WHERE seq BETWEEN :first AND :last AND operation_id = :id ORDER BY seq"
                    ),
                    {"id": operation_id, "first": op.first_seq, "last": op.last_seq},
                )
            ).all()
        return OperationView(
            id=op.id,
            type=OperationType(op.type),
            status=OperationStatus(op.status),
            epoch=op.epoch,
            actor_id=op.actor_id,
            reason=op.reason,
            reverses=op.reverses_id,
            reversed_by=op.reversed_by,
            saga_id=op.saga_id,
            metadata=dict(op.metadata or {}),
            created_at=op.created_at,
            entries=[(e.seq, e.account_id, e.asset, e.amount, e.balance_after) for e in entries],
        )

    async def hold(self, hold_id: int) -> HoldView:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    text(
                        "SELECT id, status, source_id, destination_id, asset, amount, remaining, "
                        "captured, expires_at, created_at, updated_at FROM holds WHERE id = :id"
                    ),
                    {"id": hold_id},
                )
            ).first()
        if row is None:
            raise UnknownHold(f"hold {hold_id} does not exist", hold_id=hold_id)
        return HoldView(
            row.id,
            HoldStatus(row.status),
            row.source_id,
            row.destination_id,
            row.asset,
            row.amount,
            row.remaining,
            row.captured,
            row.expires_at,
            row.created_at,
            row.updated_at,
        )
