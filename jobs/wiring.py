"""Wiring of the worker and ``valueos anchor``: settings -> database, chain, anchor job.

* :func:`ledger`: the database from ``DATABASE_URL`` (or the embedded PostgreSQL), migrated
  to head, as a :class:`core.ledger.Ledger`;
* :func:`anchoring`: the chain from :class:`chain.evm.settings.AnchorSettings` and the anchor
  job on it, its configuration checked against the stored anchors. With ``ETH_RPC_URL``
  the contract comes from ``VALUEOS_ANCHOR_CONTRACT`` (or its file) and the configured
  signer; without it :func:`local_chain` starts a *local* anvil from ``node_modules`` (state
  in ``.valueos/anvil-state.json``, 1 s blocks) with LedgerAnchor deployed once (address kept
  in ``.valueos/anchor-contract``), signing with anvil's first dev key unless a key is
  configured: a development convenience, not production;
* :func:`anchor_job`: the one place that builds the anchor client and job;
* :func:`bridge_supply_job`: the supply invariant check of the bridge tokens (reads only);
* :func:`bridge_out_job`: the bridge-out pass (mints through the outbox, then settlement) on
  the anchoring chain, signed by the bridge minter;
* :func:`bridge_in_job`: the bridge-in pass (final ``Redeemed`` events credited back) on the
  anchoring chain, with the anchoring's finality rule; it only reads, so it needs no key;
* :func:`stellar_jobs`: the Stellar bridge's watcher, supply check and bridge-out
  (:mod:`chain.stellar.settings`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import AsyncWeb3

from chain.evm.anchor import AnchorClient
from chain.evm.anvil import AnvilNode, start_anvil
from chain.evm.bridge_token import BridgeTokenClient
from chain.evm.client import ChainError, EvmClient, connect
from chain.evm.outbox import Finality, Outbox
from chain.evm.settings import AnchorSettings, SignerError, load_signer
from chain.stellar.client import StellarClient, StellarRpcError
from chain.stellar.outbox import StellarOutbox
from chain.stellar.settings import StellarSettings
from core.bridges.stellar import stellar_chain_id
from core.db import migrate, resolve_url
from core.ledger import Ledger
from core.settings import DatabaseSettings, database_settings, epoch_settings
from jobs.anchor import AnchorJob
from jobs.bridge_in import TokenReader, bridge_in_pass
from jobs.bridge_out import bridge_out_pass
from jobs.bridge_supply import supply_pass
from jobs.deploy import ensure_ledger_anchor
from jobs.schedule import ScheduledJob
from jobs.stellar_in import stellar_in_pass
from jobs.stellar_out import stellar_out_pass
from jobs.stellar_supply import stellar_supply_pass

log = logging.getLogger(__name__)

#: where the local dev chain keeps its state and the deployed contract's address
LOCAL_DIR = Path(".valueos")
#: confirmations on the local dev chain (2 blocks of 1 s) unless given explicitly
LOCAL_CONFIRMATIONS = 2


@contextlib.asynccontextmanager
async def ledger(settings: DatabaseSettings | None = None) -> AsyncIterator[Ledger]:
    """The ledger on the configured database, its schema migrated to head first."""
    settings = settings or database_settings()
    await asyncio.to_thread(migrate, resolve_url(settings))
    led = Ledger.connect(settings)
    try:
        yield led
    finally:
        await led.close()


@contextlib.asynccontextmanager
async def local_chain(
    settings: AnchorSettings, ledger_id: bytes, local_dir: Path = LOCAL_DIR
) -> AsyncIterator[tuple[str, str, LocalAccount]]:
    """A local anvil (persistent state) with LedgerAnchor deployed: (rpc url, address, signer)."""
    local_dir.mkdir(exist_ok=True)  # noqa: ASYNC240 - local dev setup, once
    state = (local_dir / "anvil-state.json").resolve()
    node: AnvilNode = await asyncio.to_thread(
        start_anvil, chain_id=31337, extra_args=["--state", str(state), "--block-time", "1"]
    )
    try:
        configured = settings.key or settings.keystore
        signer = load_signer(settings) if configured else None
        if signer is None:
            signer = Account.from_key(str(node.config()["private_keys"][0]))
        w3 = connect(node.rpc_url)
        try:
            address_file = local_dir / "anchor-contract"
            known = address_file.read_text().strip() if address_file.exists() else None
            address = await ensure_ledger_anchor(w3, lambda: signer, ledger_id, known)
        finally:
            await w3.provider.disconnect()
        if address != known:
            address_file.write_text(address + "\n")
            log.warning("deployed LedgerAnchor at %s on the local anvil", address)
        yield node.rpc_url, address, signer
    finally:
        await asyncio.to_thread(node.stop)


def anchor_job(
    led: Ledger,
    w3: AsyncWeb3[Any],
    address: str,
    signer: LocalAccount,
    *,
    ledger_id: bytes,
    confirmations: int,
    settings: AnchorSettings,
) -> AnchorJob:
    """The anchor client and job: the only place either is constructed."""
    client = AnchorClient(w3, address, signer)
    return AnchorJob(
        led.engine,
        client,
        ledger_id,
        confirmations=confirmations,
        seal_empty=epoch_settings().seal_empty,
        bump_after_s=settings.bump_after_s,
        max_fee_cap=settings.max_fee_cap_wei,
        finality=settings.finality,
    )


@contextlib.asynccontextmanager
async def anchoring(
    led: Ledger, settings: AnchorSettings, confirmations: int | None = None
) -> AsyncIterator[AnchorJob]:
    """The anchor job on the configured chain (or a local dev anvil), checked against the
    stored anchors: AnchorConfigMismatch rather than anchoring to another chain or contract."""
    ledger_id = epoch_settings().ledger_id
    async with contextlib.AsyncExitStack() as stack:
        if settings.rpc_url:
            if not settings.contract_address:
                raise SignerError("ETH_RPC_URL is set but VALUEOS_ANCHOR_CONTRACT is not")
            rpc, address = settings.rpc_url, settings.contract_address
            signer = load_signer(settings)
            confirms = confirmations or settings.confirmations
        else:
            rpc, address, signer = await stack.enter_async_context(local_chain(settings, ledger_id))
            confirms = confirmations or LOCAL_CONFIRMATIONS
        job = anchor_job(
            led,
            connect(rpc),
            address,
            signer,
            ledger_id=ledger_id,
            confirmations=confirms,
            settings=settings,
        )
        try:
            await job.check_config()  # refuse to start against another chain or contract
            yield job
        finally:
            await job.client.w3.provider.disconnect()


def bridge_out_job(
    led: Ledger, anchor: AnchorJob, minter: LocalAccount
) -> Callable[[], Awaitable[object]]:
    """One bridge-out pass on the anchoring chain, with its finality and fee settings."""
    w3 = anchor.client.w3
    outbox = Outbox(
        led.engine, EvmClient(w3, minter), confirmations=anchor.confirmations,
        bump_after_s=anchor.bump_after_s, max_fee_cap=anchor.max_fee_cap,
        finality=Finality(anchor.finality),
    )  # fmt: skip

    async def minted(token: str, bridge_id: bytes) -> bool:
        return await BridgeTokenClient(w3, token, minter).is_minted(bridge_id)

    async def body() -> object:
        try:
            return await bridge_out_pass(led, outbox, minted)
        except ChainError:
            log.exception("bridge_out failed; retried on the next run")
            return None

    return body


def _readers(anchor: AnchorJob) -> tuple[EvmClient, TokenReader]:
    """The anchoring chain and its token clients for reading: they need no key, so they get a
    throwaway signer that never signs."""
    w3 = anchor.client.w3
    reader_key: LocalAccount = Account.create()

    def reader(token: str) -> BridgeTokenClient:
        return BridgeTokenClient(w3, token, reader_key)

    return EvmClient(w3, reader_key), reader


def bridge_in_job(
    led: Ledger, anchor: AnchorJob, *, page_blocks: int, start_block: int
) -> Callable[[], Awaitable[object]]:
    """One bridge-in pass on the anchoring chain, with its confirmations and finality rule."""
    chain, reader = _readers(anchor)

    async def body() -> object:
        try:
            return await bridge_in_pass(
                led, chain, reader, confirmations=anchor.confirmations,
                finality=Finality(anchor.finality), page_blocks=page_blocks,
                start_block=start_block,
            )  # fmt: skip
        except ChainError:
            log.exception("bridge_in failed; retried on the next run")
            return None

    return body


def bridge_supply_job(
    led: Ledger, anchor: AnchorJob, *, start_block: int
) -> Callable[[], Awaitable[object]]:
    """One supply invariant check of every bridge token on the anchoring chain; a broken one
    is also paused on-chain by the anchor signer (the tokens' PAUSER, see deploy-token)."""
    chain, reader = _readers(anchor)
    pauser = Outbox(
        led.engine, anchor.client, confirmations=anchor.confirmations,
        bump_after_s=anchor.bump_after_s, max_fee_cap=anchor.max_fee_cap,
        finality=Finality(anchor.finality),
    )  # fmt: skip

    async def body() -> object:
        try:
            return await supply_pass(
                led, chain, reader, confirmations=anchor.confirmations,
                finality=Finality(anchor.finality), start_block=start_block, pauser=pauser,
            )  # fmt: skip
        except ChainError:
            log.exception("bridge_supply failed; retried on the next run")
            return None

    return body


def stellar_jobs(
    led: Ledger, settings: StellarSettings, *, every_s: float, supply_every_s: float
) -> tuple[list[ScheduledJob], StellarClient | None]:
    """The Stellar bridge's jobs when ``STELLAR_RPC_URL`` is set: the watcher (burns in) and
    the supply check always; the bridge-out when the issuer (the SAC's admin) and at least one
    channel account are configured. Returns the jobs and the client to close."""
    if not settings.configured:
        return [], None
    assert settings.rpc_url is not None  # noqa: S101 - configured
    assert settings.passphrase is not None  # noqa: S101 - configured
    client = StellarClient(settings.rpc_url, settings.passphrase)
    chain_id = stellar_chain_id(settings.passphrase)

    def guarded(name: str, run: Callable[[], Awaitable[object]]) -> Callable[[], Awaitable[object]]:
        async def body() -> object:
            try:
                return await run()
            except StellarRpcError:
                log.exception("%s failed; retried on the next run", name)
                return None

        return body

    jobs = [
        ScheduledJob("stellar_in", guarded(
            "stellar_in", lambda: stellar_in_pass(led, client, chain_id=chain_id)
        ), every_s, at_start=True),
        ScheduledJob("stellar_supply", guarded(
            "stellar_supply", lambda: stellar_supply_pass(led, client, chain_id=chain_id)
        ), supply_every_s),
    ]  # fmt: skip
    issuer, channels = settings.issuer(), settings.channels()
    if issuer is not None and channels:
        box = StellarOutbox(led.engine, client, issuer, channels, timeout_s=settings.timeout_s)
        jobs.append(ScheduledJob(
            "stellar_out", guarded("stellar_out", lambda: stellar_out_pass(led, box)), every_s,
            at_start=True,
        ))  # fmt: skip
    return jobs, client
