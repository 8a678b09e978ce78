"""The risk loop: one tick evaluates every open position in ONE set-based statement and acts,
at most once per position, on the few the statement returns.

A tick:

1. freezes assets whose price is older than their heartbeat (:func:`core.risk.prices.freeze_stale`);
2. :meth:`RiskLoop.evaluate` clears the margin call of lines back under it
   (:data:`CLEAR_NOTICES`, over the lines with one out) and returns the lines over margin call
   or at their stop-loss, skipping frozen assets: per asset one index range read of
   :data:`CANDIDATES`, the lines whose trigger (migration 0020: the highest price answer at
   which the line needs a decision, kept with its balances in the same transaction) is at or
   above the current price. It returns exactly the lines :data:`SCAN_CANDIDATES` (the same
   predicate evaluated over every open line, in SQL ``numeric``) returns; an asset whose
   triggers were computed with other parameters or price decimals is first recomputed
   set-based (:func:`core.risk.triggers.rebase`), and read by the scan if it moved again
   meanwhile. Lines of several collateral assets have no trigger (their value depends on several
   prices): their multi rows (migration 0025) are read through an index with the smallest
   ratio of current to reference price (:data:`MULTI_DUE`), with their reached stop-losses,
   and only those lines are checked exactly (:data:`MULTI_INDEXED`); it returns exactly the
   lines the scan of all of them (:data:`MULTI_CANDIDATES`) returns, which the tick uses
   while the reference basis is being rebased;
3. for each candidate, under the line's row lock, reads it again and decides with
   :func:`core.risk.math.decide` — a repayment or deposit committed meanwhile is seen — and
   performs that one action as one balanced ledger operation (``risk:<line>:<tick>`` key) and a
   ``risk_events`` row (UNIQUE per line and tick), both in the transaction holding the row
   lock; sales count against the tick's :class:`LiquidationCaps`;
4. refreshes limits and floors of every open line whose asset's price or freeze changed
   (:meth:`RiskLoop.refresh_moved_prices`), in chunks of :data:`REFRESH_CHUNK` lines, one
   transaction each. The decisions come first: they do not read limits, and at a million
   lines the refresh takes tens of seconds (``python -m bench.risk --limits``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from core.errors import NoRiskParameters, PriceFrozen
from core.ledger import Ledger
from core.risk import math as risk
from core.risk import triggers
from core.risk.lines import (
    VALUE_SQL,
    LineState,
    liquidation_entries,
    locked_line,
    read_state,
    refresh_limits,
)
from core.risk.prices import freeze_stale
from core.types import (
    SYSTEM_ACTOR,
    Actor,
    OperationType,
    PostOperation,
    SystemAccount,
    transfer_legs,
)

log = logging.getLogger(__name__)

_FROM = """
FROM credit_lines l
JOIN balances cb ON cb.account_id = l.credit_account_id
JOIN balances c ON c.account_id = l.collateral_account_id
JOIN risk_assets ra ON ra.asset = l.collateral_asset
JOIN risk_parameters p ON p.asset = l.collateral_asset AND p.status = 'ACTIVE'
JOIN assets ca ON ca.code = l.collateral_asset
JOIN assets da ON da.code = l.debt_asset
WHERE l.status = 'OPEN' AND NOT ra.frozen AND NOT l.multi_collateral
  AND (CAST(:asset AS text) IS NULL OR l.collateral_asset = CAST(:asset AS text))
"""
_OVER_MARGIN = f"(cb.pending - cb.posted)::numeric * 10000 > {VALUE_SQL} * p.margin_call_bps"

#: the open lines whose limits depend on an asset's price, in chunks: those it is the own
#: collateral of, then those holding it as a further asset
_LINES_OF_ASSET = (
    "SELECT id FROM credit_lines WHERE collateral_asset = :a AND status = 'OPEN' "
    "AND id > :after ORDER BY id LIMIT :n",
    "SELECT x.line_id FROM credit_line_collateral x JOIN credit_lines l ON l.id = x.line_id "
    "WHERE x.asset = :a AND l.status = 'OPEN' AND x.line_id > :after "
    "ORDER BY x.line_id LIMIT :n",
)

#: lines whose limits one transaction of :meth:`RiskLoop.refresh_moved_prices` recomputes (a card
#: spend on one of them waits for at most one chunk)
REFRESH_CHUNK = 20_000

#: every open position, once: the lines needing a decision this tick, by a full scan
SCAN_CANDIDATES = f"""
SELECT l.id {_FROM} AND (
    (cb.pending - cb.posted > 0 AND {_OVER_MARGIN})
    OR (l.stop_loss_answer IS NOT NULL AND c.posted > 0
        AND ra.price_answer <= l.stop_loss_answer)
) ORDER BY l.id
"""

#: the same lines of one asset whose triggers are current, from the triggers index
CANDIDATES = """
SELECT line_id FROM credit_line_triggers
WHERE collateral_asset = :asset AND open AND trigger >= :price
"""

#: the assets a tick evaluates, with whether their lines' triggers are current
_ASSETS = """
SELECT ra.asset, ra.price_answer,
       coalesce(b.complete AND b.params_id = p.id AND b.decimals = ra.price_decimals, false)
         AS current
FROM risk_assets ra
JOIN risk_parameters p ON p.asset = ra.asset AND p.status = 'ACTIVE'
LEFT JOIN risk_trigger_basis b ON b.asset = ra.asset
WHERE NOT ra.frozen AND (CAST(:asset AS text) IS NULL OR ra.asset = CAST(:asset AS text))
ORDER BY ra.asset
"""

#: margin calls answered: the line is back at or under its margin-call LTV
CLEAR_NOTICES = f"""
UPDATE credit_lines SET notified_at = NULL WHERE id IN (
    SELECT l.id {_FROM} AND l.notified_at IS NOT NULL
    AND NOT (cb.pending - cb.posted > 0 AND {_OVER_MARGIN}))
"""


def _multi(lines: str) -> str:
    """The open lines holding several collateral assets that match ``lines`` (a predicate on
    ``l``; of ``:asset``, if given), each once with its exposure, whether every price it holds
    collateral at can be acted on, its margin-call capacity (sum value_i * margin_call_i,
    core.risk.math.capacity) and whether a stop-loss is hit."""
    return f"""
WITH h AS (
    SELECT l.id AS line_id, l.debt_asset, l.collateral_asset AS asset,
           l.collateral_account_id AS account_id, l.stop_loss_answer AS stop
    FROM credit_lines l WHERE l.multi_collateral AND l.status = 'OPEN' AND {lines}
    UNION ALL
    SELECT x.line_id, l.debt_asset, x.asset, x.account_id, x.stop_loss_answer
    FROM credit_lines l JOIN credit_line_collateral x ON x.line_id = l.id
    WHERE l.multi_collateral AND l.status = 'OPEN' AND {lines}
), m AS (
    SELECT h.line_id,
           bool_and(c.posted = 0 OR (NOT ra.frozen AND ra.price_answer IS NOT NULL
                                     AND p.id IS NOT NULL)) AS trusted,
           sum(CASE WHEN c.posted = 0 OR ra.price_answer IS NULL OR p.id IS NULL THEN 0
                    ELSE {VALUE_SQL} * p.margin_call_bps END) AS margin_cap,
           bool_or(h.stop IS NOT NULL AND c.posted > 0 AND ra.price_answer <= h.stop) AS stop_hit,
           bool_or(h.asset = CAST(:asset AS text)) AS holds
    FROM h
    JOIN balances c ON c.account_id = h.account_id
    JOIN assets ca ON ca.code = h.asset
    JOIN assets da ON da.code = h.debt_asset
    LEFT JOIN risk_assets ra ON ra.asset = h.asset
    LEFT JOIN risk_parameters p ON p.asset = h.asset AND p.status = 'ACTIVE'
    GROUP BY h.line_id
)
SELECT m.line_id, l.notified_at IS NOT NULL AS notified, m.trusted, m.stop_hit,
       cb.pending - cb.posted > 0
         AND (cb.pending - cb.posted)::numeric * 10000 > m.margin_cap AS over_margin
FROM m
JOIN credit_lines l ON l.id = m.line_id
JOIN balances cb ON cb.account_id = l.credit_account_id
WHERE CAST(:asset AS text) IS NULL OR m.holds
"""


#: the lines of several assets needing a decision this tick, by a scan of every such line
MULTI_CANDIDATES = f"""
SELECT line_id FROM ({_multi("true")}) s WHERE s.trusted AND (s.over_margin OR s.stop_hit)
"""

#: ``m``: the smallest ratio current price / reference price over the assets (x 10^20, rounded
#: down; +Infinity without any), of the assets trusted now
MULTI_RATIO = """
SELECT coalesce(min(div(ra.price_answer * power(10::numeric, 20), b.answer)),
                'Infinity'::numeric)
FROM risk_multi_basis b JOIN risk_assets ra ON ra.asset = b.asset
WHERE NOT ra.frozen AND ra.price_answer > 0 AND b.answer > 0
"""

#: whether the multi rows' basis is whole and still the assets' parameters and decimals
MULTI_BASIS_CURRENT = """
SELECT s.complete AND NOT EXISTS (
    SELECT 1 FROM risk_assets ra
    LEFT JOIN risk_multi_basis b ON b.asset = ra.asset
    LEFT JOIN risk_parameters p ON p.asset = ra.asset AND p.status = 'ACTIVE'
    WHERE b.asset IS NULL OR b.decimals IS DISTINCT FROM ra.price_decimals
       OR b.params_id IS DISTINCT FROM p.id)
FROM risk_multi_state s
"""

#: the lines of several assets that may need a decision: a multi row whose key reaches the ratio
#: (migration 0025: every line over its margin call does), or a stop-loss reached (by index)
MULTI_DUE = f"""
SELECT line_id FROM credit_line_multi WHERE open AND key >= ({MULTI_RATIO})
UNION
SELECT x.line_id FROM risk_assets ra
JOIN credit_line_collateral x ON x.asset = ra.asset AND x.stop_loss_answer >= ra.price_answer
UNION
SELECT l.id FROM risk_assets ra
JOIN credit_lines l ON l.collateral_asset = ra.asset AND l.stop_loss_answer >= ra.price_answer
WHERE l.multi_collateral
"""

#: :data:`MULTI_CANDIDATES` read through :data:`MULTI_DUE`: the same lines while the basis is
#: current (tested), reading only the due ones
MULTI_INDEXED = f"""
SELECT line_id FROM ({_multi(f"l.id IN ({MULTI_DUE})")}) s
WHERE s.trusted AND (s.over_margin OR s.stop_hit)
"""

#: :data:`CLEAR_NOTICES` of the lines of several assets (those with a notice out)
CLEAR_MULTI_NOTICES = f"""
UPDATE credit_lines SET notified_at = NULL WHERE id IN (
    SELECT line_id FROM ({_multi("l.notified_at IS NOT NULL")}) s
    WHERE s.notified AND s.trusted AND NOT s.over_margin)
"""

#: the open lines (of ``:asset``: its own lines, and the lines holding it as a further asset),
#: each counted once; two counts, so each reads its own index
_OPEN_LINES = """
SELECT (SELECT count(*) FROM credit_lines WHERE status = 'OPEN'
        AND (CAST(:asset AS text) IS NULL OR collateral_asset = CAST(:asset AS text)))
     + (SELECT count(*) FROM credit_line_collateral x JOIN credit_lines l ON l.id = x.line_id
        WHERE x.asset = CAST(:asset AS text) AND l.status = 'OPEN')
"""

#: a ratio under this (x 10^20) makes the multi rows' filter loose: the limits job rebases them
LOOSE_RATIO = 95 * 10**18

#: the session advisory lock one tick holds (steps 1 to 3): one tick at a time, deployment-wide
RISK_TICK_LOCK_KEY = 0x76616C7269736B31  # "valrisk1"

#: default caps on collateral value sold per tick, debt-asset minor units ($1M / $250k at
#: scale 2); see :class:`LiquidationCaps`
DEFAULT_GLOBAL_CAP = 100_000_000
DEFAULT_ASSET_CAP = 25_000_000


@dataclass(frozen=True, slots=True)
class LiquidationCaps:
    """Maker-style bounds on what one tick liquidates: the market value of the collateral
    sold (:func:`core.risk.math.value_of`, debt-asset minor units, rounded down), summed over
    the tick's sales (``global_cap``) and per collateral asset (``per_asset``, else
    ``asset_cap``). A sale that would take a sum past its cap is cut to the room left (a
    partial lot, :func:`core.risk.math.capped_lot`) or, when that lot would be dust or leave a
    dust position, waits for a later tick; the first sale of a tick (globally, or of its asset)
    always runs whole: a position larger than a cap is still liquidated, alone. Staff
    liquidations are not capped."""

    global_cap: int = DEFAULT_GLOBAL_CAP
    asset_cap: int = DEFAULT_ASSET_CAP
    per_asset: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if min(self.global_cap, self.asset_cap, *self.per_asset.values()) <= 0:
            raise ValueError("liquidation caps must be positive")

    def of(self, asset: str) -> int:
        return self.per_asset.get(asset, self.asset_cap)


@dataclass
class CapBudget:
    """What one tick has liquidated so far, against its :class:`LiquidationCaps`."""

    caps: LiquidationCaps
    total: int = 0
    by_asset: dict[str, int] = field(default_factory=dict)
    #: sales that waited for a later tick
    deferred: int = 0
    #: sales cut to the room left (the rest for later ticks)
    cut: int = 0

    def global_room(self) -> int | None:
        """The market value the tick's next sales may still have in all (negative: none);
        None while unbounded (no sale yet this tick)."""
        return self.caps.global_cap - self.total if self.total else None

    def asset_room(self, asset: str) -> int | None:
        """The same for ``asset``'s sales; None until the tick sold some of it."""
        used = self.by_asset.get(asset, 0)
        return self.caps.of(asset) - used if used else None

    def take(self, asset: str, value: int) -> None:
        self.total += value
        self.by_asset[asset] = self.by_asset.get(asset, 0) + value


@dataclass
class TickReport:
    tick: int
    evaluated: int = 0
    candidates: int = 0
    actions: dict[str, int] = field(default_factory=dict)
    frozen: list[str] = field(default_factory=list)
    #: liquidations the caps moved to a later tick
    deferred: int = 0
    #: liquidations the caps cut to a partial lot
    cut: int = 0
    #: another tick was running (in this or another process): this one did nothing
    skipped: bool = False


def _details(state: LineState, action: risk.Action) -> dict[str, Any]:
    details: dict[str, Any] = {
        "debt": state.debt, "collateral": state.collateral, "value": state.value,
        "price": None if state.price is None else state.price.answer,
        "sold": action.sold, "proceeds": action.proceeds, "repaid": action.repaid,
        "surplus": action.surplus, "shortfall": action.shortfall,
    }  # fmt: skip
    if state.others:
        details["held"] = {
            h.asset: {"quantity": h.quantity, "price": None if h.price is None else h.price.answer}
            for h in state.others
        }
        details["lots"] = [
            {"asset": x.asset, "sold": x.quantity, "proceeds": x.proceeds} for x in action.lots
        ]
    return details


class RiskLoop:
    def __init__(
        self, ledger: Ledger, actor: Actor = SYSTEM_ACTOR, *, caps: LiquidationCaps | None = None
    ) -> None:
        self.ledger = ledger
        self.caps = caps or LiquidationCaps()
        self.engine = ledger.engine
        self.actor = actor
        self._system: dict[tuple[str, SystemAccount], int] = {}

    async def _account(self, asset: str, code: SystemAccount) -> int:
        found = self._system.get((asset, code))
        if found is None:
            found = await self.ledger.accounts.system_account(asset, code, actor=self.actor)
            self._system[(asset, code)] = found
        return found

    async def evaluate(self, asset: str | None = None) -> tuple[int, list[int]]:
        """The set-based pass: (open positions, candidate line ids); ``asset`` limits it to
        one collateral asset's lines."""
        scope = {"asset": asset}
        async with self.engine.begin() as conn:
            await conn.execute(text(CLEAR_NOTICES), scope)
            await conn.execute(text(CLEAR_MULTI_NOTICES), scope)
            stale = [a for a, _, current in await conn.execute(text(_ASSETS), scope) if not current]
            multi_current = (await conn.execute(text(MULTI_BASIS_CURRENT))).scalar_one()
        for code in stale:
            await triggers.rebase(self.engine, code)
        if not multi_current:
            await triggers.rebase_multi(self.engine)
        ids: list[int] = []
        async with self.engine.connect() as plain:
            conn = await plain.execution_options(isolation_level="REPEATABLE READ")
            async with conn.begin():
                # one snapshot; the price is a literal to the planner: a range of the index
                await conn.execute(text("SET TRANSACTION READ ONLY"))
                await conn.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
                for code, price, current in (await conn.execute(text(_ASSETS), scope)).all():
                    statement, args = (
                        (CANDIDATES, {"asset": code, "price": price})
                        if current
                        else (SCAN_CANDIDATES, {"asset": code})
                    )
                    ids += (await conn.execute(text(statement), args)).scalars()
                multi_current = (await conn.execute(text(MULTI_BASIS_CURRENT))).scalar_one()
                multi = MULTI_INDEXED if multi_current else MULTI_CANDIDATES
                ids += (await conn.execute(text(multi), scope)).scalars()
                total = (await conn.execute(text(_OPEN_LINES), scope)).scalar_one()
        return int(total), sorted(int(i) for i in ids)

    async def refresh_moved_prices(self, chunk: int | None = None) -> None:
        """Limits and floors of every open line of each asset whose price or freeze changed
        since its last refresh, ``chunk`` lines (by id) per transaction; the asset is marked
        refreshed for the price it started from (a price that moves meanwhile is refreshed
        by the next call). Idempotent: two workers refreshing at once only repeat work.

        Then, when some price fell more than 5% under the multi rows' reference
        (:data:`LOOSE_RATIO`), those rows are rebased on the current prices, so the tick's filter
        of lines of several assets stays tight."""
        size = REFRESH_CHUNK if chunk is None else chunk
        async with self.engine.connect() as conn:
            moved = (
                await conn.execute(
                    text(
                        "SELECT asset, updated_at FROM risk_assets "
                        "WHERE limits_at IS DISTINCT FROM updated_at ORDER BY asset"
                    )
                )
            ).all()
        for asset, updated_at in moved:
            for statement in _LINES_OF_ASSET:
                after = 0
                while True:
                    async with self.engine.begin() as conn:
                        found = await conn.execute(
                            text(statement), {"a": asset, "after": after, "n": size}
                        )
                        ids = list(found.scalars())
                        if not ids:
                            break
                        await refresh_limits(conn, line_ids=ids)
                    after = ids[-1]
            async with self.engine.begin() as conn:
                await conn.execute(
                    text("UPDATE risk_assets SET limits_at = :u WHERE asset = :a"),
                    {"u": updated_at, "a": asset},
                )
        async with self.engine.connect() as conn:
            ratio = (await conn.execute(text(MULTI_RATIO))).scalar_one()
        if ratio < LOOSE_RATIO:
            await triggers.rebase_multi(self.engine)

    async def tick(self, asset: str | None = None, *, refresh: bool = True) -> TickReport:
        """Steps 1 to 4 of the module's tick; ``refresh`` False leaves step 4 (the limits) to
        its own job, as the worker does: at a million lines it takes tens of seconds, and the
        next decisions must not wait for it (card authorizations meet the current price's limit
        either way: :meth:`core.risk.lines.CreditLines.authorize`).

        One tick runs at a time in the whole deployment: steps 1 to 3 hold a session advisory
        lock (:data:`RISK_TICK_LOCK_KEY`), and a tick that finds it taken returns at once with
        ``skipped`` set. So the liquidation caps bound what all workers sell per tick, and two
        workers never decide the same lines side by side (the line lock would serialize them;
        the second would only repeat the reads)."""
        async with self.engine.connect() as plain:
            guard = await plain.execution_options(isolation_level="AUTOCOMMIT")
            tick = int(
                (
                    await guard.execute(
                        text("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint")
                    )
                ).scalar_one()
            )
            got = await guard.execute(
                text("SELECT pg_try_advisory_lock(:k)"), {"k": RISK_TICK_LOCK_KEY}
            )
            if not got.scalar_one():
                return TickReport(tick, skipped=True)
            try:
                report = await self._tick(tick, asset)
            finally:
                await guard.execute(
                    text("SELECT pg_advisory_unlock(:k)"), {"k": RISK_TICK_LOCK_KEY}
                )
        if refresh:
            await self.refresh_moved_prices()
        return report

    async def _tick(self, tick: int, asset: str | None) -> TickReport:
        """Steps 1 to 3, under the tick's lock."""
        report = TickReport(tick)
        report.frozen = await freeze_stale(self.engine, self.actor)
        report.evaluated, ids = await self.evaluate(asset)
        report.candidates = len(ids)
        budget = CapBudget(self.caps)
        for line_id in ids:
            kind = await self.act(line_id, tick=tick, budget=budget)
            if kind is not risk.ActionKind.NONE:
                report.actions[kind] = report.actions.get(kind, 0) + 1
        report.deferred = budget.deferred
        report.cut = budget.cut
        return report

    async def _post_action(
        self, conn: AsyncConnection, state: LineState, action: risk.Action, base: PostOperation
    ) -> int | None:
        """Post the action's operation in ``conn``'s transaction (``base`` carries actor, key,
        metadata and reason); None for an action that moves nothing."""
        line = state.line
        if action.kind is risk.ActionKind.NOTIFY:
            return None
        if action.kind is risk.ActionKind.CUSHION:
            legs = transfer_legs(
                line.cushion_account_id, line.credit_account_id, line.debt_asset, action.repaid
            )
            command = replace(base, type=OperationType.CUSHION_APPLIED, entries=legs)
        else:
            assets = {line.collateral_asset, line.debt_asset, *(x.asset for x in action.lots)}
            liquidation = {
                asset: await self._account(asset, SystemAccount.LIQUIDATION) for asset in assets
            }
            bad_debt = await self._account(line.debt_asset, SystemAccount.BAD_DEBT)
            entries = liquidation_entries(state, action, liquidation, bad_debt)
            if len(entries) < 2:
                return None
            command = replace(base, entries=entries)
        return (await self.ledger.post_within(conn, command)).operation_id

    async def act(
        self,
        line_id: int,
        *,
        tick: int | None = None,
        force_full: bool = False,
        actor: Actor | None = None,
        reason: str | None = None,
        budget: CapBudget | None = None,
    ) -> risk.ActionKind:
        """Decide and perform one action on a line under its row lock; returns what it did.

        The action's ledger operation, its ``risk_events`` row, the margin-call mark and the
        line's new limit are written in ONE database transaction (the one holding the row
        lock): a crash anywhere leaves all of them or none, and the next tick decides again
        from what is committed.

        ``budget`` (the tick's liquidation caps): a sale it cannot admit whole is cut to the
        room left (:func:`core.risk.math.capped_lot`), or waits for a later tick when that lot
        would be dust or leave a dust position; a waiting line gets its margin call meanwhile
        if it has none out. ``force_full``
        (staff, with a reason) closes the debt whatever the ladder says, still only on a
        trusted price, and is not capped."""
        actor = actor or self.actor
        async with locked_line(self.engine, line_id) as conn:
            state = await read_state(conn, line_id)
            if state.params is None:
                raise NoRiskParameters(f"{state.line.collateral_asset} has no parameters")
            if not state.trusted:
                if force_full:
                    raise PriceFrozen(f"a price credit line {line_id} depends on is not trusted")
                return risk.ActionKind.NONE
            position = state.position()
            ladder = state.params.ladder
            action = (
                risk.full_sale(position, ladder) if force_full else risk.decide(position, ladder)
            )
            if action.kind is risk.ActionKind.NONE or (force_full and state.debt == 0):
                return risk.ActionKind.NONE
            sold: dict[str, int] = {}
            capped: dict[str, int] = {}
            if action.sells and budget is not None:
                values = risk.lot_values(position, ladder, action)
                rooms = {asset: budget.asset_room(asset) for asset in values}
                lot = risk.capped_sale(position, ladder, action, budget.global_room(), rooms)
                if lot is None:
                    budget.deferred += 1
                    if position.notified:
                        return risk.ActionKind.NONE
                    action = risk.Action(risk.ActionKind.NOTIFY)
                elif lot is not action:
                    budget.cut += 1
                    capped = {"capped_from": action.sold}
                    action = lot
                sold = risk.lot_values(position, ladder, action)
            key = f"risk:{line_id}:{tick}" if tick is not None else None
            metadata = {"credit_line": line_id, "action": action.kind.value, "tick": tick}
            operation_id = await self._post_action(
                conn, state, action, PostOperation(
                    OperationType.LIQUIDATION, (), actor, key, metadata, reason=reason
                ),
            )  # fmt: skip
            await conn.execute(
                text(
                    "INSERT INTO risk_events (line_id, kind, tick, operation_id, details) "
                    "VALUES (:l, :k, :t, :o, CAST(:d AS jsonb))"
                ),
                {"l": line_id, "k": action.kind.value, "t": tick, "o": operation_id,
                 "d": json.dumps(_details(state, action) | capped
                                 | ({"reason": reason} if reason else {}))},
            )  # fmt: skip
            if action.kind is risk.ActionKind.NOTIFY:
                await conn.execute(
                    text("UPDATE credit_lines SET notified_at = clock_timestamp() WHERE id = :l"),
                    {"l": line_id},
                )
            else:
                await refresh_limits(conn, line_ids=[line_id])
        if budget is not None:
            for asset, value in sold.items():
                budget.take(asset, value)
        log.info("risk: line %s %s", line_id, action.kind.value)
        return action.kind


# ---------------------------------------------------------------------------
# Margin-call notices to the card app: signed webhooks, delivered at least once
# ---------------------------------------------------------------------------


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """HMAC-SHA256 over ``"<timestamp>.<raw body>"``, as ``sha256=<hex>`` (the scheme the
    provider webhooks use inbound, ``api.controllers.deposits``)."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


#: (body, headers) -> delivered?
Sender = Callable[[bytes, dict[str, str]], Awaitable[bool]]


async def deliver_notices(
    ledger: Ledger, send: Sender, secret: str, *, now_s: int, limit: int = 100
) -> int:
    """Send undelivered margin calls (oldest first); a notice is marked delivered only after
    the card app acknowledged it. Returns how many were delivered."""
    async with ledger.engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT e.id, e.line_id, e.details::text AS details, e.created_at, "
                    "l.owner_id FROM risk_events e JOIN credit_lines l ON l.id = e.line_id "
                    "WHERE e.kind = 'NOTIFY' AND e.delivered_at IS NULL ORDER BY e.id LIMIT :n"
                ),
                {"n": limit},
            )
        ).all()
    delivered = 0
    for row in rows:
        body = json.dumps(
            {"event_id": f"risk-event-{row.id}", "type": "margin_call", "line_id": row.line_id,
             "user_id": str(row.owner_id), "details": json.loads(row.details),
             "created_at": row.created_at.isoformat()},
            sort_keys=True,
        ).encode()  # fmt: skip
        stamp = str(now_s)
        ok = await send(
            body, {"X-Webhook-Timestamp": stamp, "X-Webhook-Signature": sign(secret, stamp, body)}
        )
        async with ledger.engine.begin() as conn:
            await conn.execute(
                text(
                    "UPDATE risk_events SET attempts = attempts + 1, delivered_at = CASE WHEN "
                    ":ok THEN clock_timestamp() END WHERE id = :id"
                ),
                {"ok": ok, "id": row.id},
            )
        delivered += ok
    return delivered
