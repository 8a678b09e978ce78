"""ERC-20 bridge-out, the ledger side: vCredits leave a user's AVAILABLE account and the same
amount is minted on the asset's token, exactly once.

A bridge-out is ONE ledger operation, BRIDGE_OUT (user AVAILABLE -> the asset's IN_FLIGHT
account), evaluated by the policy engine like any operation, whose mint
(``mint(to, amount, bridgeId)``) is its outbox row (:class:`core.types.ChainIntent`, purpose
``erc20_mint``, ref = the bridge id) written in the same database transaction. The outbox then
signs, sends and finalizes the mint; :func:`settle` ends it:

* the mint FINALIZED -> IN_FLIGHT -> BRIDGED_OUT (key ``bridge-final:<id>``);
* the mint proven impossible (reverted when mined, or refused by the contract before it was
  signed: paused, cap) and the bridge id unminted on-chain ->
  IN_FLIGHT -> the user, audited with the reason (key ``bridge-refund:<id>``).

The bridge id is derived from the request's idempotency key, so a retry builds the very same
command (same id, same calldata) and gets the stored result; the contract refuses a reused id.
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from sqlalchemy import text

from core.bridges.tokens import BridgeToken, get_token, to_token_units
from core.chain_txs import ChainTx, TxStatus, finished_unsettled, opt_bytes
from core.directory import Directory
from core.errors import (
    BridgePaused,
    InvalidAddress,
    LedgerError,
    UnknownBridgeOut,
    ValidationError,
)
from core.policy.versions import DryRun, dry_run
from core.types import (
    AccountKind,
    Actor,
    ChainIntent,
    Command,
    OperationType,
    PostOperation,
    SystemAccount,
    transfer_legs,
)
from merkle.tree import keccak256

if TYPE_CHECKING:
    from core.ledger import Ledger

__all__ = [
    "BATCH_PURPOSE",
    "MINT_PURPOSE",
    "BridgeOutOrder",
    "BridgeOutState",
    "BridgeOutView",
    "BridgeOuts",
    "Settlement",
    "check_address",
    "get_bridge_out",
    "list_bridge_outs",
    "mint_calldata",
    "settle",
    "settle_many",
    "unsettled_mints",
]

MINT_PURPOSE = "erc20_mint"
#: one transaction carrying the mints of many bridge-outs (``mintBatch``)
BATCH_PURPOSE = "erc20_mint_batch"
_MINT_SELECTOR = keccak256(b"mint(address,uint256,bytes32)")[:4]
_ZERO = "0x" + "0" * 40
MAX_PAGE = 200


class Settlement(StrEnum):
    FINAL = "bridge-final"
    REFUND = "bridge-refund"


def check_address(address: str) -> str:
    """``address`` if it is a non-zero EIP-55 checksummed address, else INVALID_ADDRESS."""
    body = address[2:] if address.startswith("0x") else ""
    if len(body) != 40 or any(c not in "0123456789abcdefABCDEF" for c in body):
        raise InvalidAddress("not a 20-byte hex address", field="to_address")
    if address.lower() == _ZERO:
        raise InvalidAddress("the zero address cannot receive tokens", field="to_address")
    digest = keccak256(body.lower().encode()).hex()
    expected = "".join(
        c.upper() if c.isalpha() and int(digest[i], 16) >= 8 else c.lower()
        for i, c in enumerate(body.lower())
    )
    if body != expected:
        raise InvalidAddress(
            f"the address must carry its EIP-55 checksum: 0x{expected}", field="to_address"
        )
    return address


def mint_calldata(to: str, amount: int, bridge_id: bytes) -> bytes:
    """ABI-encoded ``mint(address to, uint256 amount, bytes32 bridgeId)``."""
    return _MINT_SELECTOR + abi_encode(["address", "uint256", "bytes32"], [to, amount, bridge_id])


def decode_mint(data: bytes) -> tuple[str, int, bytes]:
    """(to, amount, bridge id) of calldata made by :func:`mint_calldata`."""
    if data[:4] != _MINT_SELECTOR:
        raise ValueError("not a mint(address,uint256,bytes32) call")
    to, amount, bridge_id = abi_decode(["address", "uint256", "bytes32"], data[4:])
    return str(to), int(amount), bytes(bridge_id)


def bridge_id_of(idempotency_key: str | None) -> bytes:
    """The 32-byte bridge id: from the request's key (a retry builds the same), else random."""
    if idempotency_key is None:
        return secrets.token_bytes(32)
    return keccak256(b"valueos:bridge-out:" + idempotency_key.encode())


@dataclass(frozen=True, slots=True)
class BridgeOutOrder:
    """Bridge ``amount`` (decimal text) of ``asset`` from the user's AVAILABLE account to
    ``to_address`` on the asset's token chain."""

    asset: str
    amount: str
    to_address: str


class BridgeOuts:
    def __init__(self, directory: Directory) -> None:
        self.directory = directory
        self.ledger: Ledger = directory.ledger

    async def plan(
        self, user: uuid.UUID, actor: Actor, order: BridgeOutOrder, *, key: str | None
    ) -> PostOperation:
        """The BRIDGE_OUT operation ``order`` stands for, with its mint; refuses (4xx) a bad
        address, an asset without a token, a paused bridge, an amount that does not map."""
        to = check_address(order.to_address)
        token: BridgeToken = await get_token(self.ledger, order.asset)
        if token.paused:
            raise BridgePaused(
                f"bridging {order.asset} out is paused: {token.pause_reason}", asset=order.asset
            )
        asset = await self.directory.asset(order.asset)
        amount = await self.directory.parse(order.amount, order.asset)
        units = to_token_units(amount, asset.scale, token.decimals)
        wallet = await self.directory.wallet(user, order.asset, actor)
        in_flight = await self.directory.system(order.asset, SystemAccount.IN_FLIGHT, actor)
        bridge_id = bridge_id_of(key)
        ref = bridge_id.hex()
        return PostOperation(
            OperationType.BRIDGE_OUT,
            transfer_legs(wallet[AccountKind.AVAILABLE], in_flight, order.asset, amount),
            actor,
            key,
            {"bridge": {"id": ref, "chain_id": token.chain_id, "token": token.address,
                        "to": to, "token_amount": str(units), "user": str(user)}},
            chain_intent=ChainIntent(
                MINT_PURPOSE, ref, token.chain_id, token.address,
                mint_calldata(to, units, bridge_id),
            ),
        )  # fmt: skip

    async def bridge_out(
        self, user: uuid.UUID, actor: Actor, order: BridgeOutOrder, *, key: str | None
    ) -> BridgeOutView:
        """Debit and store the mint (together); the bridge-out as it stands then."""
        command = await self.plan(user, actor, order, key=key)
        await self.ledger.post(command)
        assert command.chain_intent is not None  # noqa: S101 - plan() always sets it
        return await get_bridge_out(self.ledger, command.chain_intent.ref, user=None)

    async def dry_run(self, user: uuid.UUID, actor: Actor, order: BridgeOutOrder) -> DryRun:
        return await dry_run(self.ledger, await self.plan(user, actor, order, key=None))


def _settlement(tx: ChainTx, minted: bool | None) -> tuple[Settlement, str | None] | None:
    ended = tx.status in (TxStatus.FAILED, TxStatus.REJECTED, TxStatus.EXPIRED)
    if tx.status is TxStatus.FINALIZED or (ended and minted):
        return Settlement.FINAL, None
    if ended and minted is False:
        return Settlement.REFUND, f"mint impossible: {tx.last_error or 'reverted'}"
    return None


async def settle_many(
    ledger: Ledger,
    ended: Sequence[tuple[ChainTx, bool | None]],
    *,
    actor: Actor,
    directory: Directory | None = None,
) -> dict[str, Settlement | LedgerError]:
    """End the bridge-outs of ``ended`` (each mint row with whether the token says its id was
    minted; None: not asked) in one ledger batch: FINALIZED (or ended but minted) -> BRIDGED_OUT;
    FAILED or REJECTED and unminted -> refunded to the user; the others wait. Each settlement
    is an operation under a deterministic key, so settling again answers the stored result.
    Returns bridge id -> what became of it (or the ledger's refusal), for those settled."""
    decided = {tx.ref: d for tx, minted in ended if (d := _settlement(tx, minted)) is not None}
    if not decided:
        return {}
    async with ledger.engine.connect() as conn:
        rows = (
            await conn.execute(
                text(_VIEW + "AND o.metadata -> 'bridge' ->> 'id' = ANY(:refs)"),
                {"refs": list(decided)},
            )
        ).all()
    accounts = directory or Directory(ledger)
    refs: list[str] = []
    commands: list[Command] = []
    for out in (_view(r) for r in rows):
        kind, reason = decided[out.id]
        in_flight = await accounts.system(out.asset, SystemAccount.IN_FLIGHT, actor)
        if kind is Settlement.FINAL:
            target = await accounts.system(out.asset, SystemAccount.BRIDGED_OUT, actor)
            type_ = OperationType.BRIDGE_OUT_FINAL
        else:
            target, type_ = out.source_account, OperationType.BRIDGE_OUT_REFUND
        refs.append(out.id)
        commands.append(
            PostOperation(
                type_, transfer_legs(in_flight, target, out.asset, out.amount), actor,
                f"{kind}:{out.id}", {"bridge": {"id": out.id, "debit": out.debit_operation}},
                reason=reason,
            )
        )  # fmt: skip
    results = await ledger.post_many(commands)
    return {
        ref: result if isinstance(result, LedgerError) else decided[ref][0]
        for ref, result in zip(refs, results, strict=True)
    }


async def settle(
    ledger: Ledger,
    tx: ChainTx,
    *,
    minted: bool | None,
    actor: Actor,
    directory: Directory | None = None,
) -> Settlement | None:
    """:func:`settle_many` of one bridge-out; a refusal raises."""
    done = (await settle_many(ledger, [(tx, minted)], actor=actor, directory=directory)).get(tx.ref)
    if isinstance(done, LedgerError):
        raise done
    return done


class BridgeOutState(StrEnum):
    #: debited into IN_FLIGHT; the mint is on its way (see ``tx_status``)
    IN_FLIGHT = "IN_FLIGHT"
    #: the mint is final: IN_FLIGHT -> BRIDGED_OUT
    MINTED = "MINTED"
    #: the mint proved impossible: IN_FLIGHT -> back to the user
    REFUNDED = "REFUNDED"


@dataclass(frozen=True, slots=True)
class BridgeOutView:
    id: str
    user: uuid.UUID
    source_account: int
    asset: str
    amount: int
    token_amount: int
    to_address: str
    chain_id: int
    token: str
    state: BridgeOutState
    tx_status: TxStatus | None
    tx_hash: bytes | None
    block_number: int | None
    debit_operation: int
    settle_operation: int | None
    created_at: datetime


_VIEW = """
SELECT o.id AS debit_id, o.metadata -> 'bridge' AS bridge, o.created_at, d.asset,
       d.account_id AS source_account,
       -d.amount AS amount, t.status AS tx_status, t.tx_hash, t.block_number,
       s.id AS settle_id, s.type AS settle_type
FROM operations o
JOIN ledger_entries d ON d.operation_id = o.id AND d.amount < 0
     AND d.seq BETWEEN o.first_seq AND o.last_seq
LEFT JOIN chain_txs t ON t.purpose IN ('erc20_mint', 'sac_mint')
     AND t.ref = o.metadata -> 'bridge' ->> 'id'
LEFT JOIN operations s ON s.idempotency_key = ANY(ARRAY[
     'bridge-final:' || (o.metadata -> 'bridge' ->> 'id'),
     'bridge-refund:' || (o.metadata -> 'bridge' ->> 'id')])
WHERE o.type = 'BRIDGE_OUT' AND o.status = 'COMPLETED'
"""


def _view(r: Any) -> BridgeOutView:
    b = r.bridge if isinstance(r.bridge, dict) else json.loads(r.bridge)
    state = {
        None: BridgeOutState.IN_FLIGHT,
        OperationType.BRIDGE_OUT_FINAL.value: BridgeOutState.MINTED,
        OperationType.BRIDGE_OUT_REFUND.value: BridgeOutState.REFUNDED,
    }[r.settle_type]
    return BridgeOutView(
        b["id"], uuid.UUID(b["user"]), r.source_account, r.asset, int(r.amount),
        int(b["token_amount"]), b["to"], int(b["chain_id"]), b["token"], state,
        None if r.tx_status is None else TxStatus(r.tx_status), opt_bytes(r.tx_hash),
        r.block_number, r.debit_id, r.settle_id, r.created_at,
    )  # fmt: skip


async def get_bridge_out(ledger: Ledger, ref: str, *, user: uuid.UUID | None) -> BridgeOutView:
    """Bridge-out ``ref``; ``user`` given: only theirs (another's answers as unknown)."""
    async with ledger.engine.connect() as conn:
        row = (
            await conn.execute(
                text(_VIEW + "AND o.metadata -> 'bridge' ->> 'id' = :ref"), {"ref": ref}
            )
        ).first()
    if row is None or (user is not None and _view(row).user != user):
        raise UnknownBridgeOut(f"bridge-out {ref} does not exist", bridge_id=ref)
    return _view(row)


async def list_bridge_outs(
    ledger: Ledger, user: uuid.UUID, *, before_operation: int | None = None, limit: int = 50
) -> list[BridgeOutView]:
    """``user``'s bridge-outs, newest first; page with the last one's ``debit_operation``."""
    if not 1 <= limit <= MAX_PAGE:
        raise ValidationError(f"limit must be between 1 and {MAX_PAGE}", field="limit")
    async with ledger.engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    _VIEW + "AND o.metadata -> 'bridge' ->> 'user' = :u "
                    "AND (CAST(:before AS bigint) IS NULL OR o.id < :before) "
                    "ORDER BY o.id DESC LIMIT :n"
                ),
                {"u": str(user), "before": before_operation, "n": limit},
            )
        ).all()
    return [_view(r) for r in rows]


async def unsettled_mints(
    ledger: Ledger, *, limit: int = 500, purpose: str = MINT_PURPOSE
) -> list[ChainTx]:
    """Mint rows (of ``purpose``) the outbox has finished with (FINALIZED, FAILED, REJECTED,
    EXPIRED) whose bridge-out is not settled yet, oldest first."""
    return await finished_unsettled(
        ledger.engine, purpose, ("bridge-final:", "bridge-refund:"), limit=limit
    )
