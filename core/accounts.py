"""Assets, users and accounts: the ledger's reference data (every change audited)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from core import audit
from core.errors import (
    AlreadyExists,
    ReasonRequired,
    UnknownAccount,
    UnknownAsset,
    ValidationError,
)
from core.money import MAX_SCALE, check_int64
from core.storage_errors import translate
from core.types import (
    UNBOUNDED_SYSTEM_ACCOUNTS,
    WALLET_KINDS,
    AccountKind,
    AccountStatus,
    Actor,
    AssetKind,
    SystemAccount,
)


@dataclass(frozen=True, slots=True)
class Asset:
    code: str
    name: str
    scale: int
    kind: AssetKind


@dataclass(frozen=True, slots=True)
class Account:
    id: int
    asset: str
    kind: AccountKind
    owner_id: uuid.UUID | None
    code: str | None
    status: AccountStatus
    floor: int | None
    created_at: datetime


_ACCOUNT_SELECT = (
    "SELECT a.id, a.asset, a.kind, a.owner_id, a.code, a.status, a.created_at, b.floor "
    "FROM accounts a JOIN balances b ON b.account_id = a.id "
)


def _account(row: Any) -> Account:
    return Account(
        row.id,
        row.asset,
        AccountKind(row.kind),
        row.owner_id,
        row.code,
        AccountStatus(row.status),
        row.floor,
        row.created_at,
    )


class Accounts:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    # -- assets ---------------------------------------------------------------------------
    async def create_asset(
        self, *, code: str, name: str, scale: int, kind: AssetKind, actor: Actor
    ) -> Asset:
        if not 0 <= scale <= MAX_SCALE:
            raise ValidationError(f"scale must be between 0 and {MAX_SCALE}", field="scale")
        asset = Asset(code, name, scale, AssetKind(kind))
        try:
            async with self.engine.begin() as conn:
                await conn.execute(
                    text("INSERT INTO assets (code, name, scale, kind) VALUES (:c, :n, :s, :k)"),
                    {"c": code, "n": name, "s": scale, "k": asset.kind.value},
                )
                await audit.record(
                    conn,
                    actor,
                    "asset.created",
                    "asset",
                    code,
                    after={"name": name, "scale": scale, "kind": asset.kind.value},
                )
        except DBAPIError as exc:
            err = translate(exc)
            if isinstance(err, AlreadyExists):
                raise AlreadyExists(f"asset {code} already exists", code=code) from exc
            if "assets_code_check" in str(exc):
                raise ValidationError(
                    "asset code must be 1-32 of A-Z, 0-9, _ starting with a letter", field="code"
                ) from exc
            raise err from exc
        return asset

    async def get_asset(self, code: str) -> Asset:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    text("SELECT code, name, scale, kind FROM assets WHERE code = :c"), {"c": code}
                )
            ).first()
        if row is None:
            raise UnknownAsset(f"asset {code} does not exist", code=code)
        return Asset(row.code, row.name, row.scale, AssetKind(row.kind))

    async def list_assets(self) -> list[Asset]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                text("SELECT code, name, scale, kind FROM assets ORDER BY code")
            )
            return [Asset(r.code, r.name, r.scale, AssetKind(r.kind)) for r in rows]

    # -- users ----------------------------------------------------------------------------
    async def create_user(self, *, email: str | None, actor: Actor) -> uuid.UUID:
        user_id = uuid.uuid4()
        try:
            async with self.engine.begin() as conn:
                await conn.execute(
                    text("INSERT INTO users (id, email) VALUES (:id, :email)"),
                    {"id": user_id, "email": email},
                )
                await audit.record(
                    conn, actor, "user.created", "user", user_id, after={"email": email}
                )
        except DBAPIError as exc:
            err = translate(exc)
            if isinstance(err, AlreadyExists):
                raise AlreadyExists("a user with this email exists", field="email") from exc
            raise err from exc
        return user_id

    # -- accounts -------------------------------------------------------------------------
    async def _insert(
        self,
        conn: AsyncConnection,
        *,
        asset: str,
        kind: AccountKind,
        owner_id: uuid.UUID | None,
        code: str | None,
        floor: int | None,
        actor: Actor,
        metadata: dict[str, Any] | None = None,
    ) -> int:
        account_id: int = (
            await conn.execute(
                text(
                    "INSERT INTO accounts (asset, kind, owner_id, code, metadata) "
                    "VALUES (:asset, :kind, :owner, :code, CAST(:meta AS jsonb)) RETURNING id"
                ),
                {
                    "asset": asset,
                    "kind": kind.value,
                    "owner": owner_id,
                    "code": code,
                    "meta": "{}" if not metadata else json.dumps(metadata),
                },
            )
        ).scalar_one()
        await conn.execute(
            text("INSERT INTO balances (account_id, floor) VALUES (:id, :floor)"),
            {"id": account_id, "floor": floor},
        )
        await audit.record(
            conn,
            actor,
            "account.opened",
            "account",
            account_id,
            after={
                "asset": asset,
                "kind": kind.value,
                "owner_id": owner_id,
                "code": code,
                "floor": floor,
            },
        )
        return account_id

    async def open_account_in(
        self,
        conn: AsyncConnection,
        *,
        asset: str,
        kind: AccountKind,
        owner_id: uuid.UUID | None,
        actor: Actor,
        floor: int | None = 0,
        metadata: dict[str, Any] | None = None,
    ) -> int:
        """Open one account inside the caller's transaction (e.g. a vault with its own
        rows, all-or-nothing). Driver errors propagate to the caller."""
        if floor is not None:
            check_int64(floor, "floor")
        return await self._insert(
            conn,
            asset=asset,
            kind=AccountKind(kind),
            owner_id=owner_id,
            code=None,
            floor=floor,
            actor=actor,
            metadata=metadata,
        )

    async def user_status(self, user_id: uuid.UUID) -> str | None:
        """ACTIVE or SUSPENDED; None for a user that does not exist."""
        async with self.engine.connect() as conn:
            found = await conn.execute(
                text("SELECT status FROM users WHERE id = :id"), {"id": user_id}
            )
            return found.scalar_one_or_none()

    async def ensure_wallet(
        self, owner_id: uuid.UUID, asset: str, *, actor: Actor
    ) -> dict[AccountKind, int]:
        """The owner's AVAILABLE/BLOCKED/LOCKED compartments for ``asset`` (created once)."""
        async with self.engine.begin() as conn:
            # serialise concurrent first calls for the same wallet
            await conn.execute(
                text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
                {"k": f"wallet:{owner_id}:{asset}"},
            )
            rows = await conn.execute(
                text(
                    "SELECT kind, id FROM accounts WHERE owner_id = :o AND asset = :a "
                    "AND kind = ANY(:kinds)"
                ),
                {"o": owner_id, "a": asset, "kinds": [k.value for k in WALLET_KINDS]},
            )
            found = {AccountKind(r.kind): r.id for r in rows}
            try:
                for kind in WALLET_KINDS:
                    if kind not in found:
                        found[kind] = await self._insert(
                            conn,
                            asset=asset,
                            kind=kind,
                            owner_id=owner_id,
                            code=None,
                            floor=0,
                            actor=actor,
                        )
            except DBAPIError as exc:
                err = translate(exc)
                raise (
                    UnknownAsset(f"asset {asset} or user {owner_id} does not exist")
                    if err.code == "NOT_FOUND"
                    else err
                ) from exc
        return found

    async def system_account(self, asset: str, code: SystemAccount, *, actor: Actor) -> int:
        """Get or create a system account (ISSUANCE and OMNIBUS are unbounded)."""
        async with self.engine.begin() as conn:
            await conn.execute(
                text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
                {"k": f"system:{asset}:{code.value}"},
            )
            existing = (
                await conn.execute(
                    text(
                        "SELECT id FROM accounts WHERE kind = 'SYSTEM' AND asset = :a AND code = :c"
                    ),
                    {"a": asset, "c": code.value},
                )
            ).scalar()
            if existing is not None:
                return int(existing)
            floor = None if code in UNBOUNDED_SYSTEM_ACCOUNTS else 0
            try:
                return await self._insert(
                    conn,
                    asset=asset,
                    kind=AccountKind.SYSTEM,
                    owner_id=None,
                    code=code.value,
                    floor=floor,
                    actor=actor,
                )
            except DBAPIError as exc:
                raise UnknownAsset(f"asset {asset} does not exist", code=asset) from exc

    async def get_account(self, account_id: int) -> Account:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(text(_ACCOUNT_SELECT + "WHERE a.id = :id"), {"id": account_id})
            ).first()
        if row is None:
            raise UnknownAccount(f"account {account_id} does not exist", account_id=account_id)
        return _account(row)

    async def list_accounts(self, owner_id: uuid.UUID) -> list[Account]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                text(_ACCOUNT_SELECT + "WHERE a.owner_id = :o ORDER BY a.id"), {"o": owner_id}
            )
            return [_account(r) for r in rows]

    async def set_status(
        self, account_id: int, status: AccountStatus, *, actor: Actor, reason: str
    ) -> None:
        """Freeze or unfreeze an account (a sensitive action: a reason is required)."""
        if not reason.strip():
            raise ReasonRequired("freezing or unfreezing needs a reason", field="reason")
        async with self.engine.begin() as conn:
            before = (
                await conn.execute(
                    text("SELECT status FROM accounts WHERE id = :id FOR UPDATE"),
                    {"id": account_id},
                )
            ).scalar()
            if before is None:
                raise UnknownAccount(f"account {account_id} does not exist", account_id=account_id)
            # the balance row lock orders this against postings in flight
            await conn.execute(
                text("SELECT 1 FROM balances WHERE account_id = :id FOR UPDATE"), {"id": account_id}
            )
            await conn.execute(
                text("UPDATE accounts SET status = :s WHERE id = :id"),
                {"s": AccountStatus(status).value, "id": account_id},
            )
            await audit.record(
                conn,
                actor,
                "account.status",
                "account",
                account_id,
                before={"status": before},
                after={"status": status.value},
                reason=reason,
            )

    async def set_floor(
        self, account_id: int, floor: int | None, *, actor: Actor, reason: str
    ) -> None:
        """Change a floor (e.g. a credit limit). Refused if the balance already breaks it."""
        if not reason.strip():
            raise ReasonRequired("changing a floor needs a reason", field="reason")
        if floor is not None:
            check_int64(floor, "floor")
        try:
            async with self.engine.begin() as conn:
                before = (
                    await conn.execute(
                        text("SELECT floor FROM balances WHERE account_id = :id FOR UPDATE"),
                        {"id": account_id},
                    )
                ).first()
                if before is None:
                    raise UnknownAccount(
                        f"account {account_id} does not exist", account_id=account_id
                    )
                await conn.execute(
                    text("UPDATE balances SET floor = :f WHERE account_id = :id"),
                    {"f": floor, "id": account_id},
                )
                await audit.record(
                    conn,
                    actor,
                    "account.floor",
                    "account",
                    account_id,
                    before={"floor": before.floor},
                    after={"floor": floor},
                    reason=reason,
                )
        except DBAPIError as exc:
            raise translate(exc) from exc
