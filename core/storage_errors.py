"""The one place where database driver failures become core errors.

asyncpg raises ``PostgresError`` subclasses; SQLAlchemy wraps them in ``DBAPIError``. Both end
here: :func:`translate` maps a failure to the core's error tree (:mod:`core.errors`); a store
that expects a constraint (a duplicate e-mail, a missing user) raises its own error for it
first. Nothing above ``core`` sees a driver or SQLAlchemy exception.
"""

from __future__ import annotations

import logging

import asyncpg
from sqlalchemy.exc import DBAPIError

from core.errors import (
    AlreadyExists,
    AmountOverflow,
    AppendOnlyViolation,
    InsufficientFunds,
    LedgerError,
    LedgerIntegrityError,
    NotFound,
    StorageError,
    ValidationError,
)

__all__ = ["CONNECTION_LOST", "driver_cause", "translate"]

log = logging.getLogger(__name__)

#: failures after which the connection is unusable and a COMMIT's fate may be unknown
CONNECTION_LOST = (
    OSError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,
)


#: untranslatable_character, character_not_in_repertoire: input the database cannot store
_UNSTORABLE_TEXT = frozenset({"22P05", "22021"})


def driver_cause(exc: BaseException) -> BaseException:
    """The asyncpg error inside a SQLAlchemy ``DBAPIError`` (else ``exc`` itself)."""
    if isinstance(exc, DBAPIError):
        orig: object = getattr(exc.orig, "__cause__", None) or exc.orig
        if isinstance(orig, asyncpg.PostgresError):
            cause: BaseException = orig
            return cause
    return exc


def translate(exc: BaseException) -> LedgerError:
    """Map a driver exception (bare or wrapped by SQLAlchemy) to the core's error tree."""
    if isinstance(exc, LedgerError):
        return exc
    exc = driver_cause(exc)
    if isinstance(exc, asyncpg.PostgresError):
        sqlstate = getattr(exc, "sqlstate", "")
        constraint = getattr(exc, "constraint_name", None)
        if sqlstate == "VO001":
            return AppendOnlyViolation(str(exc))
        if isinstance(exc, asyncpg.UniqueViolationError) and constraint == "ledger_entries_pkey":
            # the ledger allocates seqs from its own sequence: a row already there was written
            # outside the ledger (an integrity breach, not the caller's conflict)
            log.error("INTEGRITY: an entry row holds a seq the ledger just allocated: %s", exc)
            return LedgerIntegrityError(
                "a stored entry holds a seq the ledger never allocated to it; nothing was written"
            )
        if isinstance(exc, asyncpg.UniqueViolationError):
            return AlreadyExists("already exists", constraint=constraint)
        if isinstance(exc, asyncpg.ForeignKeyViolationError):
            return NotFound("a referenced record does not exist", constraint=constraint)
        if isinstance(exc, asyncpg.CheckViolationError) and constraint == "balances_floor":
            return InsufficientFunds("the account's floor would be broken")
        if isinstance(exc, asyncpg.NumericValueOutOfRangeError):
            return AmountOverflow("a value does not fit in 64 bits")
        if sqlstate in _UNSTORABLE_TEXT:
            return ValidationError("a text value holds a NUL character or an invalid byte sequence")
    log.error("storage failure: %s: %s", type(exc).__name__, exc)
    return StorageError("the ledger database failed; nothing was written")
