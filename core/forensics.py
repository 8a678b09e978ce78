"""A user's forensic ledger: every entry on every account they own or are a vault member
of, newest first, with the operation type, the counterparty accounts and the balance
after the entry (so any balance can be re-derived from the page alone)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text

from core.errors import ValidationError
from core.ledger import Ledger
from core.queries import MAX_PAGE
from core.types import AccountKind, OperationType
from core.vaults import VISIBLE_ACCOUNTS_SQL


@dataclass(frozen=True, slots=True)
class ForensicEntry:
    seq: int
    operation_id: int
    operation_type: OperationType
    account_id: int
    account_kind: AccountKind
    #: the vault's name when ``account_id`` is a vault
    vault_name: str | None
    asset: str
    amount: int  # signed: credit > 0, debit < 0
    balance_after: int
    #: the other accounts of the same operation
    counterparties: tuple[int, ...]
    epoch: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ForensicPage:
    entries: list[ForensicEntry]
    #: pass as ``before_seq`` for the next (older) page; None at the end
    next_cursor: int | None


_QUERY = f"""
SELECT e.seq, e.operation_id, o.type, e.account_id, a.kind, v.name AS vault_name, e.asset,
       e.amount, e.balance_after, e.epoch, e.created_at,
       ARRAY(SELECT DISTINCT c.account_id FROM ledger_entries c
             WHERE c.seq BETWEEN o.first_seq AND o.last_seq
               AND c.operation_id = e.operation_id AND c.account_id <> e.account_id
             ORDER BY c.account_id) AS counterparties
FROM ledger_entries e
JOIN operations o ON o.id = e.operation_id
JOIN accounts a ON a.id = e.account_id
LEFT JOIN vaults v ON v.account_id = e.account_id
WHERE e.account_id IN ({VISIBLE_ACCOUNTS_SQL})
  AND e.seq < :before
  AND (CAST(:asset AS text) IS NULL OR e.asset = :asset)
  AND (CAST(:account AS bigint) IS NULL OR e.account_id = :account)
ORDER BY e.seq DESC
LIMIT :n
"""


async def forensic_ledger(
    ledger: Ledger,
    *,
    user: uuid.UUID,
    before_seq: int | None = None,
    limit: int = 50,
    asset: str | None = None,
    account_id: int | None = None,
) -> ForensicPage:
    """The entries ``user`` may read (their own accounts and vaults they are a member of,
    any role), keyset-paginated on ``seq``. ``account_id`` narrows to one of them; an
    account the user may not read yields an empty page, as one without entries does.
    Errors: VALIDATION_ERROR (limit)."""
    if not 1 <= limit <= MAX_PAGE:
        raise ValidationError(f"limit must be between 1 and {MAX_PAGE}", field="limit")
    async with ledger.engine.connect() as conn:
        rows = (
            await conn.execute(
                text(_QUERY),
                {
                    "user": user,
                    "before": before_seq or 2**63 - 1,
                    "asset": asset,
                    "account": account_id,
                    "n": limit + 1,
                },
            )
        ).all()
    entries = [
        ForensicEntry(
            seq=r.seq,
            operation_id=r.operation_id,
            operation_type=OperationType(r.type),
            account_id=r.account_id,
            account_kind=AccountKind(r.kind),
            vault_name=r.vault_name,
            asset=r.asset,
            amount=r.amount,
            balance_after=r.balance_after,
            counterparties=tuple(r.counterparties),
            epoch=r.epoch,
            created_at=r.created_at,
        )
        for r in rows[:limit]
    ]
    return ForensicPage(entries, entries[-1].seq if len(rows) > limit else None)
