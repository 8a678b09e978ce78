"""The Stellar bridge-in job body: read the SACs' ``burn`` and ``mint`` events with
``getEvents`` and credit the burns back to the ledger (:mod:`core.bridges.stellar_in`,
:mod:`core.bridges.redemptions`).

One pass, for each Stellar asset registered on the network:

1. the RPC's window: its oldest and latest ledger (only closed ledgers are ever served; a
   closed Stellar ledger is final, there are no reorgs);
2. the asset's cursor (``bridge_cursors``, the next ledger to read) must lie inside the window:
   below it, events were lost to the RPC's retention -- the pass stops for the asset and alarms
   (``valueos_stellar_watcher_behind_total``). It alarms well before that: when the cursor lags
   the latest ledger by more than ``alarm_fraction`` of the window
   (``valueos_stellar_watcher_lag_ledgers`` shows the lag);
3. from the cursor to the latest ledger, in ranges of ``page_ledgers``: every event of the range
   is read page by page (``limit``, the RPC's cursor), burns and mints are recorded (the same
   event again is a no-op: keyed by its id), the range's pending burns are settled
   (:func:`core.bridges.redemptions.credit_final`, each ledger's hash re-read), then the
   cursor moves past the range.

A crash re-reads the range: recording is a no-op, settling is exactly once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from prometheus_client import Counter, Gauge

from chain.stellar.client import BurnEvent, StellarClient
from core.bridges.redemptions import (
    ChainToken,
    Outcome,
    RedemptionKey,
    advance_cursor,
    credit_final,
    next_block,
)
from core.bridges.stellar import DECIMALS, StellarToken, stellar_tokens
from core.bridges.stellar_in import SacEvent, record_burns, record_mints
from core.ledger import Ledger
from core.types import Actor, Role

log = logging.getLogger(__name__)

STELLAR_IN_ACTOR = Actor("worker:stellar-bridge-in", Role.SYSTEM)
PAGE_LEDGERS = 1000
WATCHER_LAG = Gauge(
    "valueos_stellar_watcher_lag_ledgers",
    "Ledgers between the Stellar watcher's cursor and the RPC's latest ledger",
    ["asset"],
)
WATCHER_BEHIND = Counter(
    "valueos_stellar_watcher_behind",
    "Passes that found the cursor near or past the RPC's retention window",
    ["asset", "severity"],
)


@dataclass
class StellarInPass:
    latest: int = 0
    ranges: int = 0
    recorded: int = 0
    mints: int = 0
    settled: dict[RedemptionKey, Outcome] = field(default_factory=dict)
    #: assets whose cursor lags more than the alarm fraction of the window (or fell out of it)
    alarms: dict[str, str] = field(default_factory=dict)


async def _read_range(
    client: StellarClient, token: StellarToken, start: int, end: int, limit: int
) -> list[BurnEvent]:
    """Every burn and mint event of ``token``'s SAC in ledgers [start, end), page by page."""
    found: list[BurnEvent] = []
    events, cursor, _ = await client.events(
        [token.contract], start_ledger=start, end_ledger=end, limit=limit
    )
    while True:
        found += [e for e in events if e.ledger < end]
        if len(events) < limit or (events and events[-1].ledger >= end):
            return found
        events, cursor, _ = await client.events([token.contract], cursor=cursor, limit=limit)


async def _sac_events(client: StellarClient, events: list[BurnEvent]) -> list[SacEvent]:
    hashes: dict[int, bytes] = {}
    out = []
    for e in events:
        if e.ledger not in hashes:
            found = await client.ledger_hash(e.ledger)
            if found is None:
                raise RuntimeError(f"ledger {e.ledger} has no hash at the RPC")
            hashes[e.ledger] = found
        out.append(SacEvent(e.id, e.ledger, hashes[e.ledger], e.tx_hash, e.op_index,
                            e.event_index, e.address, e.amount))  # fmt: skip
    return out


async def stellar_in_pass(
    ledger: Ledger,
    client: StellarClient,
    *,
    chain_id: int,
    page_ledgers: int = PAGE_LEDGERS,
    limit: int = 200,
    start_ledger: int | None = None,
    alarm_fraction: float = 0.5,
) -> StellarInPass:
    oldest, latest = await client.retention()
    window = latest - oldest + 1
    result = StellarInPass(latest=latest)
    for token in await stellar_tokens(ledger, chain_id):
        cursor = await next_block(
            ledger, chain_id, token.contract, start=start_ledger if start_ledger else oldest
        )
        lag = latest - cursor + 1
        WATCHER_LAG.labels(token.asset).set(lag)
        if cursor < oldest:
            WATCHER_BEHIND.labels(token.asset, "lost").inc()
            result.alarms[token.asset] = (
                f"cursor {cursor} is below the RPC's oldest ledger {oldest}: events were lost "
                "to its retention window; read them from an archive before moving on"
            )
            log.error("stellar watcher %s: %s", token.asset, result.alarms[token.asset])
            continue
        if lag > window * alarm_fraction:
            WATCHER_BEHIND.labels(token.asset, "warning").inc()
            result.alarms[token.asset] = (
                f"cursor {cursor} lags the latest ledger {latest} by {lag} of the RPC's "
                f"{window}-ledger window"
            )
            log.warning("stellar watcher %s: %s", token.asset, result.alarms[token.asset])
        chain_token = ChainToken(token.asset, token.contract, DECIMALS)
        while cursor <= latest:
            end = min(latest + 1, cursor + page_ledgers)
            read = [e for e in await _read_range(client, token, cursor, end, limit)
                    if e.asset == token.sep11 and e.contract == token.contract]  # fmt: skip
            events = await _sac_events(client, read)
            result.recorded += await record_burns(
                ledger, token, [e for e, r in zip(events, read, strict=True) if r.kind == "burn"],
                STELLAR_IN_ACTOR,
            )  # fmt: skip
            result.mints += await record_mints(
                ledger, token, [e for e, r in zip(events, read, strict=True) if r.kind == "mint"]
            )
            result.settled |= await credit_final(
                ledger, chain_id, chain_token, up_to_block=end - 1, canonical=client.ledger_hash,
                actor=STELLAR_IN_ACTOR,
            )  # fmt: skip
            if not await advance_cursor(ledger, chain_id, token.contract, cursor, end):
                log.warning("stellar watcher %s: another pass moved the cursor", token.asset)
                break
            result.ranges += 1
            cursor = end
    for key, outcome in result.settled.items():
        log.info("stellar redemption %s: %s", key, outcome)
    return result
