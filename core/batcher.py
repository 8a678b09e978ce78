"""Application-level group commit.

Concurrent callers hand their commands to one ``Batcher``; it gathers whatever arrives
within ``linger`` (a millisecond or two) up to ``batch_max`` commands and commits them
in ONE database transaction through ``LedgerStore.execute``. Each caller awaits its
own result. Under load the next batch fills while the current one commits, so the
hot issuance account is locked once per batch rather than once per posting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from core.errors import LedgerError, StorageError
from core.repository import LedgerStore
from core.types import Command, Result

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Pending:
    commands: Sequence[Command]
    linked: bool
    future: asyncio.Future[list[Result | LedgerError]]


class Batcher:
    def __init__(
        self,
        store: LedgerStore,
        *,
        linger_ms: float = 1.5,
        batch_max: int = 2000,
        workers: int = 2,
    ) -> None:
        self.store = store
        self.linger = linger_ms / 1000
        self.batch_max = batch_max
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._workers = workers
        self._group_ids = 0
        #: batches committed and commands carried, for metrics and benchmarks
        self.batches = 0
        self.commands = 0

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [asyncio.create_task(self._run()) for _ in range(self._workers)]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def submit(self, command: Command) -> Result | LedgerError:
        """Queue one command; resolve to its result or its ``LedgerError`` (not raised)."""
        return (await self._enqueue([command], linked=False))[0]

    async def submit_linked(self, commands: Sequence[Command]) -> list[Result | LedgerError]:
        """Queue an all-or-nothing group; every member succeeds or every member fails."""
        return await self._enqueue(commands, linked=True)

    async def _enqueue(
        self, commands: Sequence[Command], *, linked: bool
    ) -> list[Result | LedgerError]:
        self.start()
        future: asyncio.Future[list[Result | LedgerError]] = (
            asyncio.get_running_loop().create_future()
        )
        self._queue.put_nowait(_Pending(commands, linked, future))
        # shield: a cancelled caller must not cancel a batch other callers share
        return await asyncio.shield(future)

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            batch = [first]
            size = len(first.commands)
            if self.linger > 0 and size < self.batch_max:
                # the coalescing window: let concurrent callers join this commit
                await asyncio.sleep(self.linger)
            while size < self.batch_max and not self._queue.empty():
                item = self._queue.get_nowait()
                batch.append(item)
                size += len(item.commands)
            await self._commit(batch)

    async def _commit(self, batch: list[_Pending]) -> None:
        commands: list[Command] = []
        groups: list[int | None] = []
        for pending in batch:
            group = None
            if pending.linked:
                self._group_ids += 1
                group = self._group_ids
            commands.extend(pending.commands)
            groups.extend([group] * len(pending.commands))
        try:
            results = await self.store.execute(commands, groups)
        except Exception:  # a bug must not strand the callers
            log.exception("batch of %d commands failed", len(commands))
            results = [StorageError("the batch failed; nothing was written")] * len(commands)
        self.batches += 1
        self.commands += len(commands)
        offset = 0
        for pending in batch:
            n = len(pending.commands)
            if not pending.future.done():
                pending.future.set_result(results[offset : offset + n])
            offset += n
