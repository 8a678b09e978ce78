"""Core value types: what callers ask the ledger for and what it answers.

Plain frozen dataclasses, no I/O. Amounts are ``int`` minor units everywhere.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, NamedTuple
from uuid import UUID


class Side(StrEnum):
    DEBIT = "DEBIT"  # decreases the account's balance
    CREDIT = "CREDIT"  # increases it


class AccountKind(StrEnum):
    AVAILABLE = "AVAILABLE"
    BLOCKED = "BLOCKED"
    LOCKED = "LOCKED"
    CREDIT = "CREDIT"
    COLLATERAL = "COLLATERAL"
    VAULT = "VAULT"
    SYSTEM = "SYSTEM"


#: The three wallet compartments every (owner, asset) pair gets.
WALLET_KINDS = (AccountKind.AVAILABLE, AccountKind.BLOCKED, AccountKind.LOCKED)


class SystemAccount(StrEnum):
    ISSUANCE = "ISSUANCE"  # unbounded: the source of every mint
    OMNIBUS = "OMNIBUS"  # unbounded: the counterpart of external deposits
    FEES = "FEES"
    IN_FLIGHT = "IN_FLIGHT"
    BRIDGED_OUT = "BRIDGED_OUT"
    SUSPENSE = "SUSPENSE"  # floor 0: what came back over a bridge for no valid account
    CARD_SETTLEMENT = "CARD_SETTLEMENT"  # card spends captured from credit lines
    LIQUIDATION = "LIQUIDATION"  # unbounded: buys liquidated collateral, pays the proceeds
    BAD_DEBT = "BAD_DEBT"  # unbounded: debt written off after all collateral was sold
    INTEREST_INCOME = "INTEREST_INCOME"  # interest charged on credit lines


#: System accounts that may go negative without bound.
UNBOUNDED_SYSTEM_ACCOUNTS = frozenset(
    {
        SystemAccount.ISSUANCE,
        SystemAccount.OMNIBUS,
        SystemAccount.LIQUIDATION,
        SystemAccount.BAD_DEBT,
    }
)


class AccountStatus(StrEnum):
    ACTIVE = "ACTIVE"
    FROZEN = "FROZEN"


class AssetKind(StrEnum):
    POINTS = "POINTS"
    MILES = "MILES"
    FIAT_CREDIT = "FIAT_CREDIT"
    COLLATERAL = "COLLATERAL"


class OperationType(StrEnum):
    DEPOSIT = "DEPOSIT"
    MINT = "MINT"
    BURN = "BURN"
    TRANSFER = "TRANSFER"
    RELEASE = "RELEASE"
    LOCK = "LOCK"
    UNLOCK = "UNLOCK"
    HOLD_CAPTURE = "HOLD_CAPTURE"
    ADJUSTMENT = "ADJUSTMENT"
    REVERSAL = "REVERSAL"
    FEE = "FEE"
    INTERNAL_MOVE = "INTERNAL_MOVE"  # between one's own compartments and vaults
    P2P_SETTLEMENT = "P2P_SETTLEMENT"  # a payer accepting a peer's request for funds
    BRIDGE_OUT = "BRIDGE_OUT"  # a user's credits leave for a chain: AVAILABLE -> IN_FLIGHT
    BRIDGE_OUT_FINAL = "BRIDGE_OUT_FINAL"  # the mint is final: IN_FLIGHT -> BRIDGED_OUT
    BRIDGE_OUT_REFUND = "BRIDGE_OUT_REFUND"  # the mint proved impossible: IN_FLIGHT -> user
    BRIDGE_IN = "BRIDGE_IN"  # tokens burnt for the user, final: BRIDGED_OUT -> user AVAILABLE
    BRIDGE_IN_SUSPENSE = "BRIDGE_IN_SUSPENSE"  # burnt for no valid account: BRIDGED_OUT -> SUSPENSE
    SUSPENSE_RESOLVED = "SUSPENSE_RESOLVED"  # staff, with a reason: SUSPENSE -> user AVAILABLE
    COLLATERAL_DEPOSIT = "COLLATERAL_DEPOSIT"  # user AVAILABLE -> user COLLATERAL
    COLLATERAL_WITHDRAW = "COLLATERAL_WITHDRAW"  # user COLLATERAL -> user AVAILABLE
    LIQUIDATION = "LIQUIDATION"  # collateral sold to LIQUIDATION; proceeds repay the line
    CUSHION_APPLIED = "CUSHION_APPLIED"  # the yield cushion repays the line
    YIELD_CREDIT = "YIELD_CREDIT"  # staking yield into the cushion: OMNIBUS -> cushion
    INTEREST = "INTEREST"  # a day's interest: credit account -> INTEREST_INCOME
    REPAYMENT = "REPAYMENT"  # fiat received: OMNIBUS -> credit account (+ AVAILABLE surplus)


#: Operation types that need a written reason (audited as sensitive).
REASON_REQUIRED = frozenset(
    {OperationType.RELEASE, OperationType.ADJUSTMENT, OperationType.REVERSAL}
)


class OperationStatus(StrEnum):
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


class HoldStatus(StrEnum):
    PENDING = "PENDING"
    POSTED = "POSTED"
    VOIDED = "VOIDED"
    EXPIRED = "EXPIRED"


class Role(StrEnum):
    USER = "USER"
    ADMIN = "ADMIN"
    COMPLIANCE = "COMPLIANCE"
    OPS = "OPS"
    READ_ONLY = "READ_ONLY"
    AUDITOR = "AUDITOR"
    SYSTEM = "SYSTEM"


@dataclass(frozen=True, slots=True)
class Actor:
    """Who asks. Recorded on every operation and audit record."""

    id: str
    role: Role = Role.SYSTEM
    ip: str | None = None


SYSTEM_ACTOR = Actor("system", Role.SYSTEM)


@dataclass(frozen=True, slots=True)
class EntrySpec:
    """One requested leg: ``amount`` (> 0) is debited from or credited to an account."""

    account_id: int
    asset: str
    amount: int
    side: Side

    @property
    def signed(self) -> int:
        return self.amount if self.side is Side.CREDIT else -self.amount


def transfer_legs(source: int, destination: int, asset: str, amount: int) -> tuple[EntrySpec, ...]:
    """The two legs of moving ``amount`` from ``source`` to ``destination``."""
    return (
        EntrySpec(source, asset, amount, Side.DEBIT),
        EntrySpec(destination, asset, amount, Side.CREDIT),
    )


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()


def request_hash(kind: str, payload: Any) -> bytes:
    """sha256 of a canonical encoding: equal requests hash equal, whoever sends them."""
    return hashlib.sha256(kind.encode() + b"\x00" + _canonical(payload)).digest()


# ---------------------------------------------------------------------------
# Commands: the write path accepts exactly these.
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChainIntent:
    """An on-chain transaction an operation commits to: stored as a BUILT row of the outbox
    (``core.chain_txs``) in the same database transaction as the operation, so the two exist
    together or not at all; ``purpose`` + ``ref`` name it."""

    purpose: str
    ref: str
    chain_id: int
    to_address: str
    data: bytes
    value_wei: int = 0

    def hash_fields(self) -> list[Any]:
        return [self.purpose, self.ref, self.chain_id, self.to_address.lower(),
                self.data.hex(), self.value_wei]  # fmt: skip


@dataclass(frozen=True, slots=True)
class PostOperation:
    type: OperationType
    entries: tuple[EntrySpec, ...]
    actor: Actor = SYSTEM_ACTOR
    idempotency_key: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None
    #: the saga (over HTTP: the transaction) this operation belongs to
    saga_id: UUID | None = None
    #: an outbox row written with the operation (a bridge's mint)
    chain_intent: ChainIntent | None = None

    def request_hash(self) -> bytes:
        payload: dict[str, Any] = {
            "type": self.type.value,
            "entries": [[e.account_id, e.asset, e.amount, e.side.value] for e in self.entries],
            "metadata": self.metadata,
            "reason": self.reason,
            # the key predates the name "saga"; stored request hashes depend on it
            "transaction_id": str(self.saga_id) if self.saga_id else None,
        }
        if self.chain_intent is not None:  # absent: the hash of every earlier command holds
            payload["chain_intent"] = self.chain_intent.hash_fields()
        return request_hash("post", payload)


@dataclass(frozen=True, slots=True)
class CreateHold:
    """Reserve ``amount`` on ``source`` for a later transfer to ``destination``."""

    source: int
    destination: int
    asset: str
    amount: int
    expires_at: datetime
    actor: Actor = SYSTEM_ACTOR
    idempotency_key: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def request_hash(self) -> bytes:
        return request_hash(
            "hold",
            [
                self.source,
                self.destination,
                self.asset,
                self.amount,
                self.expires_at.isoformat(),
                self.metadata,
            ],
        )


@dataclass(frozen=True, slots=True)
class CaptureHold:
    """Post a pending hold, fully (``amount=None``) or partially; the rest is released.

    ``keep_rest``: only ``amount`` leaves the reservation, the rest stays reserved (the hold
    remains PENDING until its remaining amount is captured, it is voided or it expires).
    ``destination``: the account credited instead of the hold's own destination (an offline
    allowance pays a different payee with each capture)."""

    hold_id: int
    amount: int | None = None
    actor: Actor = SYSTEM_ACTOR
    idempotency_key: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    destination: int | None = None
    keep_rest: bool = False

    def request_hash(self) -> bytes:
        payload: list[Any] = [self.hold_id, self.amount, self.metadata]
        if self.destination is not None or self.keep_rest:  # absent: earlier hashes hold
            payload += [self.destination, self.keep_rest]
        return request_hash("capture", payload)


@dataclass(frozen=True, slots=True)
class VoidHold:
    hold_id: int
    actor: Actor = SYSTEM_ACTOR
    reason: str | None = None
    idempotency_key: str | None = None
    #: set by the expiry job: the hold ends EXPIRED instead of VOIDED
    expire: bool = False

    def request_hash(self) -> bytes:
        return request_hash("void", [self.hold_id, self.reason, self.expire])


@dataclass(frozen=True, slots=True)
class ReverseOperation:
    """Post the exact opposite of a completed operation. Allowed once per operation."""

    operation_id: int
    reason: str
    actor: Actor = SYSTEM_ACTOR
    idempotency_key: str | None = None

    def request_hash(self) -> bytes:
        return request_hash("reverse", [self.operation_id, self.reason])


Command = PostOperation | CreateHold | CaptureHold | VoidHold | ReverseOperation


# ---------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------


class PostedEntry(NamedTuple):
    """One entry of a posted operation (a named tuple: a batch builds two per transfer, and
    a tuple is built four times faster than a frozen dataclass)."""

    seq: int
    account_id: int
    asset: str
    amount: int  # signed: credit > 0, debit < 0
    balance_after: int


@dataclass(frozen=True, slots=True)
class OperationResult:
    operation_id: int
    type: OperationType
    epoch: int
    entries: tuple[PostedEntry, ...]
    created_at: datetime
    reverses: int | None = None
    hold_id: int | None = None
    #: True when this is the stored answer to an earlier request with the same key
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class HoldResult:
    hold_id: int
    status: HoldStatus
    source: int
    destination: int
    asset: str
    amount: int
    remaining: int
    expires_at: datetime
    replayed: bool = False


Result = OperationResult | HoldResult


@dataclass(frozen=True, slots=True)
class Balance:
    account_id: int
    asset: str
    posted: int
    pending: int
    floor: int | None

    @property
    def available(self) -> int:
        return self.posted - self.pending


@dataclass(frozen=True, slots=True)
class Drift:
    """A reconciler finding: what the entries say (``expected``) versus what is stored.

    ``subject`` is "account" (a cached balance field drifted), "operation" (its entries
    do not sum to zero for an asset; ``field`` is then ``sum:<ASSET>``) or "entry" (``id`` is
    the seq: its ``balance_after`` is not the running sum of its account's amounts).
    """

    subject: str
    id: int
    field: str
    expected: int
    found: int
