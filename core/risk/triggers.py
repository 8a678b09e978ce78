"""Risk triggers (migration 0020): per credit line of one collateral asset the highest price
answer at which the line needs a decision, kept by the database in the transaction of every
change to its balances, stop-loss or status, and recomputed set-based per asset when its
parameters or price decimals change (:func:`rebase`). The risk loop reads them through an index
(:data:`core.risk.loop.CANDIDATES`).

:func:`drift` is the check of that maintenance: the lines whose stored row differs from what
their balances, line and basis give now.

Lines of several collateral assets have a multi row instead (migration 0025), kept the same
way against a reference basis of every asset's price (:func:`rebase_multi`, :func:`multi_drift`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

#: lines recomputed per transaction by :func:`rebase`
REBASE_CHUNK = 20_000

_DRIFT = """
SELECT t.line_id FROM credit_line_triggers t
JOIN credit_lines l ON l.id = t.line_id
JOIN balances cb ON cb.account_id = l.credit_account_id
JOIN balances c ON c.account_id = l.collateral_account_id
JOIN assets ca ON ca.code = l.collateral_asset
JOIN assets da ON da.code = l.debt_asset
LEFT JOIN risk_trigger_basis b ON b.asset = l.collateral_asset
LEFT JOIN risk_parameters p ON p.id = b.params_id
WHERE (CAST(:asset AS text) IS NULL OR l.collateral_asset = CAST(:asset AS text))
  AND (t.collateral_asset <> l.collateral_asset
    OR t.open <> (l.status = 'OPEN' AND NOT l.multi_collateral)
    OR t.exposure <> cb.pending - cb.posted
    OR t.collateral <> c.posted
    OR t.stop_loss_answer IS DISTINCT FROM l.stop_loss_answer
    OR cb.credit_line_id IS DISTINCT FROM l.id
    OR c.credit_line_id IS DISTINCT FROM l.id
    OR (b.asset IS NOT NULL AND t.trigger <> valueos_risk_trigger(
            cb.pending - cb.posted, c.posted, l.stop_loss_answer, p.margin_call_bps,
            da.scale, ca.scale, b.decimals)))
UNION
SELECT l.id FROM credit_lines l
WHERE (CAST(:asset AS text) IS NULL OR l.collateral_asset = CAST(:asset AS text))
  AND NOT EXISTS (SELECT 1 FROM credit_line_triggers t WHERE t.line_id = l.id)
ORDER BY 1
"""


async def drift(conn: AsyncConnection, asset: str | None = None) -> list[int]:
    """Lines (of ``asset``, or all) whose trigger row does not match their state now."""
    return [int(i) for i in (await conn.execute(text(_DRIFT), {"asset": asset})).scalars()]


async def rebase(engine: AsyncEngine, asset: str, chunk: int = REBASE_CHUNK) -> bool:
    """Recompute every line of ``asset`` with its current active parameters and price
    decimals, ``chunk`` lines per transaction; True if the basis is complete afterwards
    (False: another rebase started meanwhile and completes it)."""
    return await _rebase(
        engine, "valueos_risk_rebase_start(:a)", "valueos_risk_rebase_chunk(:a, :after, :n)",
        "valueos_risk_rebase_finish(:a, :g)", {"a": asset}, chunk,
    )  # fmt: skip


async def _rebase(
    engine: AsyncEngine, start: str, step: str, finish: str, args: dict[str, Any], chunk: int
) -> bool:
    """A rebase by the migration's three functions: ``start`` (a new generation), ``step``
    (the next ``:n`` lines after ``:after``, one transaction each) and ``finish`` (complete,
    unless another start came since)."""
    async with engine.begin() as conn:
        generation = (await conn.execute(text(f"SELECT {start}"), args)).scalar_one()
    after = 0
    while True:
        async with engine.begin() as conn:
            last, lines = (
                await conn.execute(
                    text(f"SELECT * FROM {step}"), args | {"after": after, "n": chunk}
                )
            ).one()
        if not lines:
            break
        after = int(last)
    async with engine.begin() as conn:
        done = await conn.execute(text(f"SELECT {finish}"), args | {"g": generation})
        return bool(done.scalar())


_MULTI_DRIFT = """
SELECT l.id FROM credit_lines l
LEFT JOIN credit_line_multi m ON m.line_id = l.id
LEFT JOIN LATERAL valueos_risk_multi_rows(ARRAY[l.id]) r ON true
WHERE l.multi_collateral AND (m.line_id IS NULL OR (m.open, m.exposure, m.cap_ref, m.holdings,
      m.key) IS DISTINCT FROM (r.open, r.exposure, r.cap_ref, r.holdings, r.key))
UNION
SELECT x.line_id FROM credit_line_collateral x
JOIN balances b ON b.account_id = x.account_id
WHERE b.credit_line_id IS DISTINCT FROM x.line_id
ORDER BY 1
"""


async def multi_drift(conn: AsyncConnection) -> list[int]:
    """Lines of several assets whose multi row (or further account's mark) does not match their
    state now."""
    return [int(i) for i in (await conn.execute(text(_MULTI_DRIFT))).scalars()]


async def rebase_multi(engine: AsyncEngine, chunk: int = REBASE_CHUNK) -> bool:
    """Make every asset's current price, decimals and parameters the multi rows' reference and
    recompute every row, ``chunk`` lines per transaction; True if the basis is complete
    afterwards (False: another rebase started meanwhile and completes it)."""
    return await _rebase(
        engine, "valueos_risk_multi_rebase_start()",
        "valueos_risk_multi_rebase_chunk(:after, :n)", "valueos_risk_multi_rebase_finish(:g)",
        {}, chunk,
    )  # fmt: skip
