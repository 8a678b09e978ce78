"""``valueos deploy-stellar-asset ASSET``: make the asset's classic Stellar asset and its Stellar
Asset Contract on ``STELLAR_RPC_URL``, and record the SAC.

The issuer (``STELLAR_ISSUER_SECRET`` or ``STELLAR_ISSUER_KEY_FILE``, an existing funded
account) gets AUTH_REVOCABLE and AUTH_CLAWBACK_ENABLED before any trustline exists, then the
SAC is deployed from the asset (``--code``, default the ledger's asset code: 1-12 letters and
digits). The issuer stays the SAC's admin: it signs every mint's authorization entry. An asset
already recorded is not deployed again: its contract is printed.
"""

from __future__ import annotations

import argparse
import asyncio

from chain.stellar.client import StellarClient, StellarRpcError
from chain.stellar.deploy import deploy_asset
from chain.stellar.settings import stellar_settings
from core.bridges.stellar import get_stellar_token, register_stellar_token
from core.errors import LedgerError, UnknownBridgeToken
from core.types import Actor, Role
from jobs import wiring

ACTOR = Actor("cli:deploy-stellar-asset", Role.ADMIN)


async def _deploy(ns: argparse.Namespace) -> tuple[str, bool]:
    settings = stellar_settings()
    issuer = settings.issuer()
    if settings.rpc_url is None or settings.passphrase is None:
        raise StellarRpcError("deploy-stellar-asset needs STELLAR_RPC_URL and "
                              "STELLAR_NETWORK_PASSPHRASE")  # fmt: skip
    if issuer is None:
        raise StellarRpcError("deploy-stellar-asset needs the issuer: STELLAR_ISSUER_SECRET")
    async with wiring.ledger() as led:
        try:
            return (await get_stellar_token(led, ns.asset)).contract, False
        except UnknownBridgeToken:
            pass
        code = ns.code or ns.asset
        client = StellarClient(settings.rpc_url, settings.passphrase)
        try:
            await client.check_network()
            contract = await deploy_asset(client, issuer, code, lambda: asyncio.sleep(1.0))
        finally:
            await client.close()
        await register_stellar_token(
            led, asset=ns.asset, passphrase=settings.passphrase, code=code,
            issuer=issuer.public_key, contract=contract, actor=ACTOR,
        )  # fmt: skip
        return contract, True


def main(command: str, argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=f"valueos {command}", description=__doc__)
    parser.add_argument("asset")
    parser.add_argument("--code", default=None, help="the Stellar asset code (default: ASSET)")
    ns = parser.parse_args(argv)
    try:
        contract, deployed = asyncio.run(_deploy(ns))
    except (StellarRpcError, ValueError, LedgerError) as exc:
        print(f"valueos {command}: {exc}")
        return 1
    print(contract if deployed else f"{contract} (already deployed for {ns.asset})")
    return 0
