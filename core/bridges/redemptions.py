"""ERC-20 bridge-in, the ledger side: tokens burnt on-chain with ``redeem(amount, ledgerRef)``
come back to the ledger exactly once, and only from a final block.

A ``Redeemed`` event is a redemption, keyed by (chain id, transaction hash, log index):

1. :func:`record_redemptions` stores a page of events (read from final blocks only); the same
   event read again (a page re-read after a crash, an overlap) is a no-op.
2. :func:`credit_final` settles each pending one, in chain order, once its block hash is
   still the canonical one at its height (else it is DROPPED, never credited):

   * ``ledgerRef`` (the ledger account id, big-endian in the low bytes) names an ACTIVE
     AVAILABLE account of the token's asset, and the token amount maps exactly onto minor
     units (the inverse of :func:`core.bridges.tokens.to_token_units`) -> BRIDGE_IN:
     BRIDGED_OUT -> that account (key ``bridge-in:<key>``);
   * otherwise, or when the ledger refuses that credit (a policy, a race with a freeze) ->
     BRIDGE_IN_SUSPENSE: BRIDGED_OUT -> SUSPENSE (key ``bridge-in-suspense:<key>``), the reason
     on the operation, on the redemption and in an audit record. An amount that does not map
     exactly parks its whole minor units and keeps the token remainder in the reason.

3. :func:`resolve_suspense` (staff, with a reason) moves a parked amount to a named AVAILABLE
   account, once: SUSPENSE_RESOLVED (key ``suspense-resolved:<key>:<account>``), audited.

Exactly once: the two settling postings are serialized per token (a transaction-scoped
advisory lock held while a token's redemptions are settled), and before posting anything the
redemption's operations are looked up by its key (``metadata.redemption.key``): a crash
between a posting and the row's update is repaired by adopting the posted operation.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from core import audit
from core.accounts import Account
from core.errors import (
    AccountFrozen,
    AssetMismatch,
    Forbidden,
    LedgerError,
    ReasonRequired,
    RedemptionNotSuspended,
    StorageError,
    SuspenseAlreadyResolved,
    UnknownAccount,
    UnknownRedemption,
    ValidationError,
)
from core.money import INT64_MAX
from core.types import (
    AccountKind,
    AccountStatus,
    Actor,
    OperationType,
    PostOperation,
    Role,
    SystemAccount,
    transfer_legs,
)

if TYPE_CHECKING:
    from core.ledger import Ledger

__all__ = [
    "Outcome",
    "Redeemed",
    "RedemptionKey",
    "RedemptionView",
    "advance_cursor",
    "chain_tokens",
    "credit_final",
    "get_redemption",
    "next_block",
    "record_redemptions",
    "resolve_suspense",
    "suspended_redemptions",
    "to_minor_units",
]

log = logging.getLogger(__name__)

#: who may move a parked amount out of SUSPENSE
STAFF = frozenset({Role.ADMIN, Role.COMPLIANCE, Role.OPS})
MAX_PAGE = 200

#: (block number) -> the canonical block hash there, None above the head
CanonicalHash = Callable[[int], Awaitable[bytes | None]]


class Outcome(StrEnum):
    CREDITED = "CREDITED"
    SUSPENDED = "SUSPENDED"
    #: its block left the canonical chain: never credited
    DROPPED = "DROPPED"


@dataclass(frozen=True, slots=True)
class RedemptionKey:
    chain_id: int
    tx_hash: bytes
    log_index: int

    def __str__(self) -> str:
        return f"{self.chain_id}:0x{self.tx_hash.hex()}:{self.log_index}"

    def params(self) -> dict[str, Any]:
        return {"c": self.chain_id, "tx": self.tx_hash, "li": self.log_index}


@dataclass(frozen=True, slots=True)
class RedemptionView:
    key: RedemptionKey
    token: str
    block_number: int
    block_hash: bytes
    sender: str
    #: token units
    amount: int
    ledger_ref: bytes
    #: None while pending
    outcome: Outcome | None
    reason: str | None
    credit_operation: int | None
    suspense_operation: int | None
    resolved_operation: int | None
    recorded_at: datetime


def _view(r: Any) -> RedemptionView:
    return RedemptionView(
        RedemptionKey(r.chain_id, bytes(r.tx_hash), r.log_index), r.token, r.block_number,
        bytes(r.block_hash), r.sender, int(r.amount), bytes(r.ledger_ref),
        None if r.outcome is None else Outcome(r.outcome), r.reason, r.credit_operation,
        r.suspense_operation, r.resolved_operation, r.recorded_at,
    )  # fmt: skip


def to_minor_units(units: int, scale: int, decimals: int) -> tuple[int, int]:
    """``units`` token units as (minor units, token units left over): the inverse of
    :func:`core.bridges.tokens.to_token_units`; the remainder is 0 when the amount maps exactly."""
    if decimals >= scale:
        minor, rest = divmod(units, 10 ** (decimals - scale))
        return minor, rest
    return units * 10 ** (scale - decimals), 0


class Redeemed(Protocol):
    """A ``Redeemed(from, amount, ledgerRef)`` event as read from the chain (the shape of
    ``chain.evm.bridge_token.Redemption``; core does not import the chain layer)."""

    @property
    def tx_hash(self) -> bytes: ...
    @property
    def log_index(self) -> int: ...
    @property
    def block_number(self) -> int: ...
    @property
    def block_hash(self) -> bytes: ...
    @property
    def sender(self) -> str: ...
    @property
    def amount(self) -> int: ...
    @property
    def ledger_ref(self) -> bytes: ...


# -- the cursor -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChainToken:
    asset: str
    address: str
    decimals: int


async def chain_tokens(ledger: Ledger, chain_id: int) -> list[ChainToken]:
    """The bridge tokens registered on ``chain_id`` (paused ones too: a pause stops only the
    way out)."""
    async with ledger.engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT asset, address, decimals FROM bridge_tokens WHERE chain_id = :c "
                 "ORDER BY asset"), {"c": chain_id},
        )  # fmt: skip
        return [ChainToken(r.asset, r.address, r.decimals) for r in rows]


async def next_block(ledger: Ledger, chain_id: int, token: str, *, start: int = 0) -> int:
    """The next block to read for ``token`` (``start`` for a token never read)."""
    async with ledger.engine.begin() as conn:
        await conn.execute(
            text("INSERT INTO bridge_cursors (chain_id, token, next_block) VALUES (:c, :t, :s) "
                 "ON CONFLICT DO NOTHING"), {"c": chain_id, "t": token, "s": start},
        )  # fmt: skip
        found = await conn.scalar(
            text("SELECT next_block FROM bridge_cursors WHERE chain_id = :c AND token = :t"),
            {"c": chain_id, "t": token},
        )
    return int(found)


async def advance_cursor(ledger: Ledger, chain_id: int, token: str, old: int, new: int) -> bool:
    """Move ``token``'s cursor from ``old`` to ``new``; False (nothing moved) when it is no
    longer at ``old`` (another pass got there first)."""
    async with ledger.engine.begin() as conn:
        moved = await conn.execute(
            text("UPDATE bridge_cursors SET next_block = :n, updated_at = now() "
                 "WHERE chain_id = :c AND token = :t AND next_block = :o"),
            {"c": chain_id, "t": token, "o": old, "n": new},
        )  # fmt: skip
    return bool(moved.rowcount)


# -- recording --------------------------------------------------------------------------------

_RECORD = text(
    "INSERT INTO bridge_redemptions AS r (chain_id, tx_hash, log_index, token, block_number, "
    "block_hash, sender, amount, ledger_ref) VALUES (:c, :tx, :li, :t, :bn, :bh, :s, :a, :ref) "
    "ON CONFLICT (chain_id, tx_hash, log_index) DO UPDATE SET "
    "block_number = EXCLUDED.block_number, block_hash = EXCLUDED.block_hash, "
    "sender = EXCLUDED.sender, amount = EXCLUDED.amount, "
    "ledger_ref = EXCLUDED.ledger_ref, outcome = NULL "
    "WHERE r.block_hash <> EXCLUDED.block_hash AND (r.outcome IS NULL OR r.outcome = 'DROPPED') "
    "RETURNING (xmax = 0) AS inserted"
)


async def record_redemptions(
    ledger: Ledger, chain_id: int, token: str, page: Sequence[Redeemed]
) -> int:
    """Store ``page`` (one transaction); returns how many were new. An event already stored is
    left as it is, unless it was re-included in another block before it was settled (or after
    its first block was dropped): then it is pending again at its new block."""
    new = 0
    async with ledger.engine.begin() as conn:
        for ev in page:
            row = (
                await conn.execute(
                    _RECORD,
                    {
                        "c": chain_id,
                        "tx": ev.tx_hash,
                        "li": ev.log_index,
                        "t": token,
                        "bn": ev.block_number,
                        "bh": ev.block_hash,
                        "s": ev.sender,
                        "a": Decimal(ev.amount),
                        "ref": ev.ledger_ref,
                    },
                )
            ).first()
            new += int(row is not None and row.inserted)
    return new


# -- settling ---------------------------------------------------------------------------------


def _meta(view: RedemptionView) -> dict[str, Any]:
    return {"redemption": {
        "key": str(view.key), "chain_id": view.key.chain_id, "tx": "0x" + view.key.tx_hash.hex(),
        "log_index": view.key.log_index, "token": view.token, "sender": view.sender,
        "token_amount": str(view.amount), "ledger_ref": "0x" + view.ledger_ref.hex(),
    }}  # fmt: skip


async def _operations_of(conn: AsyncConnection, key: RedemptionKey) -> dict[OperationType, int]:
    """The COMPLETED operations posted for redemption ``key``, by type."""
    rows = await conn.execute(
        text("SELECT id, type FROM operations WHERE metadata -> 'redemption' ->> 'key' = :k "
             "AND type IN ('BRIDGE_IN', 'BRIDGE_IN_SUSPENSE', 'SUSPENSE_RESOLVED') "
             "AND status = 'COMPLETED' ORDER BY id"), {"k": str(key)},
    )  # fmt: skip
    return {OperationType(r.type): int(r.id) for r in rows}


async def _account(ledger: Ledger, account_id: int) -> Account | None:
    try:
        return await ledger.accounts.get_account(account_id)
    except UnknownAccount:
        return None


def _refusal(ref: bytes, account: Account | None, asset: str) -> str | None:
    """Why ``ref`` cannot be credited with ``asset``, None when it can."""
    number = int.from_bytes(ref, "big")
    if number == 0:
        return (
            "no ledger account is named (ledgerRef 0: on Stellar, a burn whose from is "
            "linked to no user)"
        )
    if account is None:
        return f"ledgerRef 0x{ref.hex()} names no ledger account" + (
            "" if 0 < number <= INT64_MAX else " (not an account id)"
        )
    if account.kind is not AccountKind.AVAILABLE:
        return f"account {account.id} is a {account.kind} account, not AVAILABLE"
    if account.asset != asset:
        return f"account {account.id} holds {account.asset}, not {asset}"
    if account.status is not AccountStatus.ACTIVE:
        return f"account {account.id} is {account.status}"
    return None


@dataclass(frozen=True, slots=True)
class _Decision:
    outcome: Outcome
    operation: int | None
    reason: str | None


async def _settle_one(
    ledger: Ledger, view: RedemptionView, token: ChainToken, actor: Actor
) -> _Decision | None:
    """Post what ``view`` comes to; None when nothing can be posted now (left pending)."""
    asset = await ledger.accounts.get_asset(token.asset)
    minor, rest = to_minor_units(view.amount, asset.scale, token.decimals)
    number = int.from_bytes(view.ledger_ref, "big")
    account = await _account(ledger, number) if 0 < number <= INT64_MAX else None
    reason = _refusal(view.ledger_ref, account, token.asset)
    if rest:
        reason = (
            f"{view.amount} token units do not map exactly onto {token.asset} (scale "
            f"{asset.scale}, {token.decimals} decimals): {rest} token units left over"
        )
    if minor > INT64_MAX or minor == 0:
        why = "exceeds the ledger's 64-bit range" if minor else "is less than one minor unit"
        return _Decision(Outcome.SUSPENDED, None, f"{view.amount} token units {why}")
    bridged = await ledger.accounts.system_account(
        token.asset, SystemAccount.BRIDGED_OUT, actor=actor
    )
    held = (await ledger.queries.balances([bridged]))[bridged]
    if held.posted - held.pending < minor:
        log.error(
            "redemption %s: BRIDGED_OUT of %s holds %d < %d minor units; left pending (the "
            "supply invariant is broken)", view.key, token.asset, held.posted - held.pending, minor,
        )  # fmt: skip
        return None
    meta = _meta(view)
    if reason is None and account is not None:
        try:
            done = await ledger.post(
                PostOperation(
                    OperationType.BRIDGE_IN,
                    transfer_legs(bridged, account.id, token.asset, minor),
                    actor, f"bridge-in:{view.key}", meta,
                )
            )  # fmt: skip
            return _Decision(Outcome.CREDITED, done.operation_id, None)
        except StorageError:
            raise
        except LedgerError as exc:
            reason = f"the credit of account {account.id} was refused: {exc.code}: {exc.message}"
    assert reason is not None  # noqa: S101 - either refused above or by _refusal
    suspense = await ledger.accounts.system_account(
        token.asset, SystemAccount.SUSPENSE, actor=actor
    )
    parked = await ledger.post(
        PostOperation(
            OperationType.BRIDGE_IN_SUSPENSE,
            transfer_legs(bridged, suspense, token.asset, minor),
            actor, f"bridge-in-suspense:{view.key}", meta, reason=reason,
        )
    )  # fmt: skip
    return _Decision(Outcome.SUSPENDED, parked.operation_id, reason)


_PENDING = (
    "SELECT * FROM bridge_redemptions WHERE chain_id = :c AND token = :t AND outcome IS NULL "
    "AND block_number <= :upto ORDER BY block_number, log_index"
)


async def credit_final(
    ledger: Ledger,
    chain_id: int,
    token: ChainToken,
    *,
    up_to_block: int,
    canonical: CanonicalHash,
    actor: Actor,
) -> dict[RedemptionKey, Outcome]:
    """Settle ``token``'s pending redemptions of blocks up to ``up_to_block`` (final ones: the
    caller's finality rule), in chain order; returns what each became (those whose posting
    failed stay pending and are logged). Serialized per token across processes."""
    done: dict[RedemptionKey, Outcome] = {}
    hashes: dict[int, bytes | None] = {}
    async with ledger.engine.begin() as lock:
        await lock.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
            {"k": f"bridge-in:{chain_id}:{token.address.lower()}"},
        )
        rows = (
            await lock.execute(
                text(_PENDING), {"c": chain_id, "t": token.address, "upto": up_to_block}
            )
        ).all()
        for view in map(_view, rows):
            if view.block_number not in hashes:
                hashes[view.block_number] = await canonical(view.block_number)
            if hashes[view.block_number] is None:  # the node is behind: no evidence either way
                continue
            if hashes[view.block_number] != view.block_hash:
                await _finish(ledger, view, _Decision(Outcome.DROPPED, None, None), actor)
                done[view.key] = Outcome.DROPPED
                log.warning("redemption %s: block %d was replaced; dropped", view.key,
                            view.block_number)  # fmt: skip
                continue
            decision = await _adopted(ledger, view)
            if decision is None:
                try:
                    decision = await _settle_one(ledger, view, token, actor)
                except StorageError:
                    raise
                except LedgerError:
                    log.exception("redemption %s: not settled; retried on the next pass", view.key)
                    continue
            if decision is not None:
                await _finish(ledger, view, decision, actor)
                done[view.key] = decision.outcome
    return done


async def _adopted(ledger: Ledger, view: RedemptionView) -> _Decision | None:
    """What an earlier, interrupted pass already posted for ``view``, if anything."""
    async with ledger.engine.connect() as conn:
        ops = await _operations_of(conn, view.key)
        if OperationType.BRIDGE_IN in ops:
            return _Decision(Outcome.CREDITED, ops[OperationType.BRIDGE_IN], None)
        if OperationType.BRIDGE_IN_SUSPENSE in ops:
            op = ops[OperationType.BRIDGE_IN_SUSPENSE]
            reason = await conn.scalar(
                text("SELECT reason FROM operations WHERE id = :id"), {"id": op}
            )
            return _Decision(Outcome.SUSPENDED, op, str(reason))
    return None


async def _finish(ledger: Ledger, view: RedemptionView, decision: _Decision, actor: Actor) -> None:
    """Store what ``view`` became (once: only a pending row changes); a suspension or a drop is
    audited in the same transaction."""
    async with ledger.engine.begin() as conn:
        changed = await conn.execute(
            text("UPDATE bridge_redemptions SET outcome = :o, reason = :r, "
                 "credit_operation = :cr, suspense_operation = :su "
                 "WHERE chain_id = :c AND tx_hash = :tx AND log_index = :li AND outcome IS NULL"),
            {**view.key.params(), "o": decision.outcome.value, "r": decision.reason,
             "cr": decision.operation if decision.outcome is Outcome.CREDITED else None,
             "su": decision.operation if decision.outcome is Outcome.SUSPENDED else None},
        )  # fmt: skip
        if changed.rowcount and decision.outcome is not Outcome.CREDITED:
            await audit.record(
                conn, actor, f"bridge_in.{decision.outcome.lower()}", "bridge_redemption",
                view.key, after={"operation": decision.operation, "token_amount": str(view.amount),
                                 "ledger_ref": "0x" + view.ledger_ref.hex(),
                                 "block_number": view.block_number},
                reason=decision.reason or "its block is no longer canonical",
            )  # fmt: skip


# -- suspense ---------------------------------------------------------------------------------

_ONE = "SELECT * FROM bridge_redemptions WHERE chain_id = :c AND tx_hash = :tx AND log_index = :li"


async def get_redemption(ledger: Ledger, key: RedemptionKey) -> RedemptionView:
    async with ledger.engine.connect() as conn:
        row = (await conn.execute(text(_ONE), key.params())).first()
    if row is None:
        raise UnknownRedemption(f"redemption {key} is not recorded", redemption=str(key))
    return _view(row)


async def suspended_redemptions(
    ledger: Ledger, *, unresolved_only: bool = True, limit: int = 50
) -> list[RedemptionView]:
    """Redemptions parked in suspense (by default only those still to resolve), oldest first."""
    if not 1 <= limit <= MAX_PAGE:
        raise ValidationError(f"limit must be between 1 and {MAX_PAGE}", field="limit")
    async with ledger.engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT * FROM bridge_redemptions WHERE outcome = 'SUSPENDED' "
                 "AND (NOT :open OR resolved_operation IS NULL) "
                 "ORDER BY recorded_at, chain_id, tx_hash, log_index LIMIT :n"),
            {"open": unresolved_only, "n": limit},
        )  # fmt: skip
        return [_view(r) for r in rows]


async def resolve_suspense(
    ledger: Ledger, key: RedemptionKey, account_id: int, actor: Actor, reason: str
) -> RedemptionView:
    """Move redemption ``key``'s parked amount from SUSPENSE to ``account_id`` (an ACTIVE
    AVAILABLE account of the asset), once; staff only, with a reason, audited."""
    if actor.role not in STAFF:
        raise Forbidden("only staff resolve suspense", role=actor.role.value)
    if not reason.strip():
        raise ReasonRequired("resolving suspense needs a reason", field="reason")
    async with ledger.engine.begin() as conn:
        row = (await conn.execute(text(_ONE + " FOR UPDATE"), key.params())).first()
        if row is None:
            raise UnknownRedemption(f"redemption {key} is not recorded", redemption=str(key))
        view = _view(row)
        if view.suspense_operation is None:
            raise RedemptionNotSuspended(
                f"redemption {key} has nothing parked in suspense", redemption=str(key)
            )
        if view.resolved_operation is not None:
            raise SuspenseAlreadyResolved(
                f"redemption {key} was resolved by operation {view.resolved_operation}",
                redemption=str(key),
            )
        # an earlier call may have posted and died before the update: adopt its operation
        resolved = (await _operations_of(conn, key)).get(OperationType.SUSPENSE_RESOLVED)
        if resolved is None:
            resolved = await _resolve(ledger, view, account_id, actor, reason)
        await conn.execute(
            text("UPDATE bridge_redemptions SET resolved_operation = :op "
                 "WHERE chain_id = :c AND tx_hash = :tx AND log_index = :li"),
            {**key.params(), "op": resolved},
        )  # fmt: skip
        await audit.record(
            conn, actor, "bridge_in.suspense_resolved", "bridge_redemption", key,
            before={"suspense_operation": view.suspense_operation},
            after={"operation": resolved, "account": account_id}, reason=reason,
        )  # fmt: skip
    return await get_redemption(ledger, key)


async def _resolve(
    ledger: Ledger, view: RedemptionView, account_id: int, actor: Actor, reason: str
) -> int:
    async with ledger.engine.connect() as conn:
        leg = (
            await conn.execute(
                text(
                    "SELECT account_id, asset, amount FROM ledger_entries "
                    "WHERE operation_id = :op AND amount > 0"
                ),
                {"op": view.suspense_operation},
            )
        ).one()
    target = await ledger.accounts.get_account(account_id)  # UNKNOWN_ACCOUNT
    if target.kind is not AccountKind.AVAILABLE:
        raise ValidationError(f"account {account_id} is not an AVAILABLE account", field="account")
    if target.asset != leg.asset:
        raise AssetMismatch(f"account {account_id} holds {target.asset}, not {leg.asset}")
    if target.status is not AccountStatus.ACTIVE:
        raise AccountFrozen(f"account {account_id} is {target.status}", account_id=account_id)
    done = await ledger.post(
        PostOperation(
            OperationType.SUSPENSE_RESOLVED,
            transfer_legs(leg.account_id, account_id, leg.asset, int(leg.amount)),
            actor, f"suspense-resolved:{view.key}:{account_id}", _meta(view), reason=reason,
        )
    )  # fmt: skip
    return done.operation_id
