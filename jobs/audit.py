"""The self-audit: scheduled in the worker, and ``valueos audit`` on demand.

``valueos audit [--epochs A..B]``
    rebuild the sealed epochs (all by default) from the stored rows and compare them with the
    stored trees, roots and headers and, with ``ETH_RPC_URL`` and ``VALUEOS_ANCHOR_CONTRACT``
    set, with what the contract holds (:func:`core.integrity.audit`). Prints a JSON report;
    exit 1 when anything differs (each finding is also an alarm).
``valueos audit alarms``
    the open integrity alarms (JSON); exit 1 while one is open.
``valueos audit ack --by NAME --reason TEXT [--alarm ID ...]``
    acknowledge open alarms (all by default): sealing, anchoring and bridge mints resume.
    Recorded in the audit log with the name and the reason.

The worker runs a full pass every ``VALUEOS_AUDIT_INTERVAL_S`` (6 h: every sealed epoch is
checked at least once a day) against the anchoring chain (:func:`audit_job`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict
from typing import Any

from eth_account import Account

from chain.evm.anchor import AnchorClient
from chain.evm.client import ChainError, connect
from chain.evm.settings import anchor_settings
from core import integrity
from core.epochs import EpochRoots
from core.errors import LedgerError
from core.integrity import AuditReport, OnChainHeader, OnChainRoots
from core.ledger import Ledger
from core.settings import epoch_settings
from core.types import Actor, Role
from jobs import wiring

log = logging.getLogger(__name__)


def chain_reader(client: AnchorClient) -> OnChainRoots:
    """The contract's stored header of a rebuilt epoch and its ``isAnchored`` of the rebuilt
    header fields; None for an epoch before the contract's genesis (an earlier contract's)."""
    genesis: list[int] = []

    async def read(roots: EpochRoots) -> OnChainHeader | None:
        if not genesis:
            genesis.append(await client.genesis_epoch())
        if roots.epoch < genesis[0]:
            return None
        held = await client.onchain_epoch(roots.epoch)
        accepts = held.anchored and await client.is_anchored(
            epoch=roots.epoch, prev_header=roots.prev_header, entries_root=roots.entries_root,
            balances_root=roots.balances_root, first_seq=roots.first_seq,
            last_seq=roots.last_seq, leaf_count=roots.leaf_count,
        )  # fmt: skip
        return OnChainHeader(held.header, accepts)

    return read


def audit_job(
    led: Ledger, client: AnchorClient | None, ledger_id: bytes
) -> Callable[[], Awaitable[object]]:
    """One full self-audit pass (the worker's scheduled body); never raises a chain error."""
    reader = chain_reader(client) if client is not None else None

    async def body() -> object:
        try:
            report = await integrity.audit(led.engine, ledger_id, onchain=reader)
        except ChainError:
            log.exception("self-audit could not read the chain; retried on the next run")
            return None
        log.warning(
            "self-audit: epochs %s..%s, %d entries in %.2f s: %s",
            report.first_epoch, report.last_epoch, report.entries, report.seconds,
            "ok" if report.ok else f"{len(report.findings)} findings",
        )  # fmt: skip
        return report

    return body


def parse_epochs(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)\.\.(\d+)", text)
    if m is None or int(m[1]) > int(m[2]) or int(m[1]) < 1:
        raise argparse.ArgumentTypeError("epochs are A..B with 1 <= A <= B")
    return int(m[1]), int(m[2])


@contextlib.asynccontextmanager
async def _reader() -> AsyncIterator[OnChainRoots | None]:
    settings = anchor_settings()
    if not settings.rpc_url or not settings.contract_address:
        yield None
        return
    client = AnchorClient(connect(settings.rpc_url), settings.contract_address, Account.create())
    try:
        yield chain_reader(client)
    finally:
        await client.w3.provider.disconnect()


def _report(report: AuditReport, chain: bool) -> dict[str, Any]:
    return {
        "epochs": [report.first_epoch, report.last_epoch],
        "epochs_audited": report.epochs,
        "entries": report.entries,
        "seconds": round(report.seconds, 3),
        "compared_with_chain": chain,
        "ok": report.ok,
        "findings": [asdict(f) for f in report.findings],
    }


async def _run(ns: argparse.Namespace) -> int:
    async with wiring.ledger() as led:
        if ns.action == "alarms":
            alarms = await integrity.open_alarms(led.engine)
            print(json.dumps([asdict(a) for a in alarms], indent=2, default=str))
            return 1 if alarms else 0
        if ns.action == "ack":
            actor = Actor(f"operator:{ns.by}", Role.ADMIN)
            closed = await integrity.acknowledge(led.engine, actor, ns.reason, ns.alarm or None)
            print(json.dumps({"acknowledged": closed}))
            return 0
        first, last = ns.epochs or (None, None)
        async with _reader() as reader:
            report = await integrity.audit(
                led.engine, epoch_settings().ledger_id, first=first, last=last, onchain=reader
            )
        print(json.dumps(_report(report, reader is not None), indent=2))
        return 0 if report.ok else 1


def main(command: str, argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=f"valueos {command}", description=__doc__.split("\n")[0])
    parser.add_argument("action", nargs="?", choices=["run", "alarms", "ack"], default="run")
    parser.add_argument("--epochs", type=parse_epochs, default=None, help="A..B (default: all)")
    parser.add_argument("--by", help="ack: who acknowledges")
    parser.add_argument("--reason", help="ack: why it is safe to resume")
    parser.add_argument("--alarm", type=int, action="append", help="ack: this alarm id only")
    ns = parser.parse_args(argv)
    if ns.action == "ack" and not (ns.by and ns.reason):
        parser.error("ack needs --by NAME and --reason TEXT")
    try:
        return asyncio.run(_run(ns))
    except (LedgerError, ChainError) as exc:
        print(f"valueos {command}: {exc}")
        return 1
