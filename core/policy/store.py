"""Policies in the database: versions, activation, the write path's per-batch context.

Hot path (``PolicyCache``, used by ``LedgerStore``): active policies are cached per
process by (asset, operation type) and checked against ``policy_state.generation``, which
the batch reads in the same statement as its clock (no extra round trip). A batch whose
commands fall under no active policy pays one dict lookup per command. A batch that does
needs at most three more queries, each for the whole batch: account owners/kinds
(cached: they never change), users' status and current claims, and the limit rows
(locked in sorted order after the balance rows) with their usage buckets.

Lock order of a batch: balance rows (account id order, fee accounts included) → limit rows
(user, asset, operation type order). Nothing locks them in another order, so no deadlock;
when the cache changed under a batch and a fee account was not locked with the others, it
is locked late: a deadlock then is possible, detected, and the batch retried.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from core.planner import HoldRow, Plan, PlannedOperation
from core.policy.limits import (
    WINDOW_HOURS,
    LimitBook,
    LimitKey,
    UsageRow,
    bucket_of,
    counted_since,
    window_start,
)
from core.policy.rules import (
    AccountInfo,
    FeeRule,
    LimitRule,
    Policy,
    PolicyContext,
    PolicyMap,
    UserFacts,
    parse_document,
)
from core.posting import AccountState, BalanceBook
from core.types import (
    AccountKind,
    AccountStatus,
    Actor,
    CaptureHold,
    Command,
    CreateHold,
    EntrySpec,
    OperationType,
    PostOperation,
    Side,
    transfer_legs,
)

_ACCOUNT_CACHE_MAX = 1_000_000


def _scope(
    command: Command, holds: dict[int, HoldRow]
) -> tuple[OperationType, Sequence[EntrySpec]]:
    """The operation type and legs a command would post (for policy lookup)."""
    if isinstance(command, PostOperation):
        return command.type, command.entries
    if isinstance(command, CaptureHold) and command.hold_id in holds:
        h = holds[command.hold_id]
        return OperationType.HOLD_CAPTURE, transfer_legs(h.source, h.destination, h.asset, 1)
    if isinstance(command, CreateHold):  # checked against the capture's policy up front
        legs = transfer_legs(command.source, command.destination, command.asset, 1)
        return OperationType.HOLD_CAPTURE, legs
    return OperationType.REVERSAL, ()  # never policy-checked


def _policy(row: Any) -> Policy:
    return Policy(
        row["id"],
        row["asset"],
        OperationType(row["operation_type"]),
        row["version"],
        parse_document(row["document"]),
        row["fee_account_id"],
    )


class PolicyCache:
    """Active policies of this process, refreshed when the generation moves."""

    def __init__(self) -> None:
        self.generation = -1
        self.active: PolicyMap = {}
        self._accounts: dict[int, AccountInfo] = {}

    def _matching(
        self, commands: Sequence[Command], holds: dict[int, HoldRow]
    ) -> list[tuple[Policy, Sequence[EntrySpec]]]:
        out = []
        for command in commands:
            type_, entries = _scope(command, holds)
            if type_ is OperationType.REVERSAL:
                continue
            for asset in dict.fromkeys(e.asset for e in entries):
                policy = self.active.get((asset, type_))
                if policy is not None:
                    out.append((policy, entries))
        return out

    def lock_ids(self, commands: Sequence[Command], holds: dict[int, HoldRow]) -> set[int]:
        """Fee accounts to lock with the batch's balance rows (from the cached policies)."""
        if not self.active:
            return set()
        return {
            p.fee_account
            for p, _ in self._matching(commands, holds)
            if p.fee_account is not None and p.rules_of(FeeRule)
        }

    async def _reload(self, conn: asyncpg.Connection, generation: int) -> None:
        rows = await conn.fetch(
            "SELECT id, asset, operation_type, version, document::text AS document, "
            "fee_account_id FROM policies WHERE status = 'ACTIVE'"
        )
        self.active = {(p.asset, p.operation_type): p for p in map(_policy, rows)}
        self.generation = generation

    async def prepare(
        self,
        conn: asyncpg.Connection,
        commands: Sequence[Command],
        holds: dict[int, HoldRow],
        book: BalanceBook,
        generation: int,
        now: datetime,
        *,
        lock: bool = True,
    ) -> PolicyContext | None:
        """The policy context of a batch, or None when no command falls under a policy.

        Runs in the batch transaction after the balance rows are locked. ``lock=False``
        (dry run) reads the same state without locking or creating anything.
        """
        if generation != self.generation:
            await self._reload(conn, generation)
        if not self.active:
            return None
        matching = self._matching(commands, holds)
        if not matching:
            return None
        policies = {p.id: p for p, _ in matching}.values()
        await self._late_fee_accounts(conn, policies, book, lock=lock)
        accounts = await self._account_infos(
            conn, {e.account_id for _, entries in matching for e in entries}
        )
        users: dict[UUID, UserFacts] = {}
        if any(p.needs_users for p in policies):
            owners = {i.owner_id for i in accounts.values() if i.owner_id is not None}
            claims = sorted({c for p in policies for c in p.claims})
            users = await self._user_facts(conn, owners, claims, now)
        rows = await self._limit_usage(conn, matching, accounts, now, lock=lock)
        return PolicyContext(dict(self.active), accounts, users, LimitBook(rows, now))

    async def _late_fee_accounts(
        self,
        conn: asyncpg.Connection,
        policies: Any,
        book: BalanceBook,
        *,
        lock: bool,
    ) -> None:
        missing = sorted(
            {p.fee_account for p in policies if p.fee_account is not None} - book.accounts.keys()
        )
        if not missing:
            return
        query = "SELECT * FROM valueos_lock_balances($1::bigint[])" if lock else READ_BALANCES
        for r in await conn.fetch(query, missing):
            book.accounts[r["account_id"]] = account_state(r)

    async def _account_infos(
        self, conn: asyncpg.Connection, ids: set[int]
    ) -> dict[int, AccountInfo]:
        cache = self._accounts
        missing = [i for i in ids if i not in cache]
        if missing:
            if len(cache) > _ACCOUNT_CACHE_MAX:
                cache.clear()
            for r in await conn.fetch(
                "SELECT id, owner_id, kind FROM accounts WHERE id = ANY($1::bigint[])", missing
            ):
                cache[r["id"]] = AccountInfo(r["owner_id"], AccountKind(r["kind"]))
        return {i: cache[i] for i in ids if i in cache}

    @staticmethod
    async def _user_facts(
        conn: asyncpg.Connection, owners: set[UUID], claims: list[str], now: datetime
    ) -> dict[UUID, UserFacts]:
        if not owners:
            return {}
        rows = await conn.fetch(_USER_FACTS, list(owners), claims, now)
        return {r["id"]: UserFacts(r["suspended"], json.loads(r["claims"])) for r in rows}

    @staticmethod
    async def _limit_usage(
        conn: asyncpg.Connection,
        matching: list[tuple[Policy, Sequence[EntrySpec]]],
        accounts: dict[int, AccountInfo],
        now: datetime,
        *,
        lock: bool,
    ) -> list[UsageRow]:
        keys: set[LimitKey] = set()
        longest = 0
        for policy, entries in matching:
            for rule in policy.rules_of(LimitRule):
                longest = max(longest, WINDOW_HOURS[rule.window])
                side = Side.DEBIT if rule.party == "source" else Side.CREDIT
                for e in entries:
                    info = accounts.get(e.account_id)
                    if e.asset == policy.asset and e.side is side and info and info.owner_id:
                        keys.add((info.owner_id, policy.asset, policy.operation_type.value))
        if not keys:
            return []
        since = window_start(now, "month" if longest > WINDOW_HOURS["day"] else "day")
        ordered = sorted(keys, key=lambda k: (str(k[0]), k[1], k[2]))
        args = ([k[0] for k in ordered], [k[1] for k in ordered], [k[2] for k in ordered], since)
        query = (
            "SELECT * FROM valueos_lock_limits($1::uuid[], $2::text[], $3::text[], $4)"
            if lock
            else _READ_USAGE
        )
        rows = await conn.fetch(query, *args)
        return [
            UsageRow(
                (r["user_id"], r["asset"], r["operation_type"]),
                r["bucket"],
                r["count"],
                r["amount"],
            )
            for r in rows
        ]


READ_BALANCES = (
    "SELECT b.account_id, a.asset, b.floor, a.status, b.posted, b.pending "
    "FROM balances b JOIN accounts a ON a.id = b.account_id WHERE b.account_id = ANY($1::bigint[])"
)

_READ_USAGE = """
SELECT p.user_id, p.asset, p.operation_type, p.bucket, p.count, p.amount
FROM policy_usage p
JOIN unnest($1::uuid[], $2::text[], $3::text[]) AS k(u, a, o)
  ON p.user_id = k.u AND p.asset = k.a AND p.operation_type = k.o
WHERE p.bucket >= $4
"""

# A user's current claims: unrevoked, issued, unexpired at the batch's clock; per claim
# the latest issued wins.
_USER_FACTS = """
SELECT u.id, u.status <> 'ACTIVE' AS suspended,
       coalesce((SELECT jsonb_object_agg(c.claim, c.value) FROM (
           SELECT DISTINCT ON (a.claim) a.claim, a.value FROM attestations a
           WHERE a.subject_id = u.id AND a.revoked_at IS NULL AND a.claim = ANY($2::text[])
             AND a.issued_at <= $3 AND (a.expires_at IS NULL OR a.expires_at > $3)
           ORDER BY a.claim, a.issued_at DESC, a.id DESC) c), '{}'::jsonb)::text AS claims
FROM users u WHERE u.id = ANY($1::uuid[])
"""


def account_state(r: Any) -> AccountState:
    return AccountState(
        r["account_id"], r["asset"], r["floor"], AccountStatus(r["status"]), r["posted"],
        r["pending"],
    )  # fmt: skip


# ---------------------------------------------------------------------------
# Writes of the batch (called by LedgerStore._write, same transaction)
# ---------------------------------------------------------------------------


def policy_versions(op: PlannedOperation) -> str | None:
    """The ``operations.policy_versions`` value of a planned operation."""
    if op.policy is None:
        return None
    return json.dumps(op.policy.versions_json())


async def write_usage(conn: asyncpg.Connection, plan: Plan, now: datetime) -> None:
    """Add the accepted operations to their users' limit buckets (rows are locked)."""
    totals: dict[LimitKey, list[int]] = {}
    for op in plan.operations:
        if op.policy is None:
            continue
        for key, amount in op.policy.usage:
            total = totals.setdefault(key, [0, 0])
            total[0] += 1
            total[1] += amount
    if not totals:
        return
    keys = sorted(totals, key=lambda k: (str(k[0]), k[1], k[2]))
    await conn.execute(
        "INSERT INTO policy_usage (user_id, asset, operation_type, bucket, count, amount) "
        "SELECT u.u, u.a, u.o, $4, u.c, u.m "
        "FROM unnest($1::uuid[], $2::text[], $3::text[], $5::bigint[], $6::bigint[]) "
        "AS u(u, a, o, c, m) "
        "ON CONFLICT (user_id, asset, operation_type, bucket) DO UPDATE SET "
        "count = policy_usage.count + excluded.count, "
        "amount = policy_usage.amount + excluded.amount",
        [k[0] for k in keys],
        [k[1] for k in keys],
        [k[2] for k in keys],
        bucket_of(now),
        [totals[k][0] for k in keys],
        [totals[k][1] for k in keys],
    )


def denial_audit(plan: Plan, commands: Sequence[Command]) -> list[tuple[Actor, str, str]]:
    """(actor, policy id, decision JSON) of each denial, for the batch's audit rows."""
    out = []
    for item, denial in plan.policy_denials:
        command = commands[item]
        decision: dict[str, Any] = {
            "decision": "DENIED",
            "code": denial.code,
            "message": denial.message,
        }
        decision |= denial.details
        decision["idempotency_key"] = command.idempotency_key
        out.append((command.actor, str(denial.details["policy_id"]), json.dumps(decision)))
    return out


async def prune_usage(conn: asyncpg.Connection) -> int:
    """Delete the limit buckets that no window counts any more (the worker's
    ``prune_policy_usage`` job); returns how many. Writers only ever add to the current
    bucket and read the buckets of their windows, so this never touches a row they use."""
    now: datetime = await conn.fetchval("SELECT clock_timestamp()")
    status: str = await conn.execute(
        "DELETE FROM policy_usage WHERE bucket < $1", counted_since(now)
    )
    return int(status.rsplit(" ", 1)[1])
