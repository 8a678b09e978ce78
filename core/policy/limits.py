"""Rolling-window usage of per-user limits — pure, no I/O.

Usage is kept per (user, asset, operation type) in one-hour buckets (UTC). A window of
``N`` hours is the current bucket plus the ``N - 1`` before it: a daily limit counts
what the user did in the current hour and the 23 hours before. The repository locks the
user's limit row before it reads the buckets (see ``core.policy.store``), so the sums
this book starts from are exact for the whole batch transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal
from uuid import UUID

Window = Literal["day", "month"]
WINDOW_HOURS: dict[str, int] = {"day": 24, "month": 720}

#: (user, asset, operation type)
LimitKey = tuple[UUID, str, str]


def bucket_of(now: datetime) -> datetime:
    """The one-hour bucket ``now`` falls in (UTC)."""
    return now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def window_start(now: datetime, window: str) -> datetime:
    """First bucket that still counts for ``window`` at ``now``."""
    return bucket_of(now) - timedelta(hours=WINDOW_HOURS[window] - 1)


def counted_since(now: datetime) -> datetime:
    """The oldest bucket any window still counts at ``now``: older buckets can be deleted."""
    return min(window_start(now, window) for window in WINDOW_HOURS)


@dataclass(frozen=True, slots=True)
class UsageRow:
    key: LimitKey
    bucket: datetime
    count: int
    amount: int


class LimitBook:
    """Usage as stored (locked) plus what this batch has accepted so far, with undo."""

    def __init__(self, rows: Iterable[UsageRow], now: datetime) -> None:
        self.now = now
        self._base: dict[tuple[LimitKey, str], tuple[int, int]] = {}
        starts = {w: window_start(now, w) for w in WINDOW_HOURS}
        for row in rows:
            for window, start in starts.items():
                if row.bucket >= start:
                    count, amount = self._base.get((row.key, window), (0, 0))
                    self._base[(row.key, window)] = (count + row.count, amount + row.amount)
        # accepted in this batch: all in the current bucket, so inside every window
        self._delta: dict[LimitKey, tuple[int, int]] = {}
        self._undo: list[tuple[LimitKey, tuple[int, int] | None]] = []

    def used(self, key: LimitKey, window: str) -> tuple[int, int]:
        """(count, amount) already used in ``window``, this batch included."""
        count, amount = self._base.get((key, window), (0, 0))
        d_count, d_amount = self._delta.get(key, (0, 0))
        return count + d_count, amount + d_amount

    def add(self, key: LimitKey, amount: int) -> None:
        previous = self._delta.get(key)
        self._undo.append((key, previous))
        count, total = previous or (0, 0)
        self._delta[key] = (count + 1, total + amount)

    def checkpoint(self) -> int:
        return len(self._undo)

    def rollback(self, mark: int) -> None:
        while len(self._undo) > mark:
            key, previous = self._undo.pop()
            if previous is None:
                del self._delta[key]
            else:
                self._delta[key] = previous
