"""The worker's job list: which body runs how often.

:func:`worker_jobs` is pure (it only names the bodies and their intervals), so the list
is tested without a scheduler; :func:`start_scheduler` hands it to APScheduler (asyncio).
Without an anchor job (``VALUEOS_ANCHORING=off``) only the housekeeping jobs are listed; the
bridge-out job is listed when the worker has a bridge minter key, the bridge-in job whenever it
has a chain; the self-audit always (compared with the chain when there is one).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from core.ledger import Ledger
from jobs import housekeeping
from jobs.anchor import AnchorJob
from jobs.seal_and_anchor import confirm_anchors, seal_and_anchor

#: the longest wait between two confirmation passes
CONFIRM_MAX_INTERVAL_S = 60.0


@dataclass(frozen=True, slots=True)
class ScheduledJob:
    id: str
    body: Callable[[], Awaitable[object]]
    every_s: float
    #: run once at start-up too, not only after the first interval
    at_start: bool = False


def worker_jobs(
    ledger: Ledger,
    anchor_job: AnchorJob | None,
    *,
    anchor_interval_s: float,
    housekeeping_interval_s: float,
    prune_interval_s: float,
    bridge_out: Callable[[], Awaitable[object]] | None = None,
    bridge_interval_s: float = 5.0,
    bridge_in: Callable[[], Awaitable[object]] | None = None,
    bridge_supply: Callable[[], Awaitable[object]] | None = None,
    bridge_supply_interval_s: float = 60.0,
    audit: Callable[[], Awaitable[object]] | None = None,
    audit_interval_s: float = 21600.0,
    risk: Callable[[], Awaitable[object]] | None = None,
    risk_limits: Callable[[], Awaitable[object]] | None = None,
    risk_interval_s: float = 10.0,
    extra: Sequence[ScheduledJob] = (),
) -> list[ScheduledJob]:
    jobs: list[ScheduledJob] = []
    if anchor_job is not None:
        jobs += [
            ScheduledJob(
                "seal_and_anchor",
                partial(seal_and_anchor, anchor_job),
                anchor_interval_s,
                at_start=True,
            ),
            ScheduledJob(
                "confirm",
                partial(confirm_anchors, anchor_job),
                min(CONFIRM_MAX_INTERVAL_S, anchor_interval_s),
            ),
        ]
    if bridge_out is not None:
        jobs.append(ScheduledJob("bridge_out", bridge_out, bridge_interval_s, at_start=True))
    if bridge_in is not None:
        jobs.append(ScheduledJob("bridge_in", bridge_in, bridge_interval_s, at_start=True))
    if bridge_supply is not None:
        jobs.append(ScheduledJob("bridge_supply", bridge_supply, bridge_supply_interval_s))
    if audit is not None:
        jobs.append(ScheduledJob("self_audit", audit, audit_interval_s))
    if risk is not None:
        jobs.append(ScheduledJob("risk", risk, risk_interval_s, at_start=True))
    if risk_limits is not None:
        jobs.append(ScheduledJob("risk_limits", risk_limits, risk_interval_s, at_start=True))
    jobs += extra
    return [
        *jobs,
        ScheduledJob(
            "expire_holds", partial(housekeeping.expire_holds, ledger), housekeeping_interval_s
        ),
        ScheduledJob(
            "p2p_housekeeping",
            partial(housekeeping.p2p_housekeeping, ledger),
            housekeeping_interval_s,
        ),
        ScheduledJob(
            "offline_sweep",
            partial(housekeeping.offline_sweep, ledger),
            housekeeping_interval_s,
        ),
        ScheduledJob(
            "prune_policy_usage",
            partial(housekeeping.prune_policy_usage, ledger),
            prune_interval_s,
        ),
    ]


def start_scheduler(jobs: list[ScheduledJob]) -> Any:
    """A started AsyncIOScheduler running ``jobs`` (one instance of each at a time)."""
    from apscheduler.schedulers.asyncio import AsyncIOScheduler  # noqa: PLC0415

    scheduler = AsyncIOScheduler()
    for job in jobs:
        # an explicit next_run_time=None would add the job paused: pass it only to run now
        first: dict[str, Any] = {"next_run_time": datetime.now()} if job.at_start else {}
        scheduler.add_job(
            job.body,
            "interval",
            seconds=job.every_s,
            max_instances=1,
            coalesce=True,
            id=job.id,
            **first,
        )
    scheduler.start()
    return scheduler
