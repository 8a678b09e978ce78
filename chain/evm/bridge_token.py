"""The BridgeToken contract: its binding over :class:`chain.evm.client.EvmClient`.

:class:`BridgeTokenClient` reads the token (minted bridge ids, supply, decimals, pause state) and
its ``Redeemed`` events; :func:`mint_batch_calldata` encodes a ``mintBatch`` call. Sending calls
is the outbox's work (:mod:`chain.evm.outbox`). :func:`deploy_bridge_token` deploys the token and
grants the minter and pauser roles (the constructor grants neither), for local runs and tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, cast

from eth_account.signers.local import LocalAccount
from eth_typing import BlockIdentifier, ChecksumAddress
from hexbytes import HexBytes
from web3 import AsyncWeb3, Web3
from web3.contract import AsyncContract, Contract
from web3.exceptions import Web3Exception

from chain.evm.artifacts import load_artifact
from chain.evm.client import ChainError, EvmClient

__all__ = [
    "MINTER_ROLE",
    "PAUSER_ROLE",
    "BridgeTokenClient",
    "Redemption",
    "deploy_bridge_token",
    "mint_batch_calldata",
]

ARTIFACT = "BridgeToken"
MINTER_ROLE = Web3.keccak(text="MINTER_ROLE")
PAUSER_ROLE = Web3.keccak(text="PAUSER_ROLE")
#: how long deploy_bridge_token waits for each receipt
RECEIPT_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class Redemption:
    """One ``Redeemed(from, amount, ledgerRef)`` event: tokens burnt for a ledger credit."""

    tx_hash: bytes
    log_index: int
    block_number: int
    block_hash: bytes
    sender: str
    amount: int
    #: the ledger account id, big-endian in the low bytes
    ledger_ref: bytes


class BridgeTokenClient(EvmClient):
    """BridgeToken at ``address`` on the node behind ``w3``, signing with ``signer``."""

    role = "bridge"

    def __init__(self, w3: AsyncWeb3[Any], address: str, signer: LocalAccount) -> None:
        super().__init__(w3, signer)
        self.address: ChecksumAddress = AsyncWeb3.to_checksum_address(address)
        self.contract: AsyncContract = w3.eth.contract(
            address=self.address, abi=load_artifact(ARTIFACT).abi
        )

    def __repr__(self) -> str:  # never the key
        return f"BridgeTokenClient({self.address}, sender={self.sender})"

    async def is_minted(self, bridge_id: bytes) -> bool:
        try:
            return bool(await self.contract.functions.minted(bridge_id).call())
        except (Web3Exception, OSError) as exc:
            what = f"minted(0x{bridge_id.hex()}) of {self.address}"
            raise ChainError(f"{what} failed: {exc}") from exc

    async def total_supply(self, block: int | str = "latest") -> int:
        try:
            call = self.contract.functions.totalSupply()
            return int(await call.call(block_identifier=cast(BlockIdentifier, block)))
        except (Web3Exception, OSError) as exc:
            raise ChainError(f"totalSupply() of {self.address} at {block} failed: {exc}") from exc

    async def decimals(self) -> int:
        try:
            return int(await self.contract.functions.decimals().call())
        except (Web3Exception, OSError) as exc:
            raise ChainError(f"decimals() of {self.address} failed: {exc}") from exc

    async def paused(self) -> bool:
        try:
            return bool(await self.contract.functions.paused().call())
        except (Web3Exception, OSError) as exc:
            raise ChainError(f"paused() of {self.address} failed: {exc}") from exc

    async def redemptions(self, from_block: int, to_block: int) -> list[Redemption]:
        """The ``Redeemed`` events of blocks ``from_block..to_block`` (inclusive), in chain order;
        a single ``eth_getLogs`` call, so the caller keeps the range within the node's limits."""
        try:
            logs = await self.contract.events.Redeemed.get_logs(
                from_block=from_block, to_block=to_block
            )
        except (Web3Exception, OSError) as exc:
            raise ChainError(
                f"eth_getLogs(Redeemed, {from_block}..{to_block}) of {self.address} failed: {exc}"
            ) from exc
        return [
            Redemption(
                tx_hash=bytes(log["transactionHash"]),
                log_index=int(log["logIndex"]),
                block_number=int(log["blockNumber"]),
                block_hash=bytes(log["blockHash"]),
                sender=AsyncWeb3.to_checksum_address(log["args"]["from"]),
                amount=int(log["args"]["amount"]),
                ledger_ref=bytes(log["args"]["ledgerRef"]),
            )
            for log in logs
        ]


@cache
def _encoder() -> type[Contract]:
    """The token's ABI without a node or address: for encoding calls only."""
    return Web3().eth.contract(abi=load_artifact(ARTIFACT).abi)


def mint_batch_calldata(items: Sequence[tuple[str, int, bytes]]) -> bytes:
    """The ABI-encoded ``mintBatch(to[], amounts[], bridgeIds[])`` call of ``(to, amount,
    bridge_id)`` items, in order."""
    to = [AsyncWeb3.to_checksum_address(address) for address, _, _ in items]
    amounts = [amount for _, amount, _ in items]
    bridge_ids = [bridge_id for _, _, bridge_id in items]
    encoded = _encoder().encode_abi("mintBatch", args=[to, amounts, bridge_ids])
    return bytes(HexBytes(encoded))


async def deploy_bridge_token(
    w3: AsyncWeb3[Any],
    signer: LocalAccount,
    *,
    name: str,
    symbol: str,
    decimals: int,
    admin: str,
    minter: str,
    pauser: str,
    per_transfer_cap: int,
    window_cap: int,
    window_seconds: int,
) -> ChecksumAddress:
    """Deploy BridgeToken, then grant ``MINTER_ROLE`` to ``minter`` and ``PAUSER_ROLE`` to
    ``pauser`` (the constructor grants neither). ``signer`` sends all three transactions, so it
    must be ``admin``. Returns the token's address once every receipt is in."""
    admin_address = AsyncWeb3.to_checksum_address(admin)
    if admin_address != signer.address:
        raise ChainError(
            f"the deploying signer {signer.address} must be the admin {admin_address}: "
            "only the admin can grant the minter and pauser roles"
        )
    artifact = load_artifact(ARTIFACT)
    try:
        chain_id = await w3.eth.chain_id
        nonce = await w3.eth.get_transaction_count(signer.address, "pending")
        factory = w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
        ctor = factory.constructor(
            name,
            symbol,
            decimals,
            admin_address,
            per_transfer_cap,
            window_cap,
            window_seconds,
        )
        deployed = await _send(
            w3, signer, await ctor.build_transaction(_base(signer, nonce, chain_id)), "deploy"
        )
        address = deployed["contractAddress"]
        if address is None:
            raise ChainError("deploying BridgeToken gave no contract address")
        token = w3.eth.contract(address=address, abi=artifact.abi)
        for offset, (role, holder, label) in enumerate(
            ((MINTER_ROLE, minter, "MINTER_ROLE"), (PAUSER_ROLE, pauser, "PAUSER_ROLE")), start=1
        ):
            grant = token.functions.grantRole(role, AsyncWeb3.to_checksum_address(holder))
            tx = await grant.build_transaction(_base(signer, nonce + offset, chain_id))
            await _send(w3, signer, tx, f"granting {label} to {holder}")
    except (Web3Exception, OSError) as exc:
        raise ChainError(f"deploying BridgeToken failed: {exc}") from exc
    return AsyncWeb3.to_checksum_address(address)


def _base(signer: LocalAccount, nonce: int, chain_id: int) -> dict[str, Any]:
    return {"from": signer.address, "nonce": nonce, "chainId": chain_id}


async def _send(w3: AsyncWeb3[Any], signer: LocalAccount, tx: Any, what: str) -> Any:
    """Sign and send ``tx``, wait for its receipt; ChainError if it reverted."""
    signed = signer.sign_transaction(cast(Any, tx))
    tx_hash = await w3.eth.send_raw_transaction(signed.raw_transaction)
    receipt = await w3.eth.wait_for_transaction_receipt(tx_hash, timeout=RECEIPT_TIMEOUT_S)
    if receipt["status"] != 1:
        raise ChainError(f"{what} reverted (tx 0x{bytes(tx_hash).hex()})")
    return receipt


def pause_calldata() -> bytes:
    """The ABI-encoded ``pause()`` call (PAUSER_ROLE only)."""
    return bytes(HexBytes(_encoder().encode_abi("pause", args=[])))
