"""Redeeming vouchers: each one captured against its allowance's hold exactly once.

Per voucher, in order:

1. decode and check its shape (VOUCHER_MALFORMED), its payee is the caller
   (VOUCHER_WRONG_PAYEE);
2. under the allowance's row lock: the device's signature (VOUCHER_SIGNATURE_INVALID); the
   counter (the same voucher again: its stored outcome; another voucher with that counter:
   VOUCHER_COUNTER_REUSED); the allowance still open (ALLOWANCE_RELEASED, ALLOWANCE_EXPIRED);
   its cumulative total and the total claimed so far within the amount (ALLOWANCE_EXCEEDED);
   then the voucher row is written CLAIMED and ``claimed`` grows;
3. once every voucher of the batch is claimed, their captures are submitted together (the
   ledger's group commit writes them in one transaction); each is a ``CaptureHold``,
   keeping the rest reserved, paying the payee, under the ledger
   key ``offline-voucher:<allowance>:<counter>``; the row becomes HONOURED with the operation,
   or REFUSED with the ledger's code (e.g. the hold expired meanwhile) and ``claimed``
   shrinks back.

A crash between 2 and 3 leaves a CLAIMED row: redeeming the voucher again resumes at 3, and
the ledger key makes the capture happen once. Concurrent redemptions of one allowance queue on
its row lock, so of two payees holding vouchers that together exceed it, one is honoured and
the other refused with the exact reason.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from sqlalchemy import text

from core import audit
from core.directory import Directory
from core.errors import (
    AllowanceExceeded,
    AllowanceExpired,
    AllowanceReleased,
    LedgerError,
    StorageError,
    UnknownAllowance,
    ValidationError,
    VoucherCounterReused,
    VoucherSignatureInvalid,
    VoucherWrongPayee,
)
from core.offline.allowances import AllowanceStatus, allowance_status
from core.offline.vouchers import Voucher, decode_voucher, verify
from core.queries import MAX_PAGE
from core.types import AccountKind, Actor, CaptureHold, OperationResult

MAX_BATCH = 100
Role = Literal["payee", "payer"]


class VoucherStatus(StrEnum):
    CLAIMED = "CLAIMED"
    HONOURED = "HONOURED"
    REFUSED = "REFUSED"


@dataclass(frozen=True, slots=True)
class Redemption:
    """What became of one presented voucher."""

    index: int
    status: VoucherStatus
    allowance_id: int | None = None
    counter: int | None = None
    amount: int | None = None
    asset: str | None = None
    code: str | None = None
    message: str | None = None
    operation_id: int | None = None
    #: True when this voucher had been presented before (the stored outcome)
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class StoredVoucher:
    id: int
    allowance_id: int
    payer_id: uuid.UUID
    payee_id: uuid.UUID
    counter: int
    asset: str
    amount: int
    cumulative: int
    status: VoucherStatus
    code: str | None
    operation_id: int | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class VoucherPage:
    vouchers: list[StoredVoucher]
    next_cursor: int | None


_VOUCHER_SELECT = (
    "SELECT v.id, v.allowance_id, a.user_id AS payer_id, v.payee_id, v.counter, a.asset, "
    "v.amount, v.cumulative, v.status, v.code, v.operation_id, v.created_at, v.updated_at "
    "FROM offline_vouchers v JOIN offline_allowances a ON a.id = v.allowance_id "
)


#: allowances no certificate was issued for: no voucher can be signed against them
_NEVER_BOUND = frozenset({AllowanceStatus.OPENING.value, AllowanceStatus.FAILED.value})


def capture_key(allowance_id: int, counter: int) -> str:
    return f"offline-voucher:{allowance_id}:{counter}"


class Redemptions:
    def __init__(self, directory: Directory) -> None:
        self.directory = directory
        self.ledger = directory.ledger

    async def redeem(self, payee: uuid.UUID, actor: Actor, vouchers: list[str]) -> list[Redemption]:
        """Redeem a batch of vouchers paid to ``payee``; one outcome per voucher, in order
        (a refusal is an outcome, not an error). Errors: VALIDATION_ERROR (batch size)."""
        if not 1 <= len(vouchers) <= MAX_BATCH:
            raise ValidationError(f"redeem 1-{MAX_BATCH} vouchers at a time", field="vouchers")
        outcomes: list[Redemption] = []
        captures: list[tuple[Redemption, int, int]] = []
        for index, encoded in enumerate(vouchers):
            try:
                outcome = await self._redeem_one(index, payee, actor, encoded)
            except LedgerError as refused:
                if isinstance(refused, StorageError):
                    raise
                outcome = Redemption(
                    index, VoucherStatus.REFUSED, code=refused.code, message=refused.message
                )
            if isinstance(outcome, Redemption):
                outcomes.append(outcome)
            else:
                outcomes.append(outcome[0])
                captures.append(outcome)
        # the claims are recorded: their captures go to the ledger together (group commit)
        captured = await asyncio.gather(*(self._capture(*c, actor) for c in captures))
        for done in captured:
            outcomes[done.index] = done
        return outcomes

    async def _redeem_one(
        self, index: int, payee: uuid.UUID, actor: Actor, encoded: str
    ) -> Redemption | tuple[Redemption, int, int]:
        """Steps 1 and 2: the final outcome, or a CLAIMED one with its hold and payee account
        (step 3 to do)."""
        voucher = decode_voucher(encoded)
        if voucher.payee_id != payee:
            raise VoucherWrongPayee("this voucher pays somebody else", field="vouchers")
        asset = await self._asset(voucher.allowance_id)
        payee_account = (await self.directory.wallet(payee, asset, actor))[AccountKind.AVAILABLE]
        claimed = await self._claim(voucher, payee_account, actor)
        base = Redemption(
            index, VoucherStatus(claimed["status"]), voucher.allowance_id, voucher.counter,
            voucher.amount, asset, claimed["code"], None, claimed["operation_id"],
            claimed["replayed"],
        )  # fmt: skip
        if base.status is not VoucherStatus.CLAIMED:
            return base
        return base, claimed["hold_id"], payee_account

    async def _asset(self, allowance_id: int) -> str:
        async with self.ledger.engine.connect() as conn:
            asset = (
                await conn.execute(
                    text("SELECT asset FROM offline_allowances WHERE id = :a"), {"a": allowance_id}
                )
            ).scalar()
        if asset is None:
            raise UnknownAllowance(
                f"allowance {allowance_id} does not exist", allowance_id=allowance_id
            )
        return str(asset)

    async def _claim(self, v: Voucher, payee_account: int, actor: Actor) -> dict[str, Any]:
        """Step 2 (see the module doc), in one transaction under the allowance's lock."""
        async with self.ledger.engine.begin() as conn:
            row = (
                await conn.execute(
                    text(
                        "SELECT a.id, a.amount, a.claimed, a.status, a.hold_id, d.public_key, "
                        "h.status AS hold_status, a.expires_at <= clock_timestamp() AS past "
                        "FROM offline_allowances a JOIN offline_devices d ON d.id = a.device_id "
                        "LEFT JOIN holds h ON h.id = a.hold_id WHERE a.id = :a FOR UPDATE OF a"
                    ),
                    {"a": v.allowance_id},
                )
            ).first()
            if row is None or row.status in _NEVER_BOUND:
                raise UnknownAllowance(
                    f"allowance {v.allowance_id} does not exist", allowance_id=v.allowance_id
                )
            if not verify(bytes(row.public_key), v.signature, v.message()):
                raise VoucherSignatureInvalid(
                    "the voucher is not signed by the allowance's device",
                    allowance_id=v.allowance_id, counter=v.counter,
                )  # fmt: skip
            earlier = (
                await conn.execute(
                    text(
                        "SELECT payee_id, amount, cumulative, status, code, operation_id "
                        "FROM offline_vouchers WHERE allowance_id = :a AND counter = :c"
                    ),
                    {"a": v.allowance_id, "c": v.counter},
                )
            ).first()
            if earlier is not None:
                if (earlier.payee_id, earlier.amount, earlier.cumulative) != (
                    v.payee_id, v.amount, v.cumulative,
                ):  # fmt: skip
                    raise VoucherCounterReused(
                        f"counter {v.counter} of allowance {v.allowance_id} was already "
                        "redeemed by another voucher",
                        allowance_id=v.allowance_id, counter=v.counter,
                    )  # fmt: skip
                return {"status": earlier.status, "code": earlier.code, "hold_id": row.hold_id,
                        "operation_id": earlier.operation_id, "replayed": True}  # fmt: skip
            status = allowance_status(row)
            if status is AllowanceStatus.RELEASED:
                raise AllowanceReleased(
                    f"allowance {v.allowance_id} was released", allowance_id=v.allowance_id
                )
            if status is AllowanceStatus.EXPIRED:
                raise AllowanceExpired(
                    f"allowance {v.allowance_id} has expired", allowance_id=v.allowance_id
                )
            if v.cumulative > row.amount or row.claimed + v.amount > row.amount:
                raise AllowanceExceeded(
                    f"allowance {v.allowance_id} cannot cover this voucher",
                    allowance_id=v.allowance_id, counter=v.counter, amount=row.amount,
                    claimed=row.claimed, voucher_amount=v.amount, cumulative=v.cumulative,
                )  # fmt: skip
            await conn.execute(
                text(
                    "INSERT INTO offline_vouchers (allowance_id, counter, payee_id, "
                    "payee_account_id, amount, cumulative, signature, status) "
                    "VALUES (:a, :c, :p, :pa, :n, :cum, :sig, 'CLAIMED')"
                ),
                {"a": v.allowance_id, "c": v.counter, "p": v.payee_id, "pa": payee_account,
                 "n": v.amount, "cum": v.cumulative, "sig": v.signature},
            )  # fmt: skip
            await conn.execute(
                text(
                    "UPDATE offline_allowances SET claimed = claimed + :n, updated_at = now() "
                    "WHERE id = :a"
                ),
                {"n": v.amount, "a": v.allowance_id},
            )
            await audit.record(
                conn, actor, "offline.voucher.claimed", "offline_allowance", v.allowance_id,
                before={"claimed": row.claimed},
                after={"claimed": row.claimed + v.amount, "counter": v.counter,
                       "payee_id": v.payee_id, "amount": v.amount},
            )  # fmt: skip
        return {"status": "CLAIMED", "code": None, "hold_id": row.hold_id,
                "operation_id": None, "replayed": False}  # fmt: skip

    async def _capture(
        self, claimed: Redemption, hold_id: int, payee_account: int, actor: Actor
    ) -> Redemption:
        """Step 3: capture once (ledger key), then record what happened."""
        allowance, counter = claimed.allowance_id, claimed.counter
        if allowance is None or counter is None or claimed.amount is None:  # pragma: no cover
            raise TypeError("a claimed voucher names its allowance, counter and amount")
        result = await self.ledger.submit(
            CaptureHold(
                hold_id, claimed.amount, actor, capture_key(allowance, counter),
                {"offline_allowance": allowance, "counter": counter},
                destination=payee_account, keep_rest=True,
            )
        )  # fmt: skip
        if isinstance(result, StorageError):
            return claimed  # still CLAIMED: presenting the voucher again finishes it
        if isinstance(result, OperationResult):
            status, code, operation = VoucherStatus.HONOURED, None, result.operation_id
        else:
            code = _refusal_code(result)
            status, operation = VoucherStatus.REFUSED, None
        async with self.ledger.engine.begin() as conn:
            done = (
                await conn.execute(
                    text(
                        "UPDATE offline_vouchers SET status = :s, code = :code, "
                        "operation_id = :op, updated_at = now() "
                        "WHERE allowance_id = :a AND counter = :c AND status = 'CLAIMED' "
                        "RETURNING amount"
                    ),
                    {
                        "s": status.value,
                        "code": code,
                        "op": operation,
                        "a": allowance,
                        "c": counter,
                    },
                )
            ).first()
            if done is not None and status is VoucherStatus.REFUSED:
                await conn.execute(
                    text(
                        "UPDATE offline_allowances SET claimed = claimed - :n, "
                        "updated_at = now() WHERE id = :a"
                    ),
                    {"n": done.amount, "a": allowance},
                )
            if done is not None:
                await audit.record(
                    conn, actor, f"offline.voucher.{status.value.lower()}", "offline_allowance",
                    allowance, after={"counter": counter, "operation_id": operation, "code": code},
                )  # fmt: skip
        return Redemption(
            claimed.index, status, allowance, counter, claimed.amount, claimed.asset, code,
            None if isinstance(result, OperationResult) else str(result),
            operation, claimed.replayed,
        )  # fmt: skip

    async def list(
        self,
        user: uuid.UUID,
        *,
        role: Role | None = None,
        allowance_id: int | None = None,
        before_id: int | None = None,
        limit: int = 50,
    ) -> VoucherPage:
        """Vouchers redeemed to the user (``payee``), against their allowances (``payer``), or
        both; newest first."""
        if not 1 <= limit <= MAX_PAGE:
            raise ValidationError(f"limit must be between 1 and {MAX_PAGE}", field="limit")
        who = {"payee": "v.payee_id = :u", "payer": "a.user_id = :u"}.get(
            role or "", "(v.payee_id = :u OR a.user_id = :u)"
        )
        async with self.ledger.engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        _VOUCHER_SELECT + f"WHERE {who} AND v.id < :before "
                        "AND (CAST(:al AS bigint) IS NULL OR v.allowance_id = :al) "
                        "ORDER BY v.id DESC LIMIT :n"
                    ),
                    {
                        "u": user,
                        "before": before_id or 2**63 - 1,
                        "al": allowance_id,
                        "n": limit + 1,
                    },
                )
            ).all()
        page = [
            StoredVoucher(
                r.id,
                r.allowance_id,
                r.payer_id,
                r.payee_id,
                r.counter,
                r.asset,
                r.amount,
                r.cumulative,
                VoucherStatus(r.status),
                r.code,
                r.operation_id,
                r.created_at,
                r.updated_at,
            )
            for r in rows[:limit]
        ]
        return VoucherPage(page, page[-1].id if len(rows) > limit else None)


def _refusal_code(error: Any) -> str:
    """The stable code a payee sees when the capture itself was refused."""
    if isinstance(error, LedgerError):
        if error.code == "HOLD_NOT_PENDING":
            status = str(error.details.get("status", ""))
            return AllowanceReleased.code if status == "VOIDED" else AllowanceExpired.code
        return error.code
    return "LEDGER_ERROR"  # pragma: no cover - the ledger answers an operation or an error
