"""The anchoring job bodies; the state machine itself is :class:`jobs.anchor.AnchorJob`.

* :func:`seal_and_anchor` (scheduled): seal the open epoch, build its trees, advance every
  anchor as far as it goes without waiting;
* :func:`confirm_anchors` (scheduled): advance broadcast and confirmed anchors towards
  FINALIZED;
* :func:`anchor_until_final` (``valueos anchor --now``): one run, then wait for finality.

A chain error is logged and the scheduled run is retried on the next tick.
"""

from __future__ import annotations

import logging
from typing import Any

from chain.evm.client import ChainError
from core.ledger import Ledger
from core.proofs import list_anchors
from jobs.anchor import AnchorJob

log = logging.getLogger(__name__)


async def seal_and_anchor(job: AnchorJob) -> None:
    try:
        result = await job.run_once()
        if not result.paused:
            log.warning("seal_and_anchor: sealed %s, built %s", result.sealed, result.built)
    except ChainError:
        log.exception("seal_and_anchor failed; retried on the next run")


async def confirm_anchors(job: AnchorJob) -> None:
    try:
        await job.anchor_pass()
    except ChainError:
        log.exception("confirm failed; retried on the next run")


async def anchor_until_final(
    ledger: Ledger, job: AnchorJob, *, wait_s: float, force_seal: bool
) -> tuple[list[dict[str, Any]], list[int]]:
    """(the latest anchors, the epochs not final yet when ``wait_s`` ran out)."""
    pending = await job.run_until_final(deadline_s=wait_s, poll=1.0, force_seal=force_seal)
    return await list_anchors(ledger, limit=5), [p.epoch for p in pending]
