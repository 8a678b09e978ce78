"""The reconciler: prove every cached balance equals what its entries say.

For every account it checks ``posted == SUM(amount)``, ``posted == balance_after`` of
its last entry, ``last_seq`` == its last entry's seq, and ``pending == SUM(remaining)``
of its pending holds, and reports every drift (account, field, expected, found). It also
checks that every completed operation sums to zero per asset, and that every entry's
``balance_after`` is the running sum of its account's amounts up to it (an edit that keeps
the cache and the last ``balance_after`` in step still breaks that sequence). Read-only, one
snapshot.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from core.types import Drift

_BALANCES = text("""
WITH sums AS (
    SELECT account_id, SUM(amount) AS total, MAX(seq) AS last_seq
    FROM ledger_entries GROUP BY account_id
), last AS (
    SELECT e.account_id, e.balance_after FROM ledger_entries e
    JOIN sums s ON s.account_id = e.account_id AND s.last_seq = e.seq
), held AS (
    SELECT source_id AS account_id, SUM(remaining) AS pending
    FROM holds WHERE status = 'PENDING' GROUP BY source_id
)
SELECT b.account_id, b.posted, b.pending, b.last_seq,
       COALESCE(s.total, 0) AS total, COALESCE(l.balance_after, 0) AS last_after,
       COALESCE(s.last_seq, 0) AS entries_last_seq, COALESCE(h.pending, 0) AS held
FROM balances b
LEFT JOIN sums s ON s.account_id = b.account_id
LEFT JOIN last l ON l.account_id = b.account_id
LEFT JOIN held h ON h.account_id = b.account_id
WHERE b.posted <> COALESCE(s.total, 0) OR b.posted <> COALESCE(l.balance_after, 0)
   OR b.last_seq <> COALESCE(s.last_seq, 0) OR b.pending <> COALESCE(h.pending, 0)
ORDER BY b.account_id
""")

_UNBALANCED = text("""
SELECT operation_id, asset, SUM(amount) AS total FROM ledger_entries
GROUP BY operation_id, asset HAVING SUM(amount) <> 0 ORDER BY operation_id
""")


_RUNNING = text("""
SELECT seq, balance_after, running FROM (
    SELECT seq, balance_after,
           SUM(amount) OVER (PARTITION BY account_id ORDER BY seq) AS running
    FROM ledger_entries
) x WHERE balance_after <> running ORDER BY seq LIMIT 1000
""")


async def reconcile(engine: AsyncEngine) -> list[Drift]:
    drifts: list[Drift] = []
    async with engine.connect() as conn:
        await conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
        for r in await conn.execute(_BALANCES):
            if r.posted != r.total:
                drifts.append(Drift("account", r.account_id, "posted", int(r.total), r.posted))
            if r.posted != r.last_after:
                drifts.append(
                    Drift("account", r.account_id, "balance_after", int(r.last_after), r.posted)
                )
            if r.last_seq != r.entries_last_seq:
                drifts.append(
                    Drift("account", r.account_id, "last_seq", int(r.entries_last_seq), r.last_seq)
                )
            if r.pending != r.held:
                drifts.append(Drift("account", r.account_id, "pending", int(r.held), r.pending))
        for r in await conn.execute(_UNBALANCED):
            drifts.append(Drift("operation", r.operation_id, f"sum:{r.asset}", 0, int(r.total)))
        for r in await conn.execute(_RUNNING):
            drifts.append(Drift("entry", r.seq, "balance_after", int(r.running), r.balance_after))
    return drifts
