"""The risk jobs: read the Chainlink feeds, run a risk tick, charge the day's interest and
deliver margin calls to the card app (``risk``); bring the lines' stored limits to the current
prices (``risk_limits``). Each body is one call into ``core.risk`` (or
``chain.evm.price_feed`` for the read).

Settings (environment):

``VALUEOS_RISK_INTERVAL_S``     seconds between risk ticks (feeds read first); default 10
``VALUEOS_PRICE_FEEDS``         ``ASSET=0xfeed,ASSET2=0xfeed2``: Chainlink feeds to read (on the
                                worker's chain, ``ETH_RPC_URL``); none by default
``VALUEOS_CARD_WEBHOOK_URL``    where margin calls are POSTed; unset: they wait in
                                ``risk_events``
``VALUEOS_CARD_WEBHOOK_SECRET`` the HMAC key margin calls are signed with (required with the URL)
``VALUEOS_RISK_CAP_GLOBAL``     collateral value one tick may liquidate, all assets, in debt
                                minor units; default 100000000 ($1M at scale 2)
``VALUEOS_RISK_CAP_ASSET``      the same per collateral asset; default 25000000 ($250k)
``VALUEOS_RISK_CAPS``           ``ASSET=units,ASSET2=units``: per-asset caps overriding the
                                default (``core.risk.loop.LiquidationCaps``)
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from web3 import AsyncWeb3

from chain.evm.client import ChainError
from chain.evm.price_feed import read_round
from core.ledger import Ledger
from core.risk.lines import CreditLines
from core.risk.loop import (
    DEFAULT_ASSET_CAP,
    DEFAULT_GLOBAL_CAP,
    LiquidationCaps,
    RiskLoop,
    TickReport,
    deliver_notices,
)
from core.risk.prices import Verdict, record_round
from core.types import Actor, Role

log = logging.getLogger(__name__)

RISK_ACTOR = Actor("worker:risk", Role.SYSTEM)


@dataclass(frozen=True, slots=True)
class RiskSettings:
    interval_s: float = 10.0
    feeds: dict[str, str] = field(default_factory=dict)
    card_webhook_url: str | None = None
    card_webhook_secret: str | None = field(default=None, repr=False)
    caps: LiquidationCaps = field(default_factory=LiquidationCaps)

    @classmethod
    def from_env(cls) -> RiskSettings:
        env = os.environ
        feeds = {}
        for pair in filter(None, env.get("VALUEOS_PRICE_FEEDS", "").split(",")):
            asset, _, address = pair.partition("=")
            if not address:
                raise ValueError("VALUEOS_PRICE_FEEDS must read ASSET=0xaddress,...")
            feeds[asset.strip()] = address.strip()
        url = env.get("VALUEOS_CARD_WEBHOOK_URL") or None
        secret = env.get("VALUEOS_CARD_WEBHOOK_SECRET") or None
        if url and not secret:
            raise ValueError("VALUEOS_CARD_WEBHOOK_URL needs VALUEOS_CARD_WEBHOOK_SECRET")
        per_asset = {}
        for pair in filter(None, env.get("VALUEOS_RISK_CAPS", "").split(",")):
            asset, _, units = pair.partition("=")
            if not units.strip().isdigit():
                raise ValueError("VALUEOS_RISK_CAPS must read ASSET=units,... (integers)")
            per_asset[asset.strip()] = int(units)
        caps = LiquidationCaps(
            int(env.get("VALUEOS_RISK_CAP_GLOBAL", DEFAULT_GLOBAL_CAP)),
            int(env.get("VALUEOS_RISK_CAP_ASSET", DEFAULT_ASSET_CAP)),
            per_asset,
        )
        return cls(float(env.get("VALUEOS_RISK_INTERVAL_S", "10")), feeds, url, secret, caps)


async def poll_feeds(
    ledger: Ledger, w3: AsyncWeb3[Any], feeds: dict[str, str]
) -> dict[str, Verdict]:
    """Read every feed's latest round and record it; an unreadable feed is logged (its asset
    then freezes when its price outlives the heartbeat)."""
    verdicts: dict[str, Verdict] = {}
    for asset, feed in feeds.items():
        try:
            round_ = await read_round(w3, asset, feed)
        except ChainError as exc:
            log.warning("price feed of %s unreadable: %s", asset, exc)
            continue
        verdicts[asset] = await record_round(ledger.engine, round_, RISK_ACTOR)
    return verdicts


async def risk_tick(loop: RiskLoop) -> TickReport:
    report = await loop.tick(refresh=False)
    if report.skipped:
        log.info("risk tick skipped: another worker's tick is running")
    elif report.actions or report.frozen or report.deferred:
        log.info("risk tick %s: %s over %s positions, frozen %s, %s sales cut to a partial "
                 "lot, %s capped to a later tick", report.tick, report.actions,
                 report.evaluated, report.frozen, report.cut, report.deferred)  # fmt: skip
    return report


async def refresh_limits(loop: RiskLoop) -> None:
    """The worker's ``risk_limits`` job: the stored limits of lines whose asset's price moved,
    a chunk of lines per transaction (its own job: the risk ticks do not wait for it)."""
    await loop.refresh_moved_prices()


async def daily_interest(ledger: Ledger) -> int:
    """Charge today's (UTC) interest; run it as often as you like, it charges once a day."""
    return await CreditLines(ledger).accrue_interest(datetime.now(UTC).date(), RISK_ACTOR)


async def notify_card_app(ledger: Ledger, settings: RiskSettings) -> int:
    if not settings.card_webhook_url or not settings.card_webhook_secret:
        return 0
    url = settings.card_webhook_url

    async def send(body: bytes, headers: dict[str, str]) -> bool:
        try:
            async with httpx.AsyncClient(timeout=10.0) as client:
                answer = await client.post(
                    url, content=body, headers=headers | {"content-type": "application/json"}
                )
        except httpx.HTTPError as exc:
            log.warning("margin call delivery failed: %s", exc)
            return False
        return answer.is_success

    return await deliver_notices(ledger, send, settings.card_webhook_secret, now_s=int(time.time()))


async def risk_pass(
    ledger: Ledger, loop: RiskLoop, settings: RiskSettings, w3: AsyncWeb3[Any] | None
) -> TickReport:
    """The worker's risk job: feeds (with a chain), one tick, today's interest, margin calls."""
    if w3 is not None and settings.feeds:
        await poll_feeds(ledger, w3, settings.feeds)
    report = await risk_tick(loop)
    await daily_interest(ledger)
    await notify_card_app(ledger, settings)
    return report
