"""Bodies of the ERC-20 bridge endpoints."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from msgspec import Meta, Struct

from api.schemas.common import Amount, AssetCode, Create, Reason
from core.bridges.erc20 import BridgeOutOrder, BridgeOutState
from core.chain_txs import TxStatus

Address = Annotated[
    str,
    Meta(
        pattern=r"^0x[0-9a-fA-F]{40}$",
        description="an EIP-55 checksummed address (its checksum is verified)",
        examples=["0x70997970C51812dc3A010C7d01b50e0d17dc79C8"],
    ),
]


class BridgeOutCreate(Create):
    """Bridge ``amount`` of ``asset`` from the caller's AVAILABLE account to ``to_address``."""

    asset: AssetCode
    amount: Amount
    to_address: Address

    def order(self) -> BridgeOutOrder:
        return BridgeOutOrder(self.asset, self.amount, self.to_address)


class BridgeOutRead(Struct):
    id: str
    user_id: uuid.UUID
    asset: str
    amount: str
    #: the amount in the token's own units (integer string)
    token_amount: str
    to_address: str
    chain_id: int
    token_address: str
    #: IN_FLIGHT (debited, the mint on its way), MINTED (final) or REFUNDED
    state: BridgeOutState
    #: the mint transaction's outbox status (BUILT ... FINALIZED, FAILED)
    tx_status: TxStatus | None
    tx_hash: str | None
    block_number: int | None
    #: blocks on top of and including the mint's (with the API's ``ETH_RPC_URL``; else null)
    confirmations: int | None
    operation_id: int
    settle_operation_id: int | None
    created_at: datetime


class BridgeOutPageRead(Struct):
    bridge_outs: list[BridgeOutRead]
    next_cursor: int | None


class BridgeTokenCreate(Create):
    asset: AssetCode
    chain_id: Annotated[int, Meta(ge=1, le=2**63 - 1)]
    address: Address
    decimals: Annotated[int, Meta(ge=0, le=36)]


class BridgePause(Create):
    reason: Reason


class BridgeTokenRead(Struct):
    asset: str
    chain_id: int
    address: str
    decimals: int
    paused: bool
    pause_reason: str | None


class RedemptionRead(Struct):
    chain_id: int
    tx_hash: str
    log_index: int
    token_address: str
    block_number: int
    sender: str
    #: token units (integer string)
    amount: str
    ledger_ref: str
    #: None while pending, then CREDITED, SUSPENDED or DROPPED
    outcome: str | None
    reason: str | None
    credit_operation_id: int | None
    suspense_operation_id: int | None
    resolved_operation_id: int | None
    recorded_at: datetime


class SuspenseResolve(Create):
    """Move a suspended redemption's parked amount to ``account_id`` (an AVAILABLE account of
    the token's asset), once."""

    chain_id: Annotated[int, Meta(ge=1, le=2**63 - 1)]
    tx_hash: Annotated[str, Meta(pattern=r"^0x[0-9a-f]{64}$")]
    log_index: Annotated[int, Meta(ge=0, le=2**31 - 1)]
    account_id: Annotated[int, Meta(ge=1, le=2**63 - 1)]
    reason: Reason
