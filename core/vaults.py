"""Vaults: named accounts (kind VAULT) a user opens per asset and shares by role.

Roles: OWNER manages members and moves funds; CONTRIBUTOR moves funds into and out of
the vault; VIEWER reads. The creator is an OWNER who can be neither removed nor demoted.

Every function takes the acting ``user`` (whose permissions apply) and, for writes, the
``actor`` recorded in the audit log (who, role, IP). Someone who is not a member gets
the same 404 as for a vault that does not exist: ids cannot be probed. A member who may
see a vault but not do something to it gets 403.

Moves (``move``) are one ledger operation between two accounts the user may debit and
credit: their own AVAILABLE compartment and vaults they own or contribute to.

Moves are linearizable with member changes although the ledger posts them on another
connection: a move holds its mover's memberships (see ``_hold_memberships``) from its
check until its posting has ended, and a removal or role change takes the membership's
lock exclusive before it writes. So a move commits while its mover holds a role that may
move funds (a change racing it commits after it), or it fails as a non-member's or a
viewer's would, moving nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
import weakref
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import QueuePool

from core import audit
from core.errors import (
    AlreadyExists,
    Forbidden,
    UnknownAccount,
    UnknownAsset,
    UnknownUser,
    ValidationError,
    VaultMemberNotFound,
    VaultNotFound,
)
from core.ledger import Ledger
from core.queries import HistoryPage
from core.storage_errors import translate
from core.types import (
    AccountKind,
    AccountStatus,
    Actor,
    OperationResult,
    OperationType,
    PostOperation,
    transfer_legs,
)

log = logging.getLogger(__name__)

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
    "JOIN vault_members m ON m.vault_id = v.account_id "
    "AND m.user_id = coalesce(CAST(:user AS uuid), v.owner_id) "
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
        raise translate(exc) from exc
    return await get_vault(ledger, user=user, vault_id=vault_id)


async def get_vault(ledger: Ledger, *, user: uuid.UUID | None, vault_id: int) -> Vault:
    """A vault the user is a member of (any role); ``user`` None: staff, who see any vault as
    its creator does. Errors: VAULT_NOT_FOUND."""
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
    user: uuid.UUID | None,
    vault_id: int,
    before_seq: int | None = None,
    limit: int = 50,
) -> tuple[Vault, HistoryPage]:
    """The vault and its entries, newest first, keyset-paginated (any member; ``user`` None:
    staff). Errors: VAULT_NOT_FOUND, VALIDATION_ERROR (limit)."""
    vault = await get_vault(ledger, user=user, vault_id=vault_id)
    return vault, await ledger.queries.history(vault_id, before_seq=before_seq, limit=limit)


# -- members -----------------------------------------------------------------------------


async def list_members(
    ledger: Ledger, *, user: uuid.UUID | None, vault_id: int
) -> list[VaultMember]:
    """The vault's members (any member may read them; ``user`` None: staff).
    Errors: VAULT_NOT_FOUND."""
    async with ledger.engine.connect() as conn:
        member = await conn.execute(
            text(
                "SELECT 1 FROM vault_members m JOIN vaults v ON v.account_id = m.vault_id "
                "WHERE m.vault_id = :v AND m.user_id = coalesce(CAST(:u AS uuid), v.owner_id)"
            ),
            {"v": vault_id, "u": user},
        )
        if member.first() is None:
            raise VaultNotFound(f"vault {vault_id} does not exist", vault_id=vault_id)
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


def _membership_key(vault_id: int, user: uuid.UUID) -> tuple[int, int]:
    """The advisory lock of one membership: two int4 keys, a lock space apart from the
    bigint keys every other advisory lock of the ledger uses (the epoch lock among them).
    Two memberships sharing a key only wait for each other needlessly."""

    def int4(n: int) -> int:
        n &= 0xFFFFFFFF
        return n - (1 << 32) if n >= 1 << 31 else n

    return int4(vault_id), int4(user.int)


async def _change_membership(conn: AsyncConnection, vault_id: int, member: uuid.UUID) -> None:
    """Before ``member``'s row of the vault is written: wait for their moves in flight
    (see ``_hold_memberships``); moves that start meanwhile queue behind this change."""
    k1, k2 = _membership_key(vault_id, member)
    await conn.execute(text("SELECT pg_advisory_xact_lock(:k1, :k2)"), {"k1": k1, "k2": k2})


async def _hold_memberships(
    conn: AsyncConnection, user: uuid.UUID, vault_ids: list[int]
) -> dict[int, VaultRole]:
    """The user's role in each of ``vault_ids`` they are a member of, held until ``conn``'s
    transaction ends: a removal or role change of those memberships commits after it.

    Two locks. The membership's advisory lock, shared (moves do not wait for each other):
    a member change takes it exclusive first, and the lock manager queues a shared request
    behind a waiting exclusive one, so a change waits for the moves in flight, never for
    moves that start after it (a stream of moves cannot starve a removal). Then the member
    rows ``FOR SHARE``, which conflicts with a DELETE (``FOR UPDATE``) and with a role
    UPDATE (``FOR NO KEY UPDATE``; ``FOR KEY SHARE`` would let that through): any writer of
    ``vault_members`` waits, even one that forgot the advisory lock. The roles are read
    after both locks (READ COMMITTED: a change that committed first is seen)."""
    for vault_id in sorted(vault_ids, key=lambda v: _membership_key(v, user)):
        k1, k2 = _membership_key(vault_id, user)
        await conn.execute(
            text("SELECT pg_advisory_xact_lock_shared(:k1, :k2)"), {"k1": k1, "k2": k2}
        )
    if not vault_ids:
        return {}
    rows = await conn.execute(
        text(
            "SELECT vault_id, role FROM vault_members WHERE user_id = :u "
            "AND vault_id = ANY(:ids) ORDER BY vault_id FOR SHARE"
        ),
        {"u": user, "ids": vault_ids},
    )
    return {r.vault_id: VaultRole(r.role) for r in rows}


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
    async with _slots(ledger.engine), ledger.engine.begin() as conn:
        creator = await _vault_owner(conn, vault_id)
        if await _role(conn, user, vault_id, lock=False) is not VaultRole.OWNER:
            raise Forbidden("only a vault owner manages its members", vault_id=vault_id)
        if member == creator:
            raise Forbidden("the vault's creator stays its owner", vault_id=vault_id)
        await require_user(conn, member, "member")
        await _change_membership(conn, vault_id, member)
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
    async with _slots(ledger.engine), ledger.engine.begin() as conn:
        creator = await _vault_owner(conn, vault_id)
        acting_role = await _role(conn, user, vault_id, lock=False)
        if member != user and acting_role is not VaultRole.OWNER:
            raise Forbidden("only a vault owner manages its members", vault_id=vault_id)
        if member == creator:
            raise Forbidden("the vault's creator cannot be removed", vault_id=vault_id)
        await _change_membership(conn, vault_id, member)
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
    """What ``user`` may do with each of ``ids``, their memberships of the vaults among
    them held until ``conn``'s transaction ends (see ``_hold_memberships``)."""
    rows = (
        await conn.execute(
            text("SELECT id, asset, kind, owner_id FROM accounts WHERE id = ANY(:ids)"),
            {"ids": ids},
        )
    ).all()
    roles = await _hold_memberships(
        conn, user, [r.id for r in rows if r.kind == AccountKind.VAULT.value]
    )
    out: dict[int, _Access] = {}
    for r in rows:
        kind = AccountKind(r.kind)
        if kind is AccountKind.VAULT:
            role = roles.get(r.id)
            can_read, can_move = role is not None, role in MOVER_ROLES
        else:
            can_read = r.owner_id == user
            # BLOCKED (compliance), LOCKED (investments), CREDIT and COLLATERAL move only
            # through their own flows, never by the user directly
            can_move = can_read and kind is AccountKind.AVAILABLE
        out[r.id] = _Access(r.id, r.asset, kind, can_read, can_move)
    return out


_SLOTS: weakref.WeakKeyDictionary[AsyncEngine, asyncio.Semaphore] = weakref.WeakKeyDictionary()


def _slots(engine: AsyncEngine) -> asyncio.Semaphore:
    """How many transactions that may wait on a posting in flight hold a connection of
    ``engine`` at once: half its pool.

    A move holds its connection (and member locks) while the batcher posts on another
    one, and member changes wait for such moves. Were the pool full of those, the batcher
    would wait for a connection that only its own commit frees (until the pool's timeout
    failed the batch). Every such transaction takes a slot before its connection; a
    queued one holds nothing."""
    found = _SLOTS.get(engine)
    if found is None:
        pool = engine.pool
        size = pool.size() if isinstance(pool, QueuePool) else 0
        overflow: int = getattr(pool, "_max_overflow", -1)
        limit = max(1, (size + overflow) // 2) if size > 0 and overflow >= 0 else 1 << 30
        found = _SLOTS[engine] = asyncio.Semaphore(limit)
    return found


async def _post_settled(ledger: Ledger, command: PostOperation) -> OperationResult:
    """``ledger.post(command)``, returning (or raising) only once its batch has ended,
    even when the caller is cancelled: the batcher commits a posting whose caller went
    away, so the caller's transaction, whose locks order the posting before later member
    changes, must not end before the posting does."""
    posting = asyncio.ensure_future(ledger.post(command))
    try:
        return await asyncio.shield(posting)
    except asyncio.CancelledError:
        while not posting.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([posting])
        if not posting.cancelled():
            posting.exception()  # retrieved: the caller gets its CancelledError
        raise


def _require_movable(access: dict[int, _Access], source: int, destination: int) -> None:
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

    The memberships checked stay held until the posting's batch has ended (also when the
    caller is cancelled: the batcher still commits), so a removal or demotion racing the
    move commits after it."""
    if source == destination:
        raise ValidationError("source and destination must differ", field="destination")
    if memo is not None and len(memo) > 280:
        raise ValidationError("a memo has at most 280 characters", field="memo")
    metadata: dict[str, Any] = {"moved_by": str(user)}
    if memo:
        metadata["memo"] = memo
    command = PostOperation(
        OperationType.INTERNAL_MOVE,
        transfer_legs(source, destination, asset, amount),
        actor=actor,
        idempotency_key=None if idempotency_key is None else f"move:{user}:{idempotency_key}",
        metadata=metadata,
    )
    result: OperationResult | None = None
    try:
        async with _slots(ledger.engine), ledger.engine.begin() as conn:
            access = await _access(conn, user, [source, destination])
            _require_movable(access, source, destination)
            result = await _post_settled(ledger, command)
            return result  # noqa: RET504 - the except clause reads it
    except DBAPIError:
        if result is None:
            raise
        # the posting has ended, then ending the check's transaction (it wrote nothing)
        # failed: the result stands (a retry must not move the funds twice). Had the
        # connection died before the posting ended, its locks went with it.
        log.warning("vault move %d posted; its membership check's connection failed",
                    result.operation_id)  # fmt: skip
        return result
