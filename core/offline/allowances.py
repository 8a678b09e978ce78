"""Offline allowances: reserve one (a hold on the user's AVAILABLE account bound to a device
key, ``core.offline.devices``), release it, read them.

Opening is written in three steps so a crash never leaves money reserved without a row:
the allowance row (OPENING), then the hold under the ledger key ``offline-allowance:<id>``,
then the row OPEN with its hold (``core.offline.opening``). A retry with the same
idempotency key finds the OPENING row and submits the same hold command again (the ledger
answers its stored result); the worker's sweep finishes the ones nobody retries.

A revoked device key gets no new allowance (DEVICE_REVOKED, checked again under the
device's row lock when an allowance becomes OPEN). The allowances it already has stay as
they are: the vouchers it signed against them are honoured, within each allowance, until
the allowance expires or the device releases it. A voucher carries no signing time, so the
server cannot tell one signed before the revocation from one signed after; refusing them
all would break the promise to payees who accepted them offline while the certificate was
valid. The revocation bounds what a lost key can still spend to its open allowances.

A release is signed by the device: it names the last cumulative total the device issued.
While vouchers up to that total are not all redeemed the release is refused
(VOUCHERS_OUTSTANDING), so a payee holding a voucher is never left without its money by
the payer's release; the rest returns to the user once they are. Expiry needs no
signature: the worker's hold sweep expires the hold and the rest returns.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from core import audit
from core.directory import Directory
from core.errors import (
    AllowanceAbandoned,
    AllowanceNotActive,
    DeviceRevoked,
    IdempotencyConflict,
    InvalidDeviceKey,
    LedgerError,
    UnknownAllowance,
    UnknownDevice,
    ValidationError,
    VouchersOutstanding,
)
from core.offline import opening
from core.offline.issuer import Issuer
from core.offline.vouchers import Certificate, release_message, verify
from core.payments import Payments
from core.queries import MAX_PAGE
from core.types import Actor, HoldStatus, VoidHold, request_hash


class AllowanceStatus(StrEnum):
    OPENING = "OPENING"
    OPEN = "OPEN"
    #: every unit captured by vouchers
    SPENT = "SPENT"
    RELEASED = "RELEASED"
    EXPIRED = "EXPIRED"
    #: never bound: its device was revoked first, or it was abandoned unfinished
    FAILED = "FAILED"


@dataclass(frozen=True, slots=True)
class Allowance:
    id: int
    user_id: uuid.UUID
    device_id: int
    device_key: bytes
    account_id: int
    asset: str
    amount: int
    #: claimed by vouchers so far (honoured, or being captured)
    claimed: int
    expires_at: datetime
    hold_id: int | None
    status: AllowanceStatus
    final_cumulative: int | None
    created_at: datetime
    #: the issuer-signed certificate a payee checks offline (``VC1.``…)
    certificate: str = ""
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class AllowancePage:
    allowances: list[Allowance]
    next_cursor: int | None


_ALLOWANCE_SELECT = (
    "SELECT a.id, a.user_id, a.device_id, d.public_key, a.account_id, a.asset, a.amount, "
    "a.claimed, a.expires_at, a.hold_id, a.status, a.final_cumulative, a.created_at, "
    "a.request_hash, a.failure, h.status AS hold_status, a.expires_at <= clock_timestamp() AS past "
    "FROM offline_allowances a JOIN offline_devices d ON d.id = a.device_id "
    "LEFT JOIN holds h ON h.id = a.hold_id "
)


def allowance_status(row: Any) -> AllowanceStatus:
    if row.status != "OPEN":
        return AllowanceStatus(row.status)
    if row.hold_status == HoldStatus.POSTED.value:
        return AllowanceStatus.SPENT
    if row.hold_status == HoldStatus.PENDING.value and not row.past:
        return AllowanceStatus.OPEN
    if row.hold_status == HoldStatus.VOIDED.value:
        return AllowanceStatus.RELEASED
    return AllowanceStatus.EXPIRED


class Allowances:
    """Allowances (the vouchers redeemed against them: ``core.offline.redemptions``)."""

    def __init__(self, directory: Directory, issuer: Issuer) -> None:
        self.directory = directory
        self.ledger = directory.ledger
        self.issuer = issuer
        self.payments = Payments(directory)

    # -- allowances ----------------------------------------------------------------------
    async def open(
        self,
        user: uuid.UUID,
        actor: Actor,
        *,
        account_id: int,
        device_id: int,
        amount: str,
        expires_at: datetime,
        idempotency_key: str | None,
    ) -> Allowance:
        """Reserve ``amount`` of the user's AVAILABLE ``account_id`` until ``expires_at`` for
        vouchers signed by device ``device_id``. Errors: UNKNOWN_ACCOUNT, UNKNOWN_DEVICE,
        DEVICE_REVOKED, INVALID_AMOUNT, INSUFFICIENT_FUNDS, POLICY_DENIED,
        IDEMPOTENCY_CONFLICT, VALIDATION_ERROR, ALLOWANCE_ABANDONED (a retry of a request
        whose allowance the sweep abandoned)."""
        source = await self.payments.source(user, account_id)
        units = await self.directory.parse(amount, source.asset)
        digest = request_hash(
            "offline_allowance", [account_id, device_id, units, expires_at.isoformat()]
        )
        async with self.ledger.engine.begin() as conn:
            device = (
                await conn.execute(
                    text("SELECT user_id, status FROM offline_devices WHERE id = :d"),
                    {"d": device_id},
                )
            ).first()
            if device is None or device.user_id != user:
                raise UnknownDevice(f"device {device_id} does not exist", device_id=device_id)
            allowance_id = None
            if device.status == "ACTIVE":
                allowance_id = (
                    await conn.execute(
                        text(
                            "INSERT INTO offline_allowances (user_id, device_id, account_id, "
                            "asset, amount, expires_at, status, idempotency_key, request_hash) "
                            "VALUES (:u, :d, :a, :asset, :n, :exp, 'OPENING', :key, :hash) "
                            "ON CONFLICT (user_id, idempotency_key) "
                            "WHERE idempotency_key IS NOT NULL DO NOTHING RETURNING id"
                        ),
                        {
                            "u": user,
                            "d": device_id,
                            "a": account_id,
                            "asset": source.asset,
                            "n": units,
                            "exp": expires_at,
                            "key": idempotency_key,
                            "hash": digest,
                        },
                    )
                ).scalar()
            if allowance_id is None:
                # the key's earlier attempt, if any (after a revocation: to finish it FAILED)
                earlier = None
                if idempotency_key is not None:
                    earlier = (
                        await conn.execute(
                            text(
                                _ALLOWANCE_SELECT
                                + "WHERE a.user_id = :u AND a.idempotency_key = :k"
                            ),
                            {"u": user, "k": idempotency_key},
                        )
                    ).first()
                if earlier is None:
                    raise DeviceRevoked(f"device {device_id} is revoked", device_id=device_id)
                if bytes(earlier.request_hash) != digest:
                    raise IdempotencyConflict(
                        "this idempotency key was used with a different request",
                        key=idempotency_key,
                    )
                if earlier.status != "OPENING":
                    _raise_failed(earlier)
                    return await self._read(earlier, replayed=True)
                allowance_id = earlier.id
        done = await opening.finish(self.ledger, allowance_id, actor)
        async with self.ledger.engine.connect() as conn:
            row = await self._fetch(conn, allowance_id)
        if row is None:  # the ledger refused the hold: the row is gone
            if isinstance(done.hold, LedgerError):
                raise done.hold
            raise _unknown(allowance_id)  # pragma: no cover - only a refusal deletes it
        _raise_failed(row)
        return await self._read(row)

    async def release(
        self, user: uuid.UUID, actor: Actor, *, allowance_id: int, final_cumulative: int,
        signature: bytes,
    ) -> Allowance:  # fmt: skip
        """End the allowance now: the device signs the last cumulative total it issued; once
        vouchers up to it are redeemed, the hold is voided and the rest returns. Errors:
        UNKNOWN_ALLOWANCE, VOUCHER_SIGNATURE_INVALID (as INVALID_DEVICE_KEY: the release is not
        the device's), VOUCHERS_OUTSTANDING, ALLOWANCE_NOT_ACTIVE (expired or spent)."""
        async with self.ledger.engine.begin() as conn:
            row = await self._fetch(conn, allowance_id, lock=True)
            if row is None or row.user_id != user:
                raise _unknown(allowance_id)
            if not verify(
                bytes(row.public_key), signature, release_message(allowance_id, final_cumulative)
            ):
                raise InvalidDeviceKey(
                    "the release is not signed by the allowance's device", field="signature"
                )
            status = allowance_status(row)
            if status is AllowanceStatus.OPEN:
                pending = (
                    await conn.execute(
                        text(
                            "SELECT count(*) FROM offline_vouchers "
                            "WHERE allowance_id = :a AND status = 'CLAIMED'"
                        ),
                        {"a": allowance_id},
                    )
                ).scalar_one()
                if row.claimed < final_cumulative or pending:
                    raise VouchersOutstanding(
                        f"vouchers up to {final_cumulative} are not all redeemed yet",
                        claimed=row.claimed, final_cumulative=final_cumulative,
                        capturing=pending,
                    )  # fmt: skip
                await conn.execute(
                    text(
                        "UPDATE offline_allowances SET status = 'RELEASED', "
                        "final_cumulative = :f, updated_at = now() WHERE id = :id"
                    ),
                    {"f": final_cumulative, "id": allowance_id},
                )
                await audit.record(
                    conn, actor, "offline.allowance.released", "offline_allowance", allowance_id,
                    before={"status": "OPEN", "claimed": row.claimed},
                    after={"status": "RELEASED", "final_cumulative": final_cumulative},
                )  # fmt: skip
            elif status is not AllowanceStatus.RELEASED:
                raise AllowanceNotActive(
                    f"allowance {allowance_id} is {status.value}", status=status.value
                )
        # after the row says RELEASED no voucher is claimed any more: void the rest (again
        # after a crash: the ledger key makes it once)
        voided = await self.ledger.submit(
            VoidHold(row.hold_id, actor, "offline allowance released", f"offline-release:{row.id}")
        )
        if isinstance(voided, LedgerError) and voided.code != "HOLD_NOT_PENDING":
            raise voided
        return await self.get(user, allowance_id)

    async def get(self, user: uuid.UUID | None, allowance_id: int) -> Allowance:
        """The allowance (``user`` None: any user's, for staff). Errors: UNKNOWN_ALLOWANCE."""
        async with self.ledger.engine.connect() as conn:
            row = await self._fetch(conn, allowance_id)
        if row is None or (user is not None and row.user_id != user):
            raise _unknown(allowance_id)
        return await self._read(row)

    async def list(
        self, user: uuid.UUID, *, before_id: int | None = None, limit: int = 50
    ) -> AllowancePage:
        """The user's allowances, newest first (keyset on the id)."""
        if not 1 <= limit <= MAX_PAGE:
            raise ValidationError(f"limit must be between 1 and {MAX_PAGE}", field="limit")
        async with self.ledger.engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        _ALLOWANCE_SELECT + "WHERE a.user_id = :u AND a.id < :before "
                        "ORDER BY a.id DESC LIMIT :n"
                    ),
                    {"u": user, "before": before_id or 2**63 - 1, "n": limit + 1},
                )
            ).all()
        page = [await self._read(r) for r in rows[:limit]]
        return AllowancePage(page, page[-1].id if len(rows) > limit else None)

    # -- helpers -------------------------------------------------------------------------
    @staticmethod
    async def _fetch(conn: AsyncConnection, allowance_id: int, *, lock: bool = False) -> Any:
        return (
            await conn.execute(
                text(_ALLOWANCE_SELECT + "WHERE a.id = :id" + (" FOR UPDATE OF a" if lock else "")),
                {"id": allowance_id},
            )
        ).first()

    async def _read(self, row: Any, *, replayed: bool = False) -> Allowance:
        certificate = ""
        if row.status in {AllowanceStatus.OPEN.value, AllowanceStatus.RELEASED.value}:
            scale = (await self.directory.asset(row.asset)).scale
            certificate = self.issuer.encode(
                Certificate(
                    row.id, row.user_id, bytes(row.public_key), row.asset, scale, row.amount,
                    row.expires_at,
                )
            )  # fmt: skip
        return Allowance(
            row.id, row.user_id, row.device_id, bytes(row.public_key), row.account_id, row.asset,
            row.amount, row.claimed, row.expires_at, row.hold_id, allowance_status(row),
            row.final_cumulative, row.created_at, certificate, replayed,
        )  # fmt: skip


def _raise_failed(row: Any) -> None:
    """A FAILED allowance answers its request (or a retry of it) with why it failed."""
    if row.status != AllowanceStatus.FAILED.value:
        return
    if row.failure == opening.Failure.DEVICE_REVOKED.value:
        raise DeviceRevoked(f"device {row.device_id} is revoked", device_id=row.device_id)
    raise AllowanceAbandoned(
        f"allowance {row.id} was left unfinished and voided", allowance_id=row.id
    )


def _unknown(allowance_id: int) -> UnknownAllowance:
    return UnknownAllowance(f"allowance {allowance_id} does not exist", allowance_id=allowance_id)
