"""``valueos deploy-token ASSET``: deploy the asset's BridgeToken on ``ETH_RPC_URL`` and record it.

The token mirrors the asset (name, symbol = the asset code, decimals = its scale unless
``--decimals`` says more). The anchor signer (``VALUEOS_ANCHOR_KEY`` or its keystore) becomes
the token's admin and pauser; the bridge minter (``VALUEOS_BRIDGE_KEY`` or
``VALUEOS_BRIDGE_KEY_FILE``) gets MINTER_ROLE. The caps have no defaults (a zero cap refuses
every mint): ``--per-transfer-cap`` and ``--window-cap`` are amounts in the asset's units,
``--window-seconds`` the refill period of the window cap. An asset already recorded is not
deployed again: its token's address is printed.
"""

from __future__ import annotations

import argparse
import asyncio

from chain.evm.bridge_token import deploy_bridge_token
from chain.evm.client import ChainError, connect
from chain.evm.settings import SignerError, anchor_settings, bridge_signer, load_signer
from core.bridges.tokens import get_token, register_token, to_token_units
from core.directory import Directory
from core.errors import LedgerError, UnknownBridgeToken
from core.types import Actor, Role
from jobs import wiring

ACTOR = Actor("cli:deploy-token", Role.ADMIN)


async def _deploy(ns: argparse.Namespace) -> tuple[str, bool]:
    """(the token's address, whether it was deployed now)."""
    settings = anchor_settings()
    if not settings.rpc_url:
        raise ChainError("deploy-token needs ETH_RPC_URL")
    async with wiring.ledger() as led:
        try:
            return (await get_token(led, ns.asset)).address, False
        except UnknownBridgeToken:
            pass
        minter = bridge_signer()
        if minter is None:
            raise SignerError("deploy-token needs the bridge minter: set VALUEOS_BRIDGE_KEY")
        admin = load_signer(settings)
        directory = Directory(led)
        asset = await led.accounts.get_asset(ns.asset)
        decimals = asset.scale if ns.decimals is None else ns.decimals
        if decimals < asset.scale:
            raise ValueError(f"--decimals must be at least the asset's scale ({asset.scale})")

        async def units(text: str, field: str) -> int:
            return to_token_units(
                await directory.parse(text, ns.asset, field), asset.scale, decimals
            )

        per_transfer = await units(ns.per_transfer_cap, "per_transfer_cap")
        window = await units(ns.window_cap, "window_cap")
        w3 = connect(settings.rpc_url)
        try:
            address = await deploy_bridge_token(
                w3, admin, name=asset.name, symbol=asset.code, decimals=decimals,
                admin=admin.address, minter=minter.address, pauser=admin.address,
                per_transfer_cap=per_transfer, window_cap=window,
                window_seconds=ns.window_seconds,
            )  # fmt: skip
            chain_id = int(await w3.eth.chain_id)
        finally:
            await w3.provider.disconnect()
        await register_token(
            led, asset=ns.asset, chain_id=chain_id, address=address, decimals=decimals, actor=ACTOR
        )
        return address, True


def main(command: str, argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=f"valueos {command}", description=__doc__)
    parser.add_argument("asset")
    parser.add_argument("--per-transfer-cap", required=True, help="in the asset's units")
    parser.add_argument("--window-cap", required=True, help="in the asset's units")
    parser.add_argument("--window-seconds", type=int, required=True)
    parser.add_argument("--decimals", type=int, default=None, help="default: the asset's scale")
    ns = parser.parse_args(argv)
    if ns.window_seconds <= 0:
        parser.error("--window-seconds must be positive")
    try:
        address, deployed = asyncio.run(_deploy(ns))
    except (SignerError, ChainError, ValueError, LedgerError) as exc:
        print(f"valueos {command}: {exc}")
        return 1
    print(address if deployed else f"{address} (already deployed for {ns.asset})")
    return 0
