"""The ledger service: the one object the API and the jobs talk to.

Writes go through the group-commit ``Batcher`` (or straight to the store for bulk
batches); reads through ``Queries``; reference data through ``Accounts``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from core.accounts import Accounts
from core.batcher import Batcher
from core.db import create_engine, resolve_url, schema_revision
from core.errors import LedgerError
from core.queries import Queries
from core.reconcile import reconcile
from core.repository import LedgerStore
from core.settings import DatabaseSettings, database_settings
from core.types import (
    SYSTEM_ACTOR,
    Actor,
    CaptureHold,
    Command,
    CreateHold,
    Drift,
    EntrySpec,
    HoldResult,
    OperationResult,
    OperationType,
    PostOperation,
    Result,
    ReverseOperation,
    VoidHold,
    transfer_legs,
)

R = TypeVar("R", OperationResult, HoldResult)


def _expect(result: Result | LedgerError, kind: type[R]) -> R:
    if isinstance(result, LedgerError):
        raise result
    if not isinstance(result, kind):  # pragma: no cover - a replay under a reused key
        raise TypeError(f"expected {kind.__name__}, got {type(result).__name__}")
    return result


class Ledger:
    def __init__(self, engine: AsyncEngine, settings: DatabaseSettings | None = None) -> None:
        settings = settings or database_settings()
        self.engine = engine
        self.store = LedgerStore(engine)
        self.batcher = Batcher(
            self.store, linger_ms=settings.batch_linger_ms, batch_max=settings.batch_max
        )
        self.accounts = Accounts(engine)
        self.queries = Queries(engine)

    @classmethod
    def connect(cls, settings: DatabaseSettings | None = None) -> Ledger:
        settings = settings or database_settings()
        return cls(create_engine(resolve_url(settings), settings.pool_size), settings)

    async def close(self) -> None:
        await self.batcher.close()
        await self.engine.dispose()

    # -- generic writes -------------------------------------------------------------------
    async def submit(self, command: Command) -> Result | LedgerError:
        """Group-committed write; returns the result or the error (does not raise)."""
        return await self.batcher.submit(command)

    async def post(self, command: PostOperation) -> OperationResult:
        return _expect(await self.batcher.submit(command), OperationResult)

    async def post_many(self, commands: Sequence[Command]) -> list[Result | LedgerError]:
        """Independent commands in one database transaction, each with its own result."""
        return await self.store.execute(commands)

    async def post_linked(self, commands: Sequence[Command]) -> list[Result]:
        """All-or-nothing: either every command applies or none does (raises the cause)."""
        results = await self.store.execute(commands, [1] * len(commands))
        failures = [r for r in results if isinstance(r, LedgerError)]
        if failures:
            root = next((f for f in failures if f.code != "LINKED_OPERATION_FAILED"), failures[0])
            raise root
        return [r for r in results if not isinstance(r, LedgerError)]

    async def post_within(self, conn: AsyncConnection, command: PostOperation) -> OperationResult:
        """Post inside the caller's open transaction: the operation commits with the caller's
        other writes or not at all (not group-committed)."""
        return _expect(await self.submit_within(conn, command), OperationResult)

    async def submit_within(self, conn: AsyncConnection, command: Command) -> Result | LedgerError:
        """:meth:`post_within` answering a refusal instead of raising it: a caller that commits
        after a refusal keeps its record (the failed operation under its idempotency key)."""
        return (await self.store.execute_within(conn, [command]))[0]

    # -- conveniences ---------------------------------------------------------------------
    async def transfer(
        self,
        *,
        source: int,
        destination: int,
        asset: str,
        amount: int,
        actor: Actor = SYSTEM_ACTOR,
        idempotency_key: str | None = None,
        type_: OperationType = OperationType.TRANSFER,
        metadata: dict[str, Any] | None = None,
        reason: str | None = None,
    ) -> OperationResult:
        return await self.post(
            PostOperation(
                type_,
                transfer_legs(source, destination, asset, amount),
                actor=actor,
                idempotency_key=idempotency_key,
                metadata=metadata or {},
                reason=reason,
            )
        )

    async def adjust(
        self,
        entries: Sequence[EntrySpec],
        *,
        reason: str,
        actor: Actor,
        idempotency_key: str | None = None,
    ) -> OperationResult:
        return await self.post(
            PostOperation(
                OperationType.ADJUSTMENT,
                tuple(entries),
                actor=actor,
                reason=reason,
                idempotency_key=idempotency_key,
            )
        )

    async def reverse(
        self,
        operation_id: int,
        *,
        reason: str,
        actor: Actor,
        idempotency_key: str | None = None,
    ) -> OperationResult:
        return _expect(
            await self.batcher.submit(
                ReverseOperation(operation_id, reason, actor, idempotency_key)
            ),
            OperationResult,
        )

    # -- holds ----------------------------------------------------------------------------
    async def hold(
        self,
        *,
        source: int,
        destination: int,
        asset: str,
        amount: int,
        ttl: timedelta | None = None,
        expires_at: datetime | None = None,
        actor: Actor = SYSTEM_ACTOR,
        idempotency_key: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> HoldResult:
        if expires_at is None:
            async with self.engine.connect() as conn:
                now: datetime = (await conn.execute(text("SELECT clock_timestamp()"))).scalar_one()
            expires_at = now + (ttl or timedelta(minutes=15))
        return _expect(
            await self.batcher.submit(
                CreateHold(
                    source, destination, asset, amount, expires_at, actor, idempotency_key,
                    metadata or {},
                )
            ),
            HoldResult,
        )  # fmt: skip

    async def capture(
        self,
        hold_id: int,
        amount: int | None = None,
        *,
        actor: Actor = SYSTEM_ACTOR,
        idempotency_key: str | None = None,
    ) -> OperationResult:
        return _expect(
            await self.batcher.submit(CaptureHold(hold_id, amount, actor, idempotency_key)),
            OperationResult,
        )

    async def void(
        self,
        hold_id: int,
        *,
        actor: Actor = SYSTEM_ACTOR,
        reason: str | None = None,
        idempotency_key: str | None = None,
    ) -> HoldResult:
        return _expect(
            await self.batcher.submit(VoidHold(hold_id, actor, reason, idempotency_key)),
            HoldResult,
        )

    async def expire_holds(self, *, limit: int = 1000, actor: Actor = SYSTEM_ACTOR) -> int:
        """Void every pending hold past its deadline (status EXPIRED). Returns how many."""
        async with self.engine.connect() as conn:
            ids = (
                await conn.execute(
                    text(
                        "SELECT id FROM holds WHERE status = 'PENDING' "
                        "AND expires_at <= clock_timestamp() ORDER BY expires_at LIMIT :n"
                    ),
                    {"n": limit},
                )
            ).scalars()
            commands: list[Command] = [
                VoidHold(i, actor, "expired", None, expire=True) for i in ids
            ]
        results = await self.store.execute(commands)
        # a hold captured or voided meanwhile answers HOLD_NOT_PENDING: nothing to do
        return sum(1 for r in results if isinstance(r, HoldResult))

    # -- checks ---------------------------------------------------------------------------
    async def schema_revision(self) -> str | None:
        """The migration the schema is at (:class:`StorageError` when unreachable)."""
        return await schema_revision(self.engine)

    async def reconcile(self) -> list[Drift]:
        return await reconcile(self.engine)
