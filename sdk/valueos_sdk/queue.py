"""The offline queue: every write is appended to the local store with its idempotency key
*before* it is sent; :meth:`OfflineQueue.sync` sends what is pending, oldest first, with that
same key, and records each answer.

* While the server is unreachable (or answers 5xx/429/in-progress), sync stops at that
  record and keeps it and everything after it queued, in order.
* A business refusal (a 4xx problem) is an answer: the record is FAILED with the problem and
  is not sent again; sync goes on with the next one.
* A crash at any point loses nothing (the record was durable before the first send) and
  duplicates nothing (a re-send carries the record's key: the server answers the stored
  result, never a second effect).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from valueos_sdk.client import AsyncClient, RetryPolicy, new_key
from valueos_sdk.errors import ApiError, IdempotencyInProgress, ServerError, Unreachable
from valueos_sdk.store import DONE, FAILED, Record, Store


@dataclass
class SyncReport:
    sent: list[Record] = field(default_factory=list)
    failed: list[Record] = field(default_factory=list)
    #: still queued (the server was unreachable or busy)
    pending: int = 0


class OfflineQueue:
    def __init__(
        self, client: AsyncClient, store: Store, *, retry: RetryPolicy | None = None
    ) -> None:
        self.client = client
        self.store = store
        #: retries of one sync attempt (short: the queue itself is the long-term retry)
        self.retry = retry or RetryPolicy(attempts=2, base_delay_s=0.05, max_delay_s=0.5)
        self._lock = asyncio.Lock()

    def enqueue(self, method: str, path: str, body: Any, *, key: str | None = None) -> Record:
        """Durably queue a write (nothing is sent)."""
        return self.store.append(key or new_key(), method.upper(), path, body)

    async def submit(self, method: str, path: str, body: Any, *, key: str | None = None) -> Record:
        """Queue a write, then try to send the queue; the record as it stands afterwards."""
        record = self.enqueue(method, path, body, key=key)
        await self.sync()
        return next(r for r in self.store.records() if r.id == record.id)

    async def sync(self) -> SyncReport:
        report = SyncReport()
        async with self._lock:
            queue = self.store.pending()
            for index, record in enumerate(queue):
                try:
                    response = await self.client.request(
                        record.method, record.path, json=record.body,
                        idempotency_key=record.key, retry=self.retry,
                    )  # fmt: skip
                except (Unreachable, ServerError, IdempotencyInProgress):
                    report.pending = len(queue) - index
                    return report
                except ApiError as refused:
                    if refused.status == 429:
                        report.pending = len(queue) - index
                        return report
                    self.store.finish(record.id, FAILED, refused.status, refused.problem)
                    report.failed.append(record)
                    continue
                self.store.finish(record.id, DONE, None, response)
                report.sent.append(record)
        return report

    def pending(self) -> list[Record]:
        return self.store.pending()
