"""``valueos worker`` and ``valueos anchor --now``.

Wiring: the database from ``DATABASE_URL`` (or the embedded PostgreSQL), migrated to head;
the chain from :class:`chain.evm.settings.AnchorSettings`. Without ``ETH_RPC_URL`` a *local* anvil
is started from ``node_modules`` with its state kept in ``.valueos/anvil-state.json`` and
LedgerAnchor deployed once (address kept in ``.valueos/anchor-contract``), signing with
anvil's first dev key unless a key is configured: a development convenience, not production.

The worker (APScheduler, asyncio) runs:
* ``seal_and_anchor`` every ``VALUEOS_ANCHOR_INTERVAL_S`` (hourly by default), first at start;
* ``confirm`` (advance broadcast/confirmed anchors to FINALIZED) every min(60 s, interval);
* ``expire_holds`` (``Ledger.expire_holds``) every ``VALUEOS_EXPIRE_HOLDS_INTERVAL_S``;
* ``p2p_housekeeping`` on the same interval: expire due P2P requests
  (:func:`core.p2p.expire_due`) and finish settlements a crash interrupted
  (:func:`core.p2p.resume_settling`);
* ``prune_policy_usage`` hourly: delete the rolling-limit buckets no window counts any
  more (:func:`core.policy_store.prune_usage`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import signal
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount

from chain.evm.anchor import AnchorClient, deploy_ledger_anchor
from chain.evm.anvil import AnvilNode, start_anvil
from chain.evm.client import ChainError, connect
from chain.evm.settings import AnchorSettings, SignerError, anchor_settings, load_signer
from core import p2p
from core.db import migrate, resolve_url
from core.epochs import raw_connection
from core.ledger import Ledger
from core.policy_store import prune_usage
from core.proofs import list_anchors
from core.settings import database_settings, epoch_settings
from jobs.anchor import AnchorConfigMismatch, AnchorJob

log = logging.getLogger(__name__)

LOCAL_DIR = Path(".valueos")


@contextlib.asynccontextmanager
async def _local_chain(
    settings: AnchorSettings, ledger_id: bytes
) -> AsyncIterator[tuple[str, str, LocalAccount]]:
    """A local anvil (persistent state) with LedgerAnchor deployed: (rpc url, address, signer)."""
    LOCAL_DIR.mkdir(exist_ok=True)  # noqa: ASYNC240 - local dev setup, once
    state = (LOCAL_DIR / "anvil-state.json").resolve()
    node: AnvilNode = await asyncio.to_thread(
        start_anvil, chain_id=31337, extra_args=["--state", str(state), "--block-time", "1"]
    )
    try:
        signer = load_signer(settings) if (settings.key or settings.keystore) else None
        if signer is None:
            signer = Account.from_key(str(node.config()["private_keys"][0]))
        w3 = connect(node.rpc_url)
        address_file = LOCAL_DIR / "anchor-contract"
        address = address_file.read_text().strip() if address_file.exists() else ""
        if not address or not await w3.eth.get_code(w3.to_checksum_address(address)):
            address = await deploy_ledger_anchor(w3, signer, ledger_id)
            address_file.write_text(address + "\n")
            log.warning("deployed LedgerAnchor at %s on the local anvil", address)
        yield node.rpc_url, address, signer
    finally:
        await asyncio.to_thread(node.stop)


@contextlib.asynccontextmanager
async def _wired(confirmations: int | None) -> AsyncIterator[tuple[AnchorJob, Ledger]]:
    settings = anchor_settings()
    if confirmations is not None:
        settings = dataclasses.replace(settings, confirmations=confirmations)
    ledger_id = epoch_settings().ledger_id
    await asyncio.to_thread(migrate, resolve_url(database_settings()))
    ledger = Ledger.connect()
    try:
        async with contextlib.AsyncExitStack() as stack:
            if settings.rpc_url:
                if not settings.contract_address:
                    raise SignerError("ETH_RPC_URL is set but VALUEOS_ANCHOR_CONTRACT is not")
                rpc, address, signer = (
                    settings.rpc_url,
                    settings.contract_address,
                    load_signer(settings),
                )
                confirms = settings.confirmations
            else:
                rpc, address, signer = await stack.enter_async_context(
                    _local_chain(settings, ledger_id)
                )
                confirms = confirmations or 2  # a dev chain: 2 blocks of 1 s
            client = AnchorClient(connect(rpc), address, signer)
            job = AnchorJob(
                ledger.engine,
                client,
                ledger_id,
                confirmations=confirms,
                seal_empty=epoch_settings().seal_empty,
                bump_after_s=settings.bump_after_s,
                max_fee_cap=settings.max_fee_cap_wei,
                finality=settings.finality,
            )
            try:
                await job.check_config()  # refuse to start against another chain or contract
                yield job, ledger
            finally:
                await client.w3.provider.disconnect()
    finally:
        await ledger.close()


async def _anchor_now(ns: argparse.Namespace) -> int:
    async with _wired(ns.confirmations) as (job, _ledger):
        pending = await job.run_until_final(
            deadline_s=0 if ns.no_wait else anchor_settings().wait_timeout_s,
            poll=1.0,
            force_seal=ns.allow_empty,
        )
        records = await job_anchors(job)
    print(json.dumps(records, indent=2))
    if pending:
        print(f"not final yet: epochs {[p.epoch for p in pending]}")
        return 0 if ns.no_wait else 1
    return 0


async def job_anchors(job: AnchorJob) -> list[dict[str, Any]]:
    return await list_anchors(job.engine, limit=5)


async def _worker(ns: argparse.Namespace) -> int:
    from apscheduler.schedulers.asyncio import AsyncIOScheduler  # noqa: PLC0415

    settings = anchor_settings()
    interval = ns.interval or settings.interval_s
    async with _wired(ns.confirmations) as (job, ledger):
        scheduler = AsyncIOScheduler()

        async def seal_and_anchor() -> None:
            try:
                result = await job.run_once()
                log.warning("seal_and_anchor: sealed %s, built %s", result.sealed, result.built)
            except ChainError:
                log.exception("seal_and_anchor failed; retried on the next run")

        async def confirm() -> None:
            try:
                await job.anchor_pass()
            except ChainError:
                log.exception("confirm failed; retried on the next run")

        async def expire_holds() -> None:
            expired = await ledger.expire_holds()
            if expired:
                log.warning("expired %d holds", expired)

        async def p2p_housekeeping() -> None:
            expired = await p2p.expire_due(ledger)
            resumed = await p2p.resume_settling(ledger)
            if expired or resumed:
                log.warning("p2p: expired %d requests, finished %d settlements", expired, resumed)

        async def prune_policy_usage() -> None:
            async with raw_connection(ledger.engine) as conn:
                pruned = await prune_usage(conn)
            if pruned:
                log.warning("pruned %d expired policy usage buckets", pruned)

        scheduler.add_job(
            seal_and_anchor, "interval", seconds=interval, next_run_time=datetime.now(),
            max_instances=1, coalesce=True, id="seal_and_anchor",
        )  # fmt: skip
        scheduler.add_job(
            confirm, "interval", seconds=min(60.0, interval), max_instances=1, coalesce=True,
            id="confirm",
        )  # fmt: skip
        scheduler.add_job(
            expire_holds, "interval", seconds=settings.expire_holds_interval_s,
            max_instances=1, coalesce=True, id="expire_holds",
        )  # fmt: skip
        scheduler.add_job(
            p2p_housekeeping, "interval", seconds=settings.expire_holds_interval_s,
            max_instances=1, coalesce=True, id="p2p_housekeeping",
        )  # fmt: skip
        scheduler.add_job(
            prune_policy_usage, "interval", seconds=3600, max_instances=1, coalesce=True,
            id="prune_policy_usage",
        )  # fmt: skip
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        scheduler.start()
        print(f"worker running: seal+anchor every {interval:g}s, contract {job.client.address}")
        await stop.wait()
        scheduler.shutdown(wait=False)
    return 0


def main(command: str, argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=f"valueos {command}")
    parser.add_argument("--confirmations", type=int, default=None)
    if command == "worker":
        parser.add_argument("--interval", type=float, default=None, help="seconds (default 3600)")
    else:
        parser.add_argument("--now", action="store_true", required=True, help="run it now")
        parser.add_argument("--no-wait", action="store_true", help="do not wait for finality")
        parser.add_argument("--allow-empty", action="store_true", help="seal an empty epoch")
    ns = parser.parse_args(argv)
    logging.getLogger("jobs").setLevel(logging.INFO)
    try:
        return asyncio.run(_worker(ns) if command == "worker" else _anchor_now(ns))
    except (SignerError, ChainError, AnchorConfigMismatch) as exc:
        print(f"valueos {command}: {exc}")
        return 1
