"""The Ethereum side of anchoring: a small async client around LedgerAnchor (web3.py).

It signs locally (EIP-1559, type 2: ``maxFeePerGas = 2 * baseFee + tip``), sends raw bytes,
reads receipts, block hashes and the contract's stored epochs, and finds the ``Anchored`` event
of an epoch. It holds no state about anchors: the job (``jobs/anchor.py``) persists every step
in the database before the next one, so the client can be rebuilt after a crash.

Errors: every RPC failure is wrapped in :class:`ChainError` (web3's exception tree stays
inside this module); :class:`AnchorConflict` means the contract already holds a *different*
header for an epoch -- never retried, never overwritten (the contract refuses it anyway);
:class:`InsufficientFunds` means the signer cannot pay for the anchor at the current fees
(checked before anything is signed).

Stuck transactions: :meth:`AnchorClient.bump_fees` re-signs a persisted anchor transaction with
the same nonce, gas and call and both EIP-1559 fees raised by at least
:data:`FEE_BUMP_NUMERATOR` / :data:`FEE_BUMP_DENOMINATOR` (nodes replace a pending transaction
only for +10% on both), and at least what the current base fee asks for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from eth_account.signers.local import LocalAccount
from eth_account.typed_transactions.typed_transaction import TypedTransaction
from eth_typing import ChecksumAddress, HexStr
from hexbytes import HexBytes
from web3 import AsyncWeb3
from web3.contract import AsyncContract
from web3.exceptions import TransactionNotFound, Web3Exception
from web3.types import TxParams

from chain.evm.artifacts import load_artifact
from merkle.tree import EMPTY_ROOT

__all__ = [
    "AnchorClient",
    "AnchorConflict",
    "ChainError",
    "InsufficientFunds",
    "Mined",
    "OnChainEpoch",
    "SignedAnchor",
    "connect",
    "deploy_ledger_anchor",
]

#: the anchor call costs ~60k gas whatever the epoch size; estimate, then add headroom
GAS_HEADROOM = 1.25
#: a replacement raises both fees by 12.5% at least (geth and anvil require +10%)
FEE_BUMP_NUMERATOR = 9
FEE_BUMP_DENOMINATOR = 8


class ChainError(RuntimeError):
    """An Ethereum RPC call failed (node down, rejected transaction, ...)."""


class AnchorConflict(ChainError):
    """The contract holds another header for this epoch: a different history was anchored."""


class InsufficientFunds(ChainError):
    """The signer's balance does not cover ``gas * maxFeePerGas`` of the anchor transaction."""

    def __init__(self, sender: str, balance: int, needed: int) -> None:
        super().__init__(
            f"anchor signer {sender} cannot pay for the anchor transaction: balance "
            f"{balance} wei < {needed} wei (gas limit x maxFeePerGas); fund the account"
        )
        self.sender = sender
        self.balance = balance
        self.needed = needed


def _bumped(fee: int) -> int:
    return -(-fee * FEE_BUMP_NUMERATOR // FEE_BUMP_DENOMINATOR)  # ceil(fee * 9 / 8)


@dataclass(frozen=True, slots=True)
class OnChainEpoch:
    header: bytes
    entries_root: bytes
    balances_root: bytes

    @property
    def anchored(self) -> bool:
        return self.header != EMPTY_ROOT


@dataclass(frozen=True, slots=True)
class SignedAnchor:
    raw: bytes
    tx_hash: bytes
    nonce: int
    sender: str
    max_fee: int = 0
    max_priority_fee: int = 0


@dataclass(frozen=True, slots=True)
class Mined:
    """A transaction's inclusion: its receipt's essentials."""

    tx_hash: bytes
    block_number: int
    block_hash: bytes
    success: bool
    gas_used: int


def connect(rpc_url: str, timeout: float = 30.0) -> AsyncWeb3[Any]:
    return AsyncWeb3(AsyncWeb3.AsyncHTTPProvider(rpc_url, request_kwargs={"timeout": timeout}))


class AnchorClient:
    """LedgerAnchor at ``address`` on the node behind ``w3``, signing with ``signer``."""

    def __init__(self, w3: AsyncWeb3[Any], address: str, signer: LocalAccount) -> None:
        self.w3 = w3
        self.address: ChecksumAddress = AsyncWeb3.to_checksum_address(address)
        self.contract: AsyncContract = w3.eth.contract(
            address=self.address, abi=load_artifact("LedgerAnchor").abi
        )
        self._signer = signer

    def __repr__(self) -> str:  # never the key
        return f"AnchorClient({self.address}, sender={self.sender})"

    @property
    def sender(self) -> str:
        return str(self._signer.address)

    async def chain_id(self) -> int:
        try:
            return int(await self.w3.eth.chain_id)
        except (Web3Exception, OSError) as exc:
            raise ChainError(f"eth_chainId failed: {exc}") from exc

    async def head(self) -> int:
        try:
            return int(await self.w3.eth.block_number)
        except (Web3Exception, OSError) as exc:
            raise ChainError(f"eth_blockNumber failed: {exc}") from exc

    async def block_hash(self, number: int) -> bytes | None:
        """The canonical block hash at ``number``, None above the head."""
        try:
            block = await self.w3.eth.get_block(number)
        except Web3Exception:
            return None
        except OSError as exc:
            raise ChainError(f"eth_getBlockByNumber failed: {exc}") from exc
        return bytes(block["hash"]) if block and "hash" in block else None

    async def ledger_id(self) -> bytes:
        try:
            return bytes(await self.contract.functions.ledgerId().call())
        except (Web3Exception, OSError) as exc:
            raise ChainError(f"ledgerId() of {self.address} failed: {exc}") from exc

    async def onchain_epoch(self, epoch: int) -> OnChainEpoch:
        try:
            header, entries, balances = await self.contract.functions.epochs(epoch).call()
        except (Web3Exception, OSError) as exc:
            raise ChainError(f"epochs({epoch}) failed: {exc}") from exc
        return OnChainEpoch(bytes(header), bytes(entries), bytes(balances))

    async def sign_anchor(
        self,
        *,
        epoch: int,
        prev_header: bytes,
        entries_root: bytes,
        balances_root: bytes,
        first_seq: int,
        last_seq: int,
        leaf_count: int,
    ) -> SignedAnchor:
        """Build and sign ``anchor(...)`` with the next pending nonce and EIP-1559 fees.

        The caller must hold the anchoring lock and persist the result before broadcasting.
        """
        try:
            nonce = await self.w3.eth.get_transaction_count(self._signer.address, "pending")
            latest = await self.w3.eth.get_block("latest")
            base_fee = int(latest.get("baseFeePerGas", 0))
            tip = int(await self.w3.eth.max_priority_fee)
            call = self.contract.functions.anchor(
                epoch, prev_header, entries_root, balances_root, first_seq, last_seq, leaf_count
            )
            gas = await call.estimate_gas({"from": self._signer.address})
            tx = await call.build_transaction(
                cast(
                    TxParams,
                    {
                        "from": self._signer.address,
                        "nonce": nonce,
                        "gas": int(gas * GAS_HEADROOM),
                        "maxPriorityFeePerGas": tip,
                        "maxFeePerGas": 2 * base_fee + tip,
                        "chainId": await self.chain_id(),
                        "type": 2,
                    },
                )
            )
        except (Web3Exception, OSError) as exc:
            raise ChainError(f"preparing anchor({epoch}) failed: {exc}") from exc
        await self.check_funds(int(tx["gas"]) * int(tx["maxFeePerGas"]))
        return self._sign(tx)

    def _sign(self, tx: Any) -> SignedAnchor:
        signed = self._signer.sign_transaction(cast(Any, tx))
        return SignedAnchor(
            bytes(signed.raw_transaction),
            bytes(signed.hash),
            int(tx["nonce"]),
            self.sender,
            int(tx["maxFeePerGas"]),
            int(tx["maxPriorityFeePerGas"]),
        )

    async def balance(self) -> int:
        """The signer's balance in wei (latest block)."""
        try:
            return int(await self.w3.eth.get_balance(self._signer.address))
        except (Web3Exception, OSError) as exc:
            raise ChainError(f"eth_getBalance failed: {exc}") from exc

    async def check_funds(self, needed: int) -> None:
        """:class:`InsufficientFunds` unless the signer holds ``needed`` wei."""
        balance = await self.balance()
        if balance < needed:
            raise InsufficientFunds(self.sender, balance, needed)

    async def bump_fees(self, raw: bytes) -> SignedAnchor:
        """The transaction ``raw`` re-signed with the same nonce, gas, target and data, and
        both fees raised by 12.5% at least (more if the current base fee or tip asks for it).

        Either transaction may end up mined: both carry the same call, and the contract
        accepts the epoch once. The caller persists the result before broadcasting it.
        """
        old = TypedTransaction.from_bytes(HexBytes(raw)).as_dict()
        if old.get("type") != 2:
            raise ChainError("only EIP-1559 (type 2) anchor transactions can be bumped")
        try:
            latest = await self.w3.eth.get_block("latest")
            base_fee = int(latest.get("baseFeePerGas", 0))
            market_tip = int(await self.w3.eth.max_priority_fee)
        except (Web3Exception, OSError) as exc:
            raise ChainError(f"reading fees for a replacement failed: {exc}") from exc
        tip = max(_bumped(int(old["maxPriorityFeePerGas"])), market_tip)
        max_fee = max(_bumped(int(old["maxFeePerGas"])), 2 * base_fee + tip)
        gas, value = int(old["gas"]), int(old["value"])
        tx = {
            "chainId": int(old["chainId"]),
            "nonce": int(old["nonce"]),
            "to": AsyncWeb3.to_checksum_address(bytes(old["to"])),
            "value": value,
            "data": bytes(old["data"]),
            "gas": gas,
            "maxPriorityFeePerGas": tip,
            "maxFeePerGas": max_fee,
            "accessList": list(old.get("accessList", ())),
            "type": 2,
        }
        await self.check_funds(gas * max_fee + value)
        return self._sign(tx)

    async def finalized_block(self) -> int | None:
        """The number of the node's ``finalized`` block, None when the node has no such tag."""
        try:
            block = await self.w3.eth.get_block("finalized")
        except Web3Exception:
            return None
        except OSError as exc:
            raise ChainError(f"eth_getBlockByNumber(finalized) failed: {exc}") from exc
        number = block.get("number") if block else None
        return None if number is None else int(number)

    async def broadcast(self, raw: bytes) -> None:
        """Send signed bytes. Sending the same bytes again is harmless: a node that already
        has the transaction (pending or mined) answers with an error we ignore here; the
        caller learns the truth from :meth:`mined` and :meth:`known`."""
        try:
            await self.w3.eth.send_raw_transaction(HexBytes(raw))
        except Web3Exception as exc:
            text = str(exc).lower()
            if any(s in text for s in ("already known", "nonce too low", "already imported")):
                return
            raise ChainError(f"eth_sendRawTransaction failed: {exc}") from exc
        except OSError as exc:
            raise ChainError(f"eth_sendRawTransaction failed: {exc}") from exc

    async def mined(self, tx_hash: bytes) -> Mined | None:
        """The receipt of ``tx_hash`` on the canonical chain, None while not included."""
        try:
            receipt = await self.w3.eth.get_transaction_receipt(HexStr("0x" + tx_hash.hex()))
        except TransactionNotFound:
            return None
        except (Web3Exception, OSError) as exc:
            raise ChainError(f"eth_getTransactionReceipt failed: {exc}") from exc
        if receipt is None or receipt.get("blockHash") is None:
            return None
        return Mined(
            tx_hash,
            int(receipt["blockNumber"]),
            bytes(receipt["blockHash"]),
            receipt["status"] == 1,
            int(receipt["gasUsed"]),
        )

    async def known(self, tx_hash: bytes) -> bool:
        """Whether the node knows the transaction at all (pending or mined)."""
        try:
            await self.w3.eth.get_transaction(HexStr("0x" + tx_hash.hex()))
        except TransactionNotFound:
            return False
        except (Web3Exception, OSError) as exc:
            raise ChainError(f"eth_getTransactionByHash failed: {exc}") from exc
        return True

    async def confirmed_nonce(self) -> int:
        """The sender's nonce on the latest block (transactions below it are mined)."""
        try:
            return int(await self.w3.eth.get_transaction_count(self._signer.address, "latest"))
        except (Web3Exception, OSError) as exc:
            raise ChainError(f"eth_getTransactionCount failed: {exc}") from exc

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


async def deploy_ledger_anchor(
    w3: AsyncWeb3[Any], signer: LocalAccount, ledger_id: bytes
) -> ChecksumAddress:
    """Deploy LedgerAnchor (``signer`` is admin and anchorer); for local runs and tests."""
    artifact = load_artifact("LedgerAnchor")
    factory = w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
    tx = await factory.constructor(ledger_id, signer.address).build_transaction(
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
