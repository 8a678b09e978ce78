"""``valueos trust export [--out FILE]``: the trust file auditors pin (:mod:`chain.evm.trust`).

Reads the configured chain (``ETH_RPC_URL``), anchor contract (``VALUEOS_ANCHOR_CONTRACT``)
and ledger id (``VALUEOS_LEDGER_ID``), checks that the contract anchors this ledger id, and
writes ``{"version", "chain_id", "anchor_contract", "ledger_id", "confirmations"}`` (to stdout
without ``--out``). Publish it out of band; ``valueos verify --trust FILE`` then refuses
bundles of any other chain, contract or ledger.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from chain.evm.client import ChainError, connect
from chain.evm.settings import anchor_settings
from chain.evm.trust import Trust, export_trust
from core.settings import epoch_settings


async def _export() -> Trust:
    settings = anchor_settings()
    if not settings.rpc_url or not settings.contract_address:
        raise ChainError("trust export needs ETH_RPC_URL and VALUEOS_ANCHOR_CONTRACT")
    w3 = connect(settings.rpc_url)
    try:
        return await export_trust(
            w3, settings.contract_address, epoch_settings().ledger_id, settings.confirmations
        )
    finally:
        await w3.provider.disconnect()


def main(command: str, argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=f"valueos {command}", description=__doc__)
    parser.add_argument("action", choices=["export"])
    parser.add_argument("--out", type=Path, default=None, help="write the trust file here")
    ns = parser.parse_args(argv)
    try:
        trust = asyncio.run(_export())
    except (ChainError, ValueError) as exc:
        print(f"valueos {command}: {exc}")
        return 1
    text = json.dumps(trust.to_json(), indent=2) + "\n"
    if ns.out is None:
        print(text, end="")
    else:
        ns.out.parent.mkdir(parents=True, exist_ok=True)
        ns.out.write_text(text)
        print(f"wrote {ns.out}")
    return 0
