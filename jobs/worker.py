"""``valueos worker``: wire, schedule the jobs (:mod:`jobs.schedule`), run until stopped.

With anchoring on (the default) the worker needs a chain: ``ETH_RPC_URL``, or a local dev
anvil it starts itself (:mod:`jobs.wiring`). With anchoring off (``VALUEOS_ANCHORING=off``
or ``--no-anchoring``) it touches no chain and runs only the housekeeping jobs and the
self-audit (against the stored rows and trees, without the chain).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from functools import partial

from chain.evm.client import connect
from chain.evm.settings import anchor_settings, bridge_signer
from chain.stellar.settings import stellar_settings
from core.risk.loop import RiskLoop
from core.settings import epoch_settings
from jobs import wiring
from jobs.anchor import AnchorJob
from jobs.audit import audit_job
from jobs.risk import RISK_ACTOR, RiskSettings, refresh_limits, risk_pass
from jobs.schedule import start_scheduler, worker_jobs
from jobs.settings import WorkerSettings

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerOptions:
    settings: WorkerSettings
    #: seconds between seal+anchor runs; None: ``VALUEOS_ANCHOR_INTERVAL_S``
    anchor_interval_s: float | None = None
    confirmations: int | None = None


async def run_worker(options: WorkerOptions, stop: asyncio.Event) -> int:
    """Run the scheduled jobs until ``stop`` is set."""
    settings = options.settings
    async with wiring.ledger() as led, contextlib.AsyncExitStack() as stack:
        job: AnchorJob | None = None
        bridge_out = bridge_in = bridge_supply = None
        interval = 0.0
        risk_settings = RiskSettings.from_env()
        feeds_w3 = None
        if settings.anchoring:
            chain = anchor_settings()
            interval = options.anchor_interval_s or chain.interval_s
            job = await stack.enter_async_context(
                wiring.anchoring(led, chain, options.confirmations)
            )
            bridge_in = wiring.bridge_in_job(
                led, job, page_blocks=settings.bridge_in_page_blocks,
                start_block=settings.bridge_in_start_block,
            )  # fmt: skip
            bridge_supply = wiring.bridge_supply_job(
                led, job, start_block=settings.bridge_in_start_block
            )
            if risk_settings.feeds and chain.rpc_url:
                feeds_w3 = connect(chain.rpc_url)
            minter = bridge_signer()
            if minter is not None:
                bridge_out = wiring.bridge_out_job(led, job, minter)
        stellar, stellar_client = wiring.stellar_jobs(
            led, stellar_settings(), every_s=settings.bridge_interval_s,
            supply_every_s=settings.bridge_supply_interval_s,
        )  # fmt: skip
        if stellar_client is not None:
            stack.push_async_callback(stellar_client.close)
        risk_loop = RiskLoop(led, RISK_ACTOR, caps=risk_settings.caps)
        jobs = worker_jobs(
            led,
            job,
            anchor_interval_s=interval,
            housekeeping_interval_s=settings.housekeeping_interval_s,
            prune_interval_s=settings.prune_interval_s,
            bridge_out=bridge_out,
            bridge_interval_s=settings.bridge_interval_s,
            bridge_in=bridge_in,
            bridge_supply=bridge_supply,
            bridge_supply_interval_s=settings.bridge_supply_interval_s,
            audit=audit_job(led, job.client if job else None, epoch_settings().ledger_id),
            audit_interval_s=settings.audit_interval_s,
            risk=partial(risk_pass, led, risk_loop, risk_settings, feeds_w3),
            risk_limits=partial(refresh_limits, risk_loop),
            risk_interval_s=risk_settings.interval_s,
            extra=stellar,
        )
        scheduler = start_scheduler(jobs)
        try:
            if job is not None:
                what = f"seal+anchor every {interval:g}s, contract {job.client.address}"
            else:
                what = "anchoring off, no chain: housekeeping only (and the self-audit)"
            print(f"worker running: {what}; jobs: {', '.join(j.id for j in jobs)}", flush=True)
            await stop.wait()
        finally:
            scheduler.shutdown(wait=False)
    return 0
