"""Vaults: named accounts (kind VAULT) a user opens per asset and shares by role.

Roles: OWNER manages members and moves funds; CONTRIBUTOR moves funds into and out of
the vault; VIEWER reads. The creator is an OWNER who can be neither removed nor demoted.

Every function takes the acting ``user`` (whose permissions apply) and, for writes, the
``actor`` recorded in the audit log (who, role, IP). Someone who is not a member gets
the same 404 as for a vault that does not exist: ids cannot be probed. A member who may
see a vault but not do something to it gets 403.

Moves (``move``) are one ledger operation between two accounts the user may debit and
credit: their own AVAILABLE compartment and vaults they own or contribute to.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import asyncpg
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from core import audit
from core.errors import (
    AlreadyExists,
    Forbidden,
    LedgerError,
    UnknownAccount,
    UnknownAsset,
    UnknownUser,
    ValidationError,
    VaultMemberNotFound,
    VaultNotFound,
)
from core.ledger import Ledger
from core.queries import HistoryPage
from core.repository import translate
from core.types import (
    AccountKind,
    AccountStatus,
    Actor,
    OperationResult,
    OperationType,
    PostOperation,
    transfer_legs,
)

MAX_NAME = 100


class VaultRole(StrEnum):
    OWNER = "OWNER"
    CONTRIBUTOR = "CONTRIBUTOR"
    VIEWER = "VIEWER"


#: roles that may move funds into and out of a vault
MOVER_ROLES = frozenset({VaultRole.OWNER, VaultRole.CONTRIBUTOR})

#: the ids of every account a user may read: the ones they own and the vaults they are a
#: member of (bind ``:user``)
VISIBLE_ACCOUNTS_SQL = (
    "SELECT id FROM accounts WHERE owner_id = :user "
    "UNION SELECT vault_id FROM vault_members WHERE user_id = :user"
)


@dataclass(frozen=True, slots=True)
class Vault:
    id: int  # the vault's account id
    name: str
    asset: str
    owner_id: uuid.UUID
    #: the asking user's role in this vault
    role: VaultRole
    status: AccountStatus
    posted: int
    pending: int
    created_at: datetime

    @property
    def available(self) -> int:
        return self.posted - self.pending


@dataclass(frozen=True, slots=True)
class VaultMember:
    vault_id: int
    user_id: uuid.UUID
    role: VaultRole
    added_by: str
    created_at: datetime
    updated_at: datetime


_VAULT_SELECT = (
    "SELECT v.account_id, v.name, v.asset, v.owner_id, m.role, a.status, b.posted, "
    "b.pending, v.created_at FROM vaults v "
    "JOIN vault_members m ON m.vault_id = v.account_id AND m.user_id = :user "
    "JOIN accounts a ON a.id = v.account_id JOIN balances b ON b.account_id = v.account_id "
)


def _vault(row: Any) -> Vault:
    return Vault(
        row.account_id,
        row.name,
        row.asset,
        row.owner_id,
        VaultRole(row.role),
        AccountStatus(row.status),
        row.posted,
        row.pending,
        row.created_at,
    )


def _member(row: Any) -> VaultMember:
    return VaultMember(
        row.vault_id,
        row.user_id,
        VaultRole(row.role),
        row.added_by,
        row.created_at,
        row.updated_at,
    )


def driver_error(exc: DBAPIError) -> LedgerError:
    """The core error for a driver failure wrapped by SQLAlchemy."""
    orig = getattr(exc.orig, "__cause__", None) or exc.orig
    return translate(orig if isinstance(orig, asyncpg.PostgresError) else exc)


def _clean_name(name: str) -> str:
    cleaned = name.strip()
    if not 1 <= len(cleaned) <= MAX_NAME:
        raise ValidationError(f"a vault name has 1 to {MAX_NAME} characters", field="name")
    return cleaned


async def _role(conn: AsyncConnection, user: uuid.UUID, vault_id: int, *, lock: bool) -> VaultRole:
    """The user's role in the vault, or ``VaultNotFound`` (no vault, or not a member)."""
    role = (
        await conn.execute(
            text(
                "SELECT role FROM vault_members WHERE vault_id = :v AND user_id = :u"
                + (" FOR UPDATE" if lock else "")
            ),
            {"v": vault_id, "u": user},
        )
    ).scalar()
    if role is None:
        raise VaultNotFound(f"vault {vault_id} does not exist", vault_id=vault_id)
    return VaultRole(role)


async def require_user(conn: AsyncConnection, user: uuid.UUID, field: str) -> None:
    found = (await conn.execute(text("SELECT 1 FROM users WHERE id = :u"), {"u": user})).first()
    if found is None:
        raise UnknownUser(f"user {user} does not exist", field=field)


# -- vaults ------------------------------------------------------------------------------


async def create_vault(
    ledger: Ledger, *, user: uuid.UUID, asset: str, name: str, actor: Actor
) -> Vault:
    """Open a VAULT account owned by ``user`` with ``user`` as its OWNER member.

    Errors: VALIDATION_ERROR (name), UNKNOWN_USER, UNKNOWN_ASSET, ALREADY_EXISTS (the
    user already has a vault of that name for that asset)."""
    cleaned = _clean_name(name)
    try:
        async with ledger.engine.begin() as conn:
            await require_user(conn, user, "user")
            known = (
                await conn.execute(text("SELECT 1 FROM assets WHERE code = :a"), {"a": asset})
            ).first()
            if known is None:
                raise UnknownAsset(f"asset {asset} does not exist", code=asset)
            vault_id = await ledger.accounts.open_account_in(
                conn,
                asset=asset,
                kind=AccountKind.VAULT,
                owner_id=user,
                actor=actor,
                metadata={"vault": cleaned},
            )
            await conn.execute(
                text(
                    "INSERT INTO vaults (account_id, owner_id, asset, name) "
                    "VALUES (:id, :owner, :asset, :name)"
                ),
                {"id": vault_id, "owner": user, "asset": asset, "name": cleaned},
            )
            await conn.execute(
                text(
                    "INSERT INTO vault_members (vault_id, user_id, role, added_by) "
                    "VALUES (:id, :user, 'OWNER', :by)"
                ),
                {"id": vault_id, "user": user, "by": actor.id},
            )
            await audit.record(
                conn,
                actor,
                "vault.created",
                "vault",
                vault_id,
                after={"name": cleaned, "asset": asset, "owner_id": user},
            )
    except DBAPIError as exc:
        if "vaults_name_key" in str(exc):
            raise AlreadyExists(
                f"you already have a vault named {cleaned!r} for {asset}", field="name"
            ) from exc
        raise driver_error(exc) from exc
    return await get_vault(ledger, user=user, vault_id=vault_id)


async def get_vault(ledger: Ledger, *, user: uuid.UUID, vault_id: int) -> Vault:
    """A vault the user is a member of (any role). Errors: VAULT_NOT_FOUND."""
    async with ledger.engine.connect() as conn:
        row = (
            await conn.execute(
                text(_VAULT_SELECT + "WHERE v.account_id = :v"), {"user": user, "v": vault_id}
            )
        ).first()
    if row is None:
        raise VaultNotFound(f"vault {vault_id} does not exist", vault_id=vault_id)
    return _vault(row)


async def list_vaults(ledger: Ledger, *, user: uuid.UUID, asset: str | None = None) -> list[Vault]:
    """Every vault the user is a member of (optionally of one asset), oldest first."""
    async with ledger.engine.connect() as conn:
        rows = await conn.execute(
            text(
                _VAULT_SELECT + "WHERE CAST(:asset AS text) IS NULL OR v.asset = :asset "
                "ORDER BY v.account_id"
            ),
            {"user": user, "asset": asset},
        )
        return [_vault(r) for r in rows]


async def vault_history(
    ledger: Ledger,
    *,
    user: uuid.UUID,
    vault_id: int,
    before_seq: int | None = None,
    limit: int = 50,
) -> HistoryPage:
    """The vault's entries, newest first, keyset-paginated (any member).
    Errors: VAULT_NOT_FOUND, VALIDATION_ERROR (limit)."""
    async with ledger.engine.connect() as conn:
        await _role(conn, user, vault_id, lock=False)
    return await ledger.queries.history(vault_id, before_seq=before_seq, limit=limit)


# -- members -----------------------------------------------------------------------------


async def list_members(ledger: Ledger, *, user: uuid.UUID, vault_id: int) -> list[VaultMember]:
    """The vault's members (any member may read them). Errors: VAULT_NOT_FOUND."""
    async with ledger.engine.connect() as conn:
        await _role(conn, user, vault_id, lock=False)
        rows = await conn.execute(
            text(
                "SELECT vault_id, user_id, role, added_by, created_at, updated_at "
                "FROM vault_members WHERE vault_id = :v ORDER BY created_at, user_id"
            ),
            {"v": vault_id},
        )
        return [_member(r) for r in rows]


async def _vault_owner(conn: AsyncConnection, vault_id: int) -> uuid.UUID:
    """The creator, with the vault row locked: member changes of one vault serialise."""
    owner = (
        await conn.execute(
            text("SELECT owner_id FROM vaults WHERE account_id = :v FOR UPDATE"), {"v": vault_id}
        )
    ).scalar()
    if owner is None:
        raise VaultNotFound(f"vault {vault_id} does not exist", vault_id=vault_id)
    return uuid.UUID(str(owner))


async def set_member(
    ledger: Ledger,
    *,
    user: uuid.UUID,
    vault_id: int,
    member: uuid.UUID,
    role: VaultRole,
    actor: Actor,
) -> VaultMember:
    """Add ``member`` with ``role`` or change their role (OWNER only; the creator's own
    role cannot change).

    Errors: VAULT_NOT_FOUND (no vault or ``user`` not a member), FORBIDDEN (``user`` is
    not an OWNER, or targets the creator), UNKNOWN_USER (``member``)."""
    role = VaultRole(role)
    async with ledger.engine.begin() as conn:
        creator = await _vault_owner(conn, vault_id)
        if await _role(conn, user, vault_id, lock=False) is not VaultRole.OWNER:
            raise Forbidden("only a vault owner manages its members", vault_id=vault_id)
        if member == creator:
            raise Forbidden("the vault's creator stays its owner", vault_id=vault_id)
        await require_user(conn, member, "member")
        before = (
            await conn.execute(
                text("SELECT role FROM vault_members WHERE vault_id = :v AND user_id = :m"),
                {"v": vault_id, "m": member},
            )
        ).scalar()
        row = (
            await conn.execute(
                text(
                    "INSERT INTO vault_members (vault_id, user_id, role, added_by) "
                    "VALUES (:v, :m, :r, :by) ON CONFLICT (vault_id, user_id) DO UPDATE "
                    "SET role = EXCLUDED.role, updated_at = clock_timestamp() "
                    "RETURNING vault_id, user_id, role, added_by, created_at, updated_at"
                ),
                {"v": vault_id, "m": member, "r": role.value, "by": actor.id},
            )
        ).one()
        if before != role.value:
            await audit.record(
                conn,
                actor,
                "vault.member_added" if before is None else "vault.member_role",
                "vault",
                vault_id,
                before=None if before is None else {"member": member, "role": before},
                after={"member": member, "role": role.value},
            )
    return _member(row)


async def remove_member(
    ledger: Ledger, *, user: uuid.UUID, vault_id: int, member: uuid.UUID, actor: Actor
) -> None:
    """Remove ``member`` (an OWNER removes anyone but the creator; any member may leave).

    Errors: VAULT_NOT_FOUND, FORBIDDEN, VAULT_MEMBER_NOT_FOUND."""
    async with ledger.engine.begin() as conn:
        creator = await _vault_owner(conn, vault_id)
        acting_role = await _role(conn, user, vault_id, lock=False)
        if member != user and acting_role is not VaultRole.OWNER:
            raise Forbidden("only a vault owner manages its members", vault_id=vault_id)
        if member == creator:
            raise Forbidden("the vault's creator cannot be removed", vault_id=vault_id)
        before = (
            await conn.execute(
                text(
                    "DELETE FROM vault_members WHERE vault_id = :v AND user_id = :m RETURNING role"
                ),
                {"v": vault_id, "m": member},
            )
        ).scalar()
        if before is None:
            raise VaultMemberNotFound(f"{member} is not a member of vault {vault_id}")
        await audit.record(
            conn,
            actor,
            "vault.member_removed",
            "vault",
            vault_id,
            before={"member": member, "role": before},
        )


# -- moves -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Access:
    account_id: int
    asset: str
    kind: AccountKind
    can_read: bool
    can_move: bool


async def _access(conn: AsyncConnection, user: uuid.UUID, ids: list[int]) -> dict[int, _Access]:
    rows = await conn.execute(
        text(
            "SELECT a.id, a.asset, a.kind, a.owner_id, m.role FROM accounts a "
            "LEFT JOIN vault_members m ON m.vault_id = a.id AND m.user_id = :u "
            "WHERE a.id = ANY(:ids)"
        ),
        {"u": user, "ids": ids},
    )
    out: dict[int, _Access] = {}
    for r in rows:
        kind = AccountKind(r.kind)
        if kind is AccountKind.VAULT:
            role = VaultRole(r.role) if r.role is not None else None
            can_read, can_move = role is not None, role in MOVER_ROLES
        else:
            can_read = r.owner_id == user
            # BLOCKED (compliance), LOCKED (investments), CREDIT and COLLATERAL move only
            # through their own flows, never by the user directly
            can_move = can_read and kind is AccountKind.AVAILABLE
        out[r.id] = _Access(r.id, r.asset, kind, can_read, can_move)
    return out


async def move(
    ledger: Ledger,
    *,
    user: uuid.UUID,
    source: int,
    destination: int,
    asset: str,
    amount: int,
    actor: Actor,
    idempotency_key: str | None = None,
    memo: str | None = None,
) -> OperationResult:
    """Move ``amount`` between two of the user's accounts in ONE ledger operation
    (INTERNAL_MOVE): each side is the user's own AVAILABLE compartment or a vault where
    they are OWNER or CONTRIBUTOR. ``idempotency_key`` is scoped to the user.

    Errors: UNKNOWN_ACCOUNT (no such account or one the user cannot see: same answer),
    FORBIDDEN (a vault the user only views, or a compartment users cannot move),
    VALIDATION_ERROR (same account twice), and the ledger's own: INVALID_AMOUNT,
    ASSET_MISMATCH, INSUFFICIENT_FUNDS, ACCOUNT_FROZEN, IDEMPOTENCY_CONFLICT.

    Membership is checked before posting, outside the posting's transaction: a move that
    passed the check while its mover is being removed may still commit (it is ordered
    before the removal)."""
    if source == destination:
        raise ValidationError("source and destination must differ", field="destination")
    if memo is not None and len(memo) > 280:
        raise ValidationError("a memo has at most 280 characters", field="memo")
    async with ledger.engine.connect() as conn:
        access = await _access(conn, user, [source, destination])
    for account_id, field in ((source, "source"), (destination, "destination")):
        found = access.get(account_id)
        if found is None or not found.can_read:
            raise UnknownAccount(
                f"account {account_id} does not exist", account_id=account_id, field=field
            )
        if not found.can_move:
            raise Forbidden(
                f"you may not move funds {'out of' if field == 'source' else 'into'} "
                f"account {account_id}",
                account_id=account_id,
                field=field,
            )
    metadata: dict[str, Any] = {"moved_by": str(user)}
    if memo:
        metadata["memo"] = memo
    return await ledger.post(
        PostOperation(
            OperationType.INTERNAL_MOVE,
            transfer_legs(source, destination, asset, amount),
            actor=actor,
            idempotency_key=None if idempotency_key is None else f"move:{user}:{idempotency_key}",
            metadata=metadata,
        )
    )
