"""Device keys: the Ed25519 keys a user's devices sign offline vouchers with. Registered with a
proof of possession, listed, revoked.

A revoked key gets no new allowance (DEVICE_REVOKED; ``core.offline.opening`` checks it
again under this row's share lock when an allowance becomes OPEN, and the revocation takes
the row's exclusive lock, so an allowance is OPEN before the revocation or never). The
allowances it already has stay as they are (see ``core.offline.allowances``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text

from core import audit
from core.errors import DeviceKeyExists, UnknownDevice, ValidationError
from core.ledger import Ledger
from core.offline.vouchers import check_device_key
from core.types import Actor

MAX_DEVICE_NAME = 100
_DEVICE_COLUMNS = "id, user_id, public_key, name, status, created_at, revoked_at"


@dataclass(frozen=True, slots=True)
class Device:
    id: int
    user_id: uuid.UUID
    public_key: bytes
    name: str
    status: str
    created_at: datetime
    revoked_at: datetime | None = None


def _device(row: Any) -> Device:
    return Device(
        row.id, row.user_id, bytes(row.public_key), row.name, row.status, row.created_at,
        row.revoked_at,
    )  # fmt: skip


class Devices:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    async def register(
        self, user: uuid.UUID, actor: Actor, *, public_key: bytes, proof: bytes, name: str
    ) -> Device:
        """Register an Ed25519 key the user's device holds (``proof``: its signature of
        ``vouchers.device_message``). Errors: INVALID_DEVICE_KEY, DEVICE_KEY_EXISTS,
        VALIDATION_ERROR (name)."""
        if not name.strip() or len(name) > MAX_DEVICE_NAME:
            raise ValidationError(f"a device name has 1-{MAX_DEVICE_NAME} characters", field="name")
        check_device_key(user, public_key, proof)
        async with self.ledger.engine.begin() as conn:
            row = (
                await conn.execute(
                    text(
                        "INSERT INTO offline_devices (user_id, public_key, name) "
                        "VALUES (:u, :k, :n) ON CONFLICT (public_key) DO NOTHING "
                        f"RETURNING {_DEVICE_COLUMNS}"
                    ),
                    {"u": user, "k": public_key, "n": name},
                )
            ).first()
            if row is None:
                raise DeviceKeyExists("this public key is already registered", field="public_key")
            device = _device(row)
            await audit.record(
                conn, actor, "offline.device.registered", "offline_device", device.id,
                after={"user_id": user, "public_key": public_key.hex(), "name": name},
            )  # fmt: skip
        return device

    async def list(self, user: uuid.UUID) -> list[Device]:
        async with self.ledger.engine.connect() as conn:
            rows = await conn.execute(
                text(
                    f"SELECT {_DEVICE_COLUMNS} FROM offline_devices WHERE user_id = :u ORDER BY id"
                ),
                {"u": user},
            )
            return [_device(r) for r in rows]

    async def revoke(
        self, user: uuid.UUID | None, actor: Actor, device_id: int, *, reason: str | None = None
    ) -> Device:
        """Revoke a device key (``user`` None: any user's, for staff): no allowance is bound to
        it any more; its open allowances stay (see the module doc). Revoking it again answers
        the revoked device. Errors: UNKNOWN_DEVICE."""
        async with self.ledger.engine.begin() as conn:
            row = (
                await conn.execute(
                    text(f"SELECT {_DEVICE_COLUMNS} FROM offline_devices WHERE id = :d FOR UPDATE"),
                    {"d": device_id},
                )
            ).first()
            if row is None or (user is not None and row.user_id != user):
                raise UnknownDevice(f"device {device_id} does not exist", device_id=device_id)
            if row.status == "REVOKED":
                return _device(row)
            revoked = (
                await conn.execute(
                    text(
                        "UPDATE offline_devices SET status = 'REVOKED', "
                        f"revoked_at = clock_timestamp() WHERE id = :d RETURNING {_DEVICE_COLUMNS}"
                    ),
                    {"d": device_id},
                )
            ).one()
            still_open = (
                await conn.execute(
                    text(
                        "SELECT a.id FROM offline_allowances a JOIN holds h ON h.id = a.hold_id "
                        "WHERE a.device_id = :d AND a.status = 'OPEN' AND h.status = 'PENDING' "
                        "ORDER BY a.id"
                    ),
                    {"d": device_id},
                )
            ).scalars()
            await audit.record(
                conn, actor, "offline.device.revoked", "offline_device", device_id,
                before={"status": row.status},
                after={"status": "REVOKED", "revoked_at": revoked.revoked_at,
                       "open_allowances": list(still_open)},
                reason=reason,
            )  # fmt: skip
        return _device(revoked)
