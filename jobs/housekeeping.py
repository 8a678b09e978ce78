"""The housekeeping job bodies: no chain involved, each one pass over the database.

* :func:`expire_holds`: void every pending hold past its deadline (``Ledger.expire_holds``);
* :func:`p2p_housekeeping`: expire due P2P requests (:func:`core.p2p.expire_due`) and finish
  settlements a crash interrupted (:func:`core.p2p.resume_settling`);
* :func:`prune_policy_usage`: delete the rolling-limit buckets no window counts any more
  (:func:`core.policy.versions.prune_expired_usage`);
* :func:`offline_sweep`: finish offline allowances a crash left OPENING and void the holds of
  failed ones (:func:`core.offline.opening.sweep`).

Each returns what it did (counts), for the log and the tests.
"""

from __future__ import annotations

import logging

from core import p2p
from core.ledger import Ledger
from core.offline import opening
from core.policy.versions import prune_expired_usage

log = logging.getLogger(__name__)


async def expire_holds(ledger: Ledger) -> int:
    expired = await ledger.expire_holds()
    if expired:
        log.warning("expired %d holds", expired)
    return expired


async def p2p_housekeeping(ledger: Ledger) -> tuple[int, int]:
    """(requests expired, settlements finished)."""
    expired = await p2p.expire_due(ledger)
    resumed = await p2p.resume_settling(ledger)
    if expired or resumed:
        log.warning("p2p: expired %d requests, finished %d settlements", expired, resumed)
    return expired, resumed


async def prune_policy_usage(ledger: Ledger) -> int:
    pruned = await prune_expired_usage(ledger)
    if pruned:
        log.warning("pruned %d expired policy usage buckets", pruned)
    return pruned


async def offline_sweep(ledger: Ledger) -> tuple[int, int]:
    """(allowances finished, holds voided)."""
    finished, voided = await opening.sweep(ledger)
    if finished or voided:
        log.warning("offline: finished %d unfinished allowances, voided %d holds", finished, voided)
    return finished, voided
