"""The LedgerAnchor contract: its binding over :class:`chain.evm.client.EvmClient`.

:class:`AnchorClient` reads the contract (ledger id, stored epochs, ``Anchored`` events) and
encodes the ``anchor(...)`` call; sending it is the outbox's work (:mod:`chain.evm.outbox`).
:class:`AnchorConflict` means the contract already holds a *different* header for an epoch --
never retried, never overwritten (the contract refuses it anyway).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from hexbytes import HexBytes
from web3 import AsyncWeb3
from web3.contract import AsyncContract
from web3.exceptions import Web3Exception

from chain.evm.artifacts import load_artifact
from chain.evm.client import ChainError, EvmClient, Mined
from merkle.tree import EMPTY_ROOT

__all__ = [
    "AnchorClient",
    "AnchorConflict",
    "OnChainEpoch",
    "chain_head",
    "deploy_ledger_anchor",
]


class AnchorConflict(ChainError):
    """The contract holds another header for this epoch: a different history was anchored."""


@dataclass(frozen=True, slots=True)
class OnChainEpoch:
    """What the contract stores for an epoch: its header hash (the roots are in the event)."""

    header: bytes

    @property
    def anchored(self) -> bool:
        return self.header != EMPTY_ROOT


class AnchorClient(EvmClient):
    """LedgerAnchor at ``address`` on the node behind ``w3``, signing with ``signer``."""

    role = "anchor"

    def __init__(self, w3: AsyncWeb3[Any], address: str, signer: LocalAccount) -> None:
        super().__init__(w3, signer)
        self.address: ChecksumAddress = AsyncWeb3.to_checksum_address(address)
        self.contract: AsyncContract = w3.eth.contract(
            address=self.address, abi=load_artifact("LedgerAnchor").abi
        )

    def __repr__(self) -> str:  # never the key
        return f"AnchorClient({self.address}, sender={self.sender})"

    async def ledger_id(self) -> bytes:
        try:
            return bytes(await self.contract.functions.ledgerId().call())
        except (Web3Exception, OSError) as exc:
            raise ChainError(f"ledgerId() of {self.address} failed: {exc}") from exc

    async def genesis_epoch(self) -> int:
        """The last epoch anchored before this contract (0 for a contract that starts a ledger)."""
        try:
            return int(await self.contract.functions.genesisEpoch().call())
        except (Web3Exception, OSError) as exc:
            raise ChainError(f"genesisEpoch() of {self.address} failed: {exc}") from exc

    async def onchain_epoch(self, epoch: int) -> OnChainEpoch:
        try:
            header = await self.contract.functions.headerOf(epoch).call()
        except (Web3Exception, OSError) as exc:
            raise ChainError(f"headerOf({epoch}) failed: {exc}") from exc
        return OnChainEpoch(bytes(header))

    async def is_anchored(
        self,
        *,
        epoch: int,
        prev_header: bytes,
        entries_root: bytes,
        balances_root: bytes,
        first_seq: int,
        last_seq: int,
        leaf_count: int,
    ) -> bool:
        """The contract's own check that these header fields are the ones anchored for epoch."""
        fields = (epoch, prev_header, entries_root, balances_root, first_seq, last_seq, leaf_count)
        try:
            return bool(await self.contract.functions.isAnchored(fields).call())
        except (Web3Exception, OSError) as exc:
            raise ChainError(f"isAnchored({epoch}) failed: {exc}") from exc

    def anchor_calldata(
        self,
        *,
        epoch: int,
        prev_header: bytes,
        entries_root: bytes,
        balances_root: bytes,
        first_seq: int,
        last_seq: int,
        leaf_count: int,
    ) -> bytes:
        """The ABI-encoded ``anchor(...)`` call of one epoch's header fields."""
        encoded = self.contract.encode_abi(
            "anchor",
            args=[epoch, prev_header, entries_root, balances_root, first_seq, last_seq, leaf_count],
        )
        return bytes(HexBytes(encoded))

    async def find_anchored_event(self, epoch: int) -> Mined | None:
        """The transaction whose ``Anchored(epoch, ...)`` event is on the canonical chain."""
        try:
            logs = await self.contract.events.Anchored.get_logs(
                from_block=0, argument_filters={"epoch": epoch}
            )
        except (Web3Exception, OSError) as exc:
            raise ChainError(f"eth_getLogs failed: {exc}") from exc
        for log in logs:
            mined = await self.mined(bytes(log["transactionHash"]))
            if mined is not None:
                return mined
        return None


#: the reads a successor needs from an earlier LedgerAnchor, of either storage layout: the
#: one-word ``headerOf`` or the three-word ``epochs`` (header, entries root, balances root)
_PREDECESSOR_ABI: list[dict[str, Any]] = [
    {"type": "function", "name": name, "stateMutability": "view", "inputs": inputs,
     "outputs": outputs}
    for name, inputs, outputs in (
        ("ledgerId", [], [{"name": "", "type": "bytes32"}]),
        ("lastEpoch", [], [{"name": "", "type": "uint64"}]),
        ("headerOf", [{"name": "epoch", "type": "uint64"}], [{"name": "", "type": "bytes32"}]),
        ("epochs", [{"name": "epoch", "type": "uint64"}],
         [{"name": n, "type": "bytes32"} for n in ("header", "entriesRoot", "balancesRoot")]),
    )
]  # fmt: skip


async def chain_head(w3: AsyncWeb3[Any], address: str, ledger_id: bytes) -> tuple[int, bytes]:
    """(last anchored epoch, its header) of the LedgerAnchor at ``address``, which must anchor
    ``ledger_id``: the genesis of a contract that continues its header chain."""
    old = w3.eth.contract(address=AsyncWeb3.to_checksum_address(address), abi=_PREDECESSOR_ABI)
    try:
        if bytes(await old.functions.ledgerId().call()) != ledger_id:
            raise ChainError(f"contract {address} anchors another ledger id")
        last = int(await old.functions.lastEpoch().call())
        if last == 0:
            return 0, EMPTY_ROOT
        try:
            header = bytes(await old.functions.headerOf(last).call())
        except (Web3Exception, ValueError):  # the three-word layout has no headerOf
            header = bytes((await old.functions.epochs(last).call())[0])
    except (Web3Exception, OSError) as exc:
        raise ChainError(f"reading the header chain of {address} failed: {exc}") from exc
    if header == EMPTY_ROOT:
        raise ChainError(f"contract {address} has no header for its last epoch {last}")
    return last, header


async def deploy_ledger_anchor(
    w3: AsyncWeb3[Any],
    signer: LocalAccount,
    ledger_id: bytes,
    *,
    genesis_epoch: int = 0,
    genesis_header: bytes = EMPTY_ROOT,
) -> ChecksumAddress:
    """Deploy LedgerAnchor (``signer`` is admin and anchorer); for local runs and tests.

    ``genesis_epoch``/``genesis_header``: the last epoch anchored on a previous contract and its
    header, which this one continues (the first epoch it takes is ``genesis_epoch + 1``).
    """
    artifact = load_artifact("LedgerAnchor")
    factory = w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
    tx = await factory.constructor(
        ledger_id, signer.address, genesis_epoch, genesis_header
    ).build_transaction(
        {
            "from": signer.address,
            "nonce": await w3.eth.get_transaction_count(signer.address, "pending"),
            "chainId": await w3.eth.chain_id,
        }
    )
    signed = signer.sign_transaction(cast(Any, tx))
    tx_hash = await w3.eth.send_raw_transaction(signed.raw_transaction)
    receipt = await w3.eth.wait_for_transaction_receipt(tx_hash, timeout=60)
    address = receipt["contractAddress"]
    if receipt["status"] != 1 or address is None:
        raise ChainError("deploying LedgerAnchor failed")
    return AsyncWeb3.to_checksum_address(address)
