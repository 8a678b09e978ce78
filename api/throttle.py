"""Counters of failed authentication, kept apart from the per-route rate limits.

A failure (an unknown or wrong API key, a bad bearer token, a webhook whose signature does
not match) counts against the client address and, for a key, against its id; once either
is over ``limit`` failures in the current minute, the next attempt answers 429 without
touching the database. ``ABUSE_FAILURES`` failures of one subject within ``ABUSE_WINDOW``
seconds write one audit record (``auth.failures``). Verified traffic never counts here,
so forged requests cannot use up a genuine caller's budget.

The counters live in the app's rate-limit store (memory; Redis with ``REDIS_URL``, shared
by every API process). A count is read, then written: concurrent failures of one subject
may undercount by a few, which bounds nothing that matters (the limit is a brake, the
audit record a signal).
"""

from __future__ import annotations

import time

from litestar.stores.base import Store

WINDOW = 60
ABUSE_FAILURES = 5
ABUSE_WINDOW = 600


class WindowCounts:
    """Per-subject counts over fixed windows of ``window`` seconds, with a ``limit``."""

    def __init__(self, store: Store, name: str, limit: int, window: int = WINDOW) -> None:
        self.store, self.name, self.limit, self.window = store, name, limit, window

    def _key(self, subject: str) -> str:
        return f"{self.name}:{subject}:{int(time.time()) // self.window}"

    async def over(self, subject: str) -> bool:
        """Whether ``subject`` has used up its ``limit`` in this window (never with limit 0)."""
        if self.limit <= 0:
            return False
        found = await self.store.get(self._key(subject))
        return int(found or 0) >= self.limit

    async def add(self, subject: str) -> int:
        """Count one for ``subject``; its count in this window."""
        key = self._key(subject)
        count = int(await self.store.get(key) or 0) + 1
        await self.store.set(key, str(count), expires_in=self.window)
        return count


class FailureThrottle:
    """Failed authentications: a per-minute limit and the abuse signal."""

    def __init__(self, store: Store, limit: int) -> None:
        self.minute = WindowCounts(store, "authfail", limit)
        self.abuse = WindowCounts(store, "authabuse", ABUSE_FAILURES, ABUSE_WINDOW)

    async def blocked(self, *subjects: str) -> bool:
        """Whether any subject is over its failures for this minute."""
        return any([await self.minute.over(subject) for subject in subjects])

    async def failed(self, *subjects: str) -> list[str]:
        """Count one failure of each subject; the subjects that just reached the abuse
        threshold (the caller records them in the audit log, once per window)."""
        reached = []
        for subject in subjects:
            await self.minute.add(subject)
            if await self.abuse.add(subject) == ABUSE_FAILURES:
                reached.append(subject)
        return reached
