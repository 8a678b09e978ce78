"""A small async Ethereum client for one signer (web3.py): what any outgoing transaction needs.

It prices and signs a call locally (EIP-1559, type 2: ``maxFeePerGas = 2 * baseFee + tip``),
re-signs a stuck one with the same nonce and higher fees, sends raw bytes, and reads receipts,
block hashes, nonces and the ``finalized`` block. It holds no state about transactions: the
outbox (:mod:`chain.evm.outbox`) persists every step before the next one, so a client can be
rebuilt after a crash.

Errors: every RPC failure is wrapped in :class:`ChainError` (web3's exception tree stays inside
``chain.evm``); :class:`InsufficientFunds` means the signer cannot pay ``gas * maxFeePerGas``
(checked before anything is signed).

Fee bumps: :meth:`EvmClient.bump_fees` raises both EIP-1559 fees by at least
:data:`FEE_BUMP_NUMERATOR` / :data:`FEE_BUMP_DENOMINATOR` (nodes replace a pending transaction
only for +10% on both), and to at least what the current base fee asks for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from eth_account.signers.local import LocalAccount
from eth_account.typed_transactions.typed_transaction import TypedTransaction
from eth_typing import HexStr
from hexbytes import HexBytes
from web3 import AsyncWeb3
from web3.exceptions import ContractLogicError, TransactionNotFound, Web3Exception
from web3.types import TxParams

__all__ = [
    "CallReverted",
    "ChainError",
    "EvmClient",
    "InsufficientFunds",
    "Mined",
    "Prepared",
    "SignedTx",
    "connect",
]

#: estimate the gas of a call, then add headroom
GAS_HEADROOM = 1.25
#: a replacement raises both fees by 12.5% at least (geth and anvil require +10%)
FEE_BUMP_NUMERATOR = 9
FEE_BUMP_DENOMINATOR = 8


class ChainError(RuntimeError):
    """An Ethereum RPC call failed (node down, rejected transaction, ...)."""


class CallReverted(ChainError):
    """The node simulated the call and it reverts (the contract refuses it now: paused, a cap,
    a reused id...); nothing was signed."""


class InsufficientFunds(ChainError):
    """The signer's balance does not cover ``gas * maxFeePerGas + value`` of a transaction."""

    def __init__(self, role: str, sender: str, balance: int, needed: int) -> None:
        super().__init__(
            f"{role} signer {sender} cannot pay for the {role} transaction: balance {balance} "
            f"wei < {needed} wei (gas limit x maxFeePerGas + value); fund the account"
        )
        self.sender = sender
        self.balance = balance
        self.needed = needed


def _bumped(fee: int) -> int:
    return -(-fee * FEE_BUMP_NUMERATOR // FEE_BUMP_DENOMINATOR)  # ceil(fee * 9 / 8)


@dataclass(frozen=True, slots=True)
class Prepared:
    """A call priced and ready to sign once it has a nonce."""

    params: dict[str, Any]
    #: the node's pending transaction count of the signer when it was priced
    chain_nonce: int


@dataclass(frozen=True, slots=True)
class SignedTx:
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


def _hex(tx_hash: bytes) -> HexStr:
    return HexStr("0x" + tx_hash.hex())


class EvmClient:
    """The node behind ``w3``, signing with ``signer``."""

    #: what the signer signs, for messages ("anchor signer 0x... cannot pay ...")
    role = "chain"

    def __init__(self, w3: AsyncWeb3[Any], signer: LocalAccount) -> None:
        self.w3 = w3
        self._signer = signer

    def __repr__(self) -> str:  # never the key
        return f"{type(self).__name__}(sender={self.sender})"

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

    # -- signing ---------------------------------------------------------------------------
    async def prepare(self, to: str, data: bytes, value: int = 0) -> Prepared:
        """Estimate and price a call of ``to`` with ``data``; :class:`InsufficientFunds` when the
        signer cannot pay for it. Sign it with :meth:`sign` once a nonce is allocated."""
        sender = self._signer.address
        try:
            chain_nonce = await self.w3.eth.get_transaction_count(sender, "pending")
            latest = await self.w3.eth.get_block("latest")
            base_fee = int(latest.get("baseFeePerGas", 0))
            tip = int(await self.w3.eth.max_priority_fee)
            target = AsyncWeb3.to_checksum_address(to)
            call = {"from": sender, "to": target, "data": HexBytes(data), "value": value}
            gas = await self.w3.eth.estimate_gas(cast(TxParams, call))
            chain_id = await self.chain_id()
        except ContractLogicError as exc:
            raise CallReverted(f"a call of {to} reverts: {exc}") from exc
        except (Web3Exception, OSError) as exc:
            raise ChainError(f"preparing a call of {to} failed: {exc}") from exc
        gas_limit, max_fee = int(gas * GAS_HEADROOM), 2 * base_fee + tip
        params = {
            "chainId": chain_id,
            "to": target,
            "value": value,
            "data": bytes(data),
            "gas": gas_limit,
            "maxPriorityFeePerGas": tip,
            "maxFeePerGas": max_fee,
            "type": 2,
        }
        await self.check_funds(gas_limit * max_fee + value)
        return Prepared(params, int(chain_nonce))

    def sign(self, prepared: Prepared, nonce: int) -> SignedTx:
        return self._sign(prepared.params | {"nonce": nonce})

    def _sign(self, tx: dict[str, Any]) -> SignedTx:
        signed = self._signer.sign_transaction(cast(Any, tx))
        return SignedTx(
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
            raise InsufficientFunds(self.role, self.sender, balance, needed)

    async def bump_fees(self, raw: bytes) -> SignedTx:
        """The transaction ``raw`` re-signed with the same nonce, gas, target, value and data,
        and both fees raised by 12.5% at least (more if the current base fee or tip asks).

        Either transaction may end up mined: the caller persists the result before
        broadcasting it, and treats a receipt of either as the outcome.
        """
        old = TypedTransaction.from_bytes(HexBytes(raw)).as_dict()
        if old.get("type") != 2:
            raise ChainError("only EIP-1559 (type 2) transactions can be bumped")
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

    # -- sending and reading back ----------------------------------------------------------
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
            receipt = await self.w3.eth.get_transaction_receipt(_hex(tx_hash))
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
            await self.w3.eth.get_transaction(_hex(tx_hash))
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
