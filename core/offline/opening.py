"""Finishing an allowance's opening, by its request or by the worker's sweep.

An allowance is written OPENING first, then its hold is created under the ledger key
``offline-allowance:<id>``, then it becomes OPEN with its hold (``Allowances.open``). Whoever
finishes it (the request, a retry under its Idempotency-Key, or :func:`sweep`) runs
:func:`finish`: the same hold command under the same ledger key, so there is one hold
whatever races; then, under the allowance's row lock and a share lock on its device, the
first to get there decides and the others find it decided:

* the ledger refused the hold: the row is deleted (nothing is reserved);
* the device is revoked, or the sweep abandons it: FAILED, and the hold is voided under the
  ledger key ``offline-failed:<id>`` (after a crash the sweep voids it again: once);
* otherwise: OPEN with its hold. A revocation takes the device's row lock, so an allowance
  becomes OPEN either before the revocation commits or not at all.

:func:`sweep` finds allowances OPENING for longer than ``older_than`` (their request died
between the steps). One created without an Idempotency-Key has nobody to come back for it:
its requester got no certificate and cannot ask for it again, so the sweep abandons it and
the money returns now rather than when the hold expires. One created under a key is finished
exactly as its retry would (its client may retry and must then get the allowance).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from enum import StrEnum
from typing import NamedTuple

from sqlalchemy import text

from core import audit
from core.errors import LedgerError, StorageError
from core.ledger import Ledger
from core.types import SYSTEM_ACTOR, Actor, CreateHold, HoldResult, Result, VoidHold

log = logging.getLogger(__name__)

#: an OPENING allowance younger than this may still be finished by its own request
STALE_AFTER = timedelta(minutes=5)
SWEEP_BATCH = 100


class Failure(StrEnum):
    DEVICE_REVOKED = "DEVICE_REVOKED"
    ABANDONED = "ABANDONED"


def hold_key(allowance_id: int) -> str:
    return f"offline-allowance:{allowance_id}"


def failed_void_key(allowance_id: int) -> str:
    return f"offline-failed:{allowance_id}"


class Finished(NamedTuple):
    #: the ledger's answer to the hold (None: the allowance was not OPENING any more)
    hold: Result | LedgerError | None
    #: this call decided the allowance's fate (deleted, FAILED or OPEN)
    decided: bool


async def finish(
    ledger: Ledger, allowance_id: int, actor: Actor, *, abandon: bool = False
) -> Finished:
    """Finish an OPENING allowance (see the module doc). Raises :class:`StorageError` when
    the database is unreachable (the allowance stays OPENING)."""
    async with ledger.engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT account_id, asset, amount, expires_at, status "
                    "FROM offline_allowances WHERE id = :id"
                ),
                {"id": allowance_id},
            )
        ).first()
    if row is None or row.status != "OPENING":
        return Finished(None, decided=False)
    hold = await ledger.submit(
        CreateHold(
            row.account_id, row.account_id, row.asset, row.amount, row.expires_at, actor,
            hold_key(allowance_id), {"offline_allowance": allowance_id},
        )
    )  # fmt: skip
    if isinstance(hold, StorageError):
        raise hold
    to_void: int | None = None
    async with ledger.engine.begin() as conn:
        locked = (
            await conn.execute(
                text(
                    "SELECT a.status, a.user_id, a.device_id, a.account_id, a.amount, "
                    "a.expires_at, d.status AS device_status "
                    "FROM offline_allowances a JOIN offline_devices d ON d.id = a.device_id "
                    "WHERE a.id = :id FOR UPDATE OF a FOR SHARE OF d"
                ),
                {"id": allowance_id},
            )
        ).first()
        if locked is None or locked.status != "OPENING":
            return Finished(hold, decided=False)
        if isinstance(hold, LedgerError):
            await conn.execute(
                text("DELETE FROM offline_allowances WHERE id = :id"), {"id": allowance_id}
            )
            return Finished(hold, decided=True)
        if not isinstance(hold, HoldResult):  # pragma: no cover - the ledger answers in kind
            raise TypeError(type(hold).__name__)
        failure = (
            Failure.DEVICE_REVOKED
            if locked.device_status != "ACTIVE"
            else Failure.ABANDONED
            if abandon
            else None
        )
        if failure is None:
            await conn.execute(
                text(
                    "UPDATE offline_allowances SET hold_id = :h, status = 'OPEN', "
                    "updated_at = now() WHERE id = :id"
                ),
                {"h": hold.hold_id, "id": allowance_id},
            )
            await audit.record(
                conn, actor, "offline.allowance.opened", "offline_allowance", allowance_id,
                after={"user_id": locked.user_id, "device_id": locked.device_id,
                       "account_id": locked.account_id, "amount": locked.amount,
                       "expires_at": locked.expires_at, "hold_id": hold.hold_id},
            )  # fmt: skip
        else:
            await conn.execute(
                text(
                    "UPDATE offline_allowances SET hold_id = :h, status = 'FAILED', "
                    "failure = :f, updated_at = now() WHERE id = :id"
                ),
                {"h": hold.hold_id, "f": failure.value, "id": allowance_id},
            )
            await audit.record(
                conn, actor, "offline.allowance.failed", "offline_allowance", allowance_id,
                before={"status": "OPENING"},
                after={"status": "FAILED", "failure": failure.value, "hold_id": hold.hold_id},
            )  # fmt: skip
            to_void = hold.hold_id
    if to_void is not None:
        await void_failed(ledger, allowance_id, to_void, actor)
    return Finished(hold, decided=True)


async def void_failed(ledger: Ledger, allowance_id: int, hold_id: int, actor: Actor) -> bool:
    """Void a FAILED allowance's hold (once: the ledger key). True when this call voided it."""
    voided = await ledger.submit(
        VoidHold(hold_id, actor, "offline allowance failed", failed_void_key(allowance_id))
    )
    if isinstance(voided, LedgerError):
        if voided.code == "HOLD_NOT_PENDING":
            return False
        raise voided
    return isinstance(voided, HoldResult) and not voided.replayed


async def sweep(
    ledger: Ledger,
    *,
    older_than: timedelta = STALE_AFTER,
    limit: int = SWEEP_BATCH,
    actor: Actor = SYSTEM_ACTOR,
) -> tuple[int, int]:
    """Finish allowances left OPENING longer than ``older_than`` (abandon those created
    without an Idempotency-Key, open the others) and void the holds FAILED allowances still
    have. Returns (allowances finished, holds voided)."""
    async with ledger.engine.connect() as conn:
        stale = (
            await conn.execute(
                text(
                    "SELECT id, idempotency_key IS NULL AS keyless FROM offline_allowances "
                    "WHERE status = 'OPENING' "
                    "AND created_at <= clock_timestamp() - CAST(:age AS interval) "
                    "ORDER BY created_at LIMIT :n"
                ),
                {"age": older_than, "n": limit},
            )
        ).all()
        failed = (
            await conn.execute(
                text(
                    "SELECT a.id, a.hold_id FROM offline_allowances a "
                    "JOIN holds h ON h.id = a.hold_id "
                    "WHERE a.status = 'FAILED' AND h.status = 'PENDING' ORDER BY a.id LIMIT :n"
                ),
                {"n": limit},
            )
        ).all()
    finished = 0
    for row in stale:
        finished += (await finish(ledger, row.id, actor, abandon=row.keyless)).decided
    voided = 0
    for row in failed:
        voided += await void_failed(ledger, row.id, row.hold_id, actor)
    return finished, voided
