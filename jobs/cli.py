"""``valueos worker`` and ``valueos anchor --now``: arguments -> run.

The worker (:mod:`jobs.worker`) runs the scheduled jobs of :mod:`jobs.schedule`: seal and
anchor, confirm (unless anchoring is off: ``VALUEOS_ANCHORING=off`` or ``--no-anchoring``),
hold expiry, P2P expiry and settlement recovery, pruning of expired rolling-limit buckets.
``anchor --now`` seals the open epoch, anchors it and waits for finality. The wiring
(database, chain, local dev anvil) is :mod:`jobs.wiring`.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import signal

from chain.evm.anvil import AnvilError
from chain.evm.client import ChainError
from chain.evm.settings import SignerError, anchor_settings
from jobs import wiring
from jobs.anchor import AnchorConfigMismatch
from jobs.seal_and_anchor import anchor_until_final
from jobs.settings import WorkerSettings, worker_settings
from jobs.worker import WorkerOptions, run_worker


async def _anchor_now(ns: argparse.Namespace) -> int:
    settings = anchor_settings()
    async with wiring.ledger() as led, wiring.anchoring(led, settings, ns.confirmations) as job:
        records, pending = await anchor_until_final(
            led, job, wait_s=0 if ns.no_wait else settings.wait_timeout_s, force_seal=ns.allow_empty
        )
    print(json.dumps(records, indent=2))
    if pending:
        print(f"not final yet: epochs {pending}")
        return 0 if ns.no_wait else 1
    return 0


async def _worker(ns: argparse.Namespace, settings: WorkerSettings) -> int:
    if ns.no_anchoring:
        settings = dataclasses.replace(settings, anchoring=False)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    options = WorkerOptions(settings, ns.interval, ns.confirmations)
    return await run_worker(options, stop)


def main(command: str, argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=f"valueos {command}")
    parser.add_argument("--confirmations", type=int, default=None)
    if command == "worker":
        parser.add_argument("--interval", type=float, default=None, help="seconds (default 3600)")
        parser.add_argument(
            "--no-anchoring",
            action="store_true",
            help="housekeeping only, no chain (same as VALUEOS_ANCHORING=off)",
        )
    else:
        parser.add_argument("--now", action="store_true", required=True, help="run it now")
        parser.add_argument("--no-wait", action="store_true", help="do not wait for finality")
        parser.add_argument("--allow-empty", action="store_true", help="seal an empty epoch")
    ns = parser.parse_args(argv)
    logging.getLogger("jobs").setLevel(logging.INFO)
    try:
        settings = worker_settings()
    except ValueError as exc:  # a malformed VALUEOS_* value
        print(f"valueos {command}: {exc}")
        return 1
    try:
        return asyncio.run(_worker(ns, settings) if command == "worker" else _anchor_now(ns))
    except (SignerError, ChainError, AnvilError, AnchorConfigMismatch) as exc:
        print(f"valueos {command}: {exc}")
        return 1
