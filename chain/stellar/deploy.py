"""Deploying a bridged asset on Stellar: the issuer's flags (AUTH_REVOCABLE and
AUTH_CLAWBACK_ENABLED, set before any trustline exists) and the asset's Stellar Asset Contract,
each a transaction signed by the issuer and followed to its ledger."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from stellar_sdk import Account, Asset, AuthorizationFlag, Keypair, TransactionBuilder
from stellar_sdk.exceptions import PrepareTransactionException, SdkError

from chain.stellar.client import BASE_FEE, SendStatus, StellarClient, StellarRpcError

__all__ = ["ISSUER_FLAGS", "deploy_asset", "submit"]

ISSUER_FLAGS = (
    AuthorizationFlag.AUTHORIZATION_REVOCABLE | AuthorizationFlag.AUTHORIZATION_CLAWBACK_ENABLED
)

#: awaited between two polls of a transaction (a sleep, or a test closing a ledger)
Tick = Callable[[], Awaitable[object]]


async def submit(client: StellarClient, envelope_xdr: str, tx_hash: bytes, tick: Tick) -> None:
    """Send and wait until applied; raises StellarRpcError when refused or failed."""
    for _ in range(60):
        sent = await client.send(envelope_xdr)
        if sent.status is SendStatus.ERROR:
            seen = await client.seen(tx_hash)
            if seen.status == "SUCCESS":
                return
            raise StellarRpcError(f"transaction refused: {sent.error}")
        await tick()
        seen = await client.seen(tx_hash)
        if seen.status == "SUCCESS":
            return
        if seen.status == "FAILED":
            raise StellarRpcError(f"transaction failed: {seen.result_code}")
    raise StellarRpcError("transaction not applied in time")


async def deploy_asset(client: StellarClient, issuer: Keypair, code: str, tick: Tick) -> str:
    """Set the issuer's flags and deploy ``code``'s SAC (each once); returns the contract id."""
    asset = Asset(code, issuer.public_key)
    contract = asset.contract_id(client.passphrase)
    seq = await client.account_seq(issuer.public_key)
    if seq is None:
        raise StellarRpcError(f"the issuer {issuer.public_key} does not exist")
    flags = (
        TransactionBuilder(Account(issuer.public_key, seq), client.passphrase, BASE_FEE)
        .set_timeout(60)
        .append_set_options_op(set_flags=ISSUER_FLAGS)
        .build()
    )
    flags.sign(issuer)
    await submit(client, flags.to_xdr(), flags.hash(), tick)
    if await client.contract_exists(contract):
        return contract
    create = (
        TransactionBuilder(Account(issuer.public_key, seq + 1), client.passphrase, BASE_FEE)
        .set_timeout(60)
        .append_create_stellar_asset_contract_from_asset_op(asset)
        .build()
    )
    try:
        prepared = await client.server.prepare_transaction(create)
    except (PrepareTransactionException, SdkError, OSError) as exc:
        raise StellarRpcError(f"the SAC cannot be deployed: {exc}") from exc
    prepared.sign(issuer)
    await submit(client, prepared.to_xdr(), prepared.hash(), tick)
    return contract
