"""``valueos deploy-anchor``: deploy LedgerAnchor on ``ETH_RPC_URL`` for this ledger.

The signer (``VALUEOS_ANCHOR_KEY`` or the keystore) becomes the contract's admin and
anchorer. ``--out FILE`` writes the address there; when FILE already names a contract
that has code on the chain, nothing is deployed again and its address is printed, so a
one-shot deploy step (docker-compose's ``deploy-anchor`` service) can run on every start.
The worker reads the address from ``VALUEOS_ANCHOR_CONTRACT`` or from the file named by
``VALUEOS_ANCHOR_CONTRACT_FILE``.

``--continue-from OLD`` deploys a contract that continues the header chain of the LedgerAnchor
at OLD (either storage layout): its genesis is OLD's last anchored epoch and that epoch's
header, so the next epoch anchored on the new contract chains onto it (see the README's
"Migrating an existing deployment").

:func:`ensure_ledger_anchor` ("deploy unless the known address has code") is the one such
function: this command and the worker's local dev anvil (:mod:`jobs.wiring`) both use it.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount
from web3 import AsyncWeb3

from chain.evm.anchor import chain_head, deploy_ledger_anchor
from chain.evm.client import ChainError, connect
from chain.evm.settings import SignerError, anchor_settings, load_signer
from core.settings import epoch_settings


async def ensure_ledger_anchor(
    w3: AsyncWeb3[Any],
    signer: Callable[[], LocalAccount],
    ledger_id: bytes,
    known: str | None,
    continue_from: str | None = None,
) -> str:
    """The checksum address of ``known`` if it has code on the chain, else of a new
    LedgerAnchor deployed for ``ledger_id`` by ``signer()`` (called only to deploy), continuing
    the header chain of ``continue_from`` when given."""
    if known and await w3.eth.get_code(w3.to_checksum_address(known)):
        return w3.to_checksum_address(known)
    epoch, header = (0, b"\x00" * 32)
    if continue_from is not None:
        epoch, header = await chain_head(w3, continue_from, ledger_id)
    return await deploy_ledger_anchor(
        w3, signer(), ledger_id, genesis_epoch=epoch, genesis_header=header
    )


async def _deploy(known: str | None, continue_from: str | None = None) -> str:
    settings = anchor_settings()
    if not settings.rpc_url:
        raise ChainError("deploy-anchor needs ETH_RPC_URL")
    w3 = connect(settings.rpc_url)
    try:
        return await ensure_ledger_anchor(
            w3, lambda: load_signer(settings), epoch_settings().ledger_id, known, continue_from
        )
    finally:
        await w3.provider.disconnect()


def main(command: str, argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=f"valueos {command}", description=__doc__)
    parser.add_argument("--out", type=Path, default=None, help="file to write the address to")
    parser.add_argument(
        "--continue-from",
        default=None,
        metavar="ADDRESS",
        help="continue the header chain of the LedgerAnchor at ADDRESS (migration)",
    )
    ns = parser.parse_args(argv)
    out: Path | None = ns.out
    known = out.read_text().strip() if out is not None and out.exists() else None
    try:
        address = asyncio.run(_deploy(known, ns.continue_from))
    except (SignerError, ChainError, ValueError) as exc:
        print(f"valueos {command}: {exc}")
        return 1
    if out is not None and address != known:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(address + "\n")
    print(address)
    return 0
