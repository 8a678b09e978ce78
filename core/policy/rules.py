"""The policy engine — pure: document schema, validation and evaluation. No I/O.

A policy is a JSON document attached to an (asset, operation type), stored versioned in
the database (``core.policy.store``). Its rules are checked in document order; the first
that fails denies the operation with ``PolicyDenied`` naming the policy version and the
rule. Rule kinds (``kind``):

- ``claims``: every user on ``party`` (source: owners of debited accounts, destination:
  owners of credited accounts; system accounts have no owner) holds each required claim,
  e.g. ``{"claim": "kyc.level", "op": ">=", "value": 2}``;
- ``amount``: the operation's amount in the asset (sum of its debits) within [min, max];
- ``limit``: per user on ``party``, over a rolling ``window`` ("day" = 24 h, "month" =
  30 days, hour granularity): at most ``max_count`` operations and/or ``max_amount``;
- ``counterparty``: deny lists of users/accounts, ``same_owner`` only, allowed
  ``account_kinds``;
- ``fee``: ``fixed + amount * bps // 10000`` (rounded down), clamped to [min, max],
  debited from the first debited account and credited to the asset's FEES account in the
  same operation (which therefore still sums to zero per asset);
- ``freeze``: a FROZEN account may receive or not; a SUSPENDED user's accounts may
  receive or not; a suspended user never sends.

Reversals are never policy-checked (corrections must stay possible).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec

from core.errors import InvalidPolicy, PolicyDenied, UnknownAccount
from core.money import INT64_MAX, check_int64
from core.policy.limits import LimitBook, LimitKey, Window
from core.types import AccountKind, AccountStatus, EntrySpec, OperationType, Side

# ---------------------------------------------------------------------------
# Document schema (msgspec: exact paths in every error)
# ---------------------------------------------------------------------------

Amount = Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)]
RuleId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
ClaimName = Annotated[
    str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$", max_length=64)
]
ClaimValue = bool | int | str
Party = Literal["source", "destination"]
Op = Literal["==", "!=", ">=", ">", "<=", "<", "exists", "in"]


def _same(a: ClaimValue, b: ClaimValue) -> bool:
    """Strict equality: ``True`` is not ``1``."""
    return type(a) is type(b) and a == b


class Requirement(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    claim: ClaimName
    op: Op = "=="
    value: ClaimValue | list[ClaimValue] | None = None

    def __post_init__(self) -> None:
        if self.op == "exists":
            if self.value is not None:
                raise ValueError("'exists' takes no value")
        elif self.op == "in":
            if not isinstance(self.value, list) or not self.value:
                raise ValueError("'in' needs a non-empty list value")
        elif self.op in ("==", "!="):
            if self.value is None or isinstance(self.value, list):
                raise ValueError(f"'{self.op}' needs a scalar value")
        elif not isinstance(self.value, int) or isinstance(self.value, bool):
            raise ValueError(f"'{self.op}' needs an integer value")

    def satisfied(self, held: ClaimValue | None) -> bool:
        if held is None:
            return False
        if self.op == "exists":
            return True
        if self.op == "in":
            return isinstance(self.value, list) and any(_same(held, v) for v in self.value)
        value = self.value
        if self.op in ("==", "!="):
            return isinstance(value, bool | int | str) and _same(held, value) == (self.op == "==")
        if not isinstance(held, int) or isinstance(held, bool) or not isinstance(value, int):
            return False
        return {
            ">=": held >= value,
            ">": held > value,
            "<=": held <= value,
            "<": held < value,
        }[self.op]

    def describe(self) -> str:
        return self.claim if self.op == "exists" else f"{self.claim} {self.op} {self.value!r}"


class _Rule(msgspec.Struct, forbid_unknown_fields=True, frozen=True, tag_field="kind"):
    id: RuleId


class ClaimsRule(_Rule, tag="claims", frozen=True):
    require: Annotated[list[Requirement], msgspec.Meta(min_length=1)]
    party: Party = "source"


class AmountRule(_Rule, tag="amount", frozen=True):
    min: Amount | None = None
    max: Amount | None = None

    def __post_init__(self) -> None:
        if self.min is None and self.max is None:
            raise ValueError("an amount rule needs min and/or max")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min must not exceed max")


class LimitRule(_Rule, tag="limit", frozen=True):
    window: Window
    max_count: Amount | None = None
    max_amount: Amount | None = None
    party: Party = "source"

    def __post_init__(self) -> None:
        if self.max_count is None and self.max_amount is None:
            raise ValueError("a limit rule needs max_count and/or max_amount")


class CounterpartyRule(_Rule, tag="counterparty", frozen=True):
    deny_users: list[UUID] = msgspec.field(default_factory=list)
    deny_accounts: list[int] = msgspec.field(default_factory=list)
    same_owner: bool = False
    account_kinds: list[AccountKind] | None = None

    def __post_init__(self) -> None:
        if not (self.deny_users or self.deny_accounts or self.same_owner) and (
            self.account_kinds is None
        ):
            raise ValueError("a counterparty rule needs at least one check")


class FeeRule(_Rule, tag="fee", frozen=True):
    fixed: Amount = 0
    bps: Annotated[int, msgspec.Meta(ge=0, le=10_000)] = 0
    min: Amount = 0
    max: Amount | None = None

    def __post_init__(self) -> None:
        if self.fixed == 0 and self.bps == 0 and self.min == 0:
            raise ValueError("a fee rule needs fixed, bps or min")
        if self.max is not None and self.min > self.max:
            raise ValueError("min must not exceed max")

    def fee(self, amount: int) -> int:
        fee = max(self.fixed + amount * self.bps // 10_000, self.min)
        return fee if self.max is None else min(fee, self.max)


class FreezeRule(_Rule, tag="freeze", frozen=True):
    frozen_account_can_receive: bool = False
    suspended_user_can_receive: bool = False


Rule = ClaimsRule | AmountRule | LimitRule | CounterpartyRule | FeeRule | FreezeRule


class PolicyDocument(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    rules: Annotated[list[Rule], msgspec.Meta(min_length=1)]
    description: str = ""


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a policy document (for the API's docs)."""
    return msgspec.json.schema(PolicyDocument)


def parse_document(document: Any) -> PolicyDocument:
    """Validate a policy document (a dict, or JSON text/bytes); ``InvalidPolicy`` names the
    exact path of the first problem (``$.rules[2].window``)."""
    try:
        if isinstance(document, str | bytes):
            parsed = msgspec.json.decode(document, type=PolicyDocument)
        else:
            parsed = msgspec.convert(document, PolicyDocument)
    except msgspec.ValidationError as exc:
        message, _, where = str(exc).partition(" - at `")
        path = where.rstrip("`") or "$"
        raise InvalidPolicy(f"{path}: {message}", path=path, problem=message) from None
    except msgspec.DecodeError as exc:
        raise InvalidPolicy(f"$: not JSON ({exc})", path="$", problem=str(exc)) from None
    seen: set[str] = set()
    for index, rule in enumerate(parsed.rules):
        if rule.id in seen:
            path = f"$.rules[{index}].id"
            raise InvalidPolicy(f"{path}: duplicate rule id {rule.id!r}", path=path)
        seen.add(rule.id)
    return parsed


def document_to_json(document: PolicyDocument) -> dict[str, Any]:
    return msgspec.to_builtins(document)  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------
# Compiled policies and what a batch needs to evaluate them
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Policy:
    """One stored policy version."""

    id: int
    asset: str
    operation_type: OperationType
    version: int
    document: PolicyDocument
    fee_account: int | None = None
    #: rules by kind, computed once (the write path asks per command)
    _by_kind: dict[type, tuple[Any, ...]] = field(init=False, repr=False, compare=False)
    needs_users: bool = field(init=False, repr=False, compare=False)
    claims: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_kind: dict[type, list[Any]] = {}
        for rule in self.document.rules:
            by_kind.setdefault(type(rule), []).append(rule)
        object.__setattr__(self, "_by_kind", {k: tuple(v) for k, v in by_kind.items()})
        object.__setattr__(self, "needs_users", ClaimsRule in by_kind or FreezeRule in by_kind)
        object.__setattr__(
            self,
            "claims",
            frozenset(q.claim for r in by_kind.get(ClaimsRule, ()) for q in r.require),
        )

    def rules_of(self, kind: type[_Rule]) -> tuple[Any, ...]:
        return self._by_kind.get(kind, ())


@dataclass(frozen=True, slots=True)
class AccountInfo:
    """Immutable facts of an account (owner and kind never change)."""

    owner_id: UUID | None
    kind: AccountKind


@dataclass(frozen=True, slots=True)
class UserFacts:
    suspended: bool
    claims: dict[str, ClaimValue]


@dataclass(frozen=True, slots=True)
class Applied:
    """What the policies attach to an allowed operation."""

    versions: tuple[tuple[int, int], ...]  # (policy id, version)
    fee_legs: tuple[EntrySpec, ...]
    usage: tuple[tuple[LimitKey, int], ...]  # counted once each, with this amount
    frozen_receivers: frozenset[int]

    def versions_json(self) -> list[dict[str, int]]:
        return [{"policy_id": p, "version": v} for p, v in self.versions]

    @property
    def fees(self) -> list[tuple[str, int, int]]:
        """(asset, amount, fee account) of each fee charged."""
        return [(e.asset, e.amount, e.account_id) for e in self.fee_legs if e.side is Side.CREDIT]


PolicyMap = dict[tuple[str, OperationType], Policy]
_DEBIT = Side.DEBIT


def policies_for(
    policies: PolicyMap, type_: OperationType, entries: Sequence[EntrySpec]
) -> list[Policy]:
    """The active policies an operation falls under, one per asset, in leg order."""
    if type_ is OperationType.REVERSAL or not policies:
        return []
    out: list[Policy] = []
    for asset in dict.fromkeys(e.asset for e in entries):
        policy = policies.get((asset, type_))
        if policy is not None:
            out.append(policy)
    return out


@dataclass(slots=True)
class PolicyContext:
    """Everything one batch needs to evaluate its policies, loaded under lock."""

    policies: PolicyMap
    accounts: dict[int, AccountInfo]
    users: dict[UUID, UserFacts]
    limits: LimitBook

    def evaluate(
        self,
        type_: OperationType,
        entries: Sequence[EntrySpec],
        status: Callable[[int], AccountStatus],
    ) -> Applied | None:
        """Check every applicable policy; return fees/usage to apply, or raise ``PolicyDenied``.

        ``status`` gives an account's (locked) status. Nothing is recorded until
        ``commit``: the caller commits only once the postings themselves succeeded.
        """
        matching = policies_for(self.policies, type_, entries)
        if not matching:
            return None
        fee_legs: list[EntrySpec] = []
        usage: list[tuple[LimitKey, int]] = []
        receivers: set[int] = set()
        for policy in matching:
            _Check(self, policy, entries, status).run(fee_legs, usage, receivers)
        # one usage record per user and key, however many limit rules name it (a daily and
        # a monthly limit count the same operation once; a user on both sides of it counts
        # the larger side)
        merged: dict[LimitKey, int] = {}
        for key, amount in usage:
            merged[key] = max(amount, merged.get(key, 0))
        return Applied(
            tuple((p.id, p.version) for p in matching),
            tuple(fee_legs),
            tuple(merged.items()),
            frozenset(receivers),
        )

    def commit(self, applied: Applied) -> None:
        for key, amount in applied.usage:
            self.limits.add(key, amount)


class _Check:
    """One policy against one operation."""

    def __init__(
        self,
        ctx: PolicyContext,
        policy: Policy,
        entries: Sequence[EntrySpec],
        status: Callable[[int], AccountStatus],
    ) -> None:
        self.ctx, self.policy, self.status = ctx, policy, status
        asset = policy.asset
        debits: dict[int, int] = {}
        credits: dict[int, int] = {}
        amount = 0
        for e in entries:
            if e.asset != asset:
                continue
            if e.side is _DEBIT:
                amount += e.amount
                debits[e.account_id] = debits.get(e.account_id, 0) + e.amount
            else:
                credits[e.account_id] = credits.get(e.account_id, 0) + e.amount
        self.amount = amount
        self.debits = list(debits)
        self.credits = list(credits)
        self.per_side = {"source": debits, "destination": credits}

    def info(self, account_id: int) -> AccountInfo:
        found = self.ctx.accounts.get(account_id)
        if found is None:
            raise UnknownAccount(f"account {account_id} does not exist", account_id=account_id)
        return found

    def party(self, party: str) -> list[int]:
        return self.debits if party == "source" else self.credits

    def users(self, party: str) -> list[UUID]:
        owners = (self.info(a).owner_id for a in self.party(party))
        return list(dict.fromkeys(o for o in owners if o is not None))

    def deny(self, rule: _Rule, why: str, **details: Any) -> PolicyDenied:
        p = self.policy
        kind = type(rule).__struct_config__.tag
        return PolicyDenied(
            f"denied by policy {p.asset}/{p.operation_type.value} v{p.version}, "
            f"rule {rule.id!r} ({kind}): {why}",
            policy_id=p.id,
            asset=p.asset,
            operation_type=p.operation_type.value,
            version=p.version,
            rule=rule.id,
            rule_kind=kind,
            **details,
        )

    def run(
        self, fee_legs: list[EntrySpec], usage: list[tuple[LimitKey, int]], receivers: set[int]
    ) -> None:
        fee = 0
        for rule in self.policy.document.rules:
            kind = type(rule)
            if kind is ClaimsRule:
                self.claims(rule)  # type: ignore[arg-type]
            elif kind is AmountRule:
                self.amount_bounds(rule)  # type: ignore[arg-type]
            elif kind is LimitRule:
                usage.extend(self.limit(rule))  # type: ignore[arg-type]
            elif kind is CounterpartyRule:
                self.counterparty(rule)  # type: ignore[arg-type]
            elif kind is FeeRule:
                fee += rule.fee(self.amount)  # type: ignore[union-attr]
            else:
                receivers |= self.freeze(rule)  # type: ignore[arg-type]
        if fee > 0 and self.debits:
            check_int64(fee, "fee")
            if self.policy.fee_account is None:  # pragma: no cover - activation sets it
                raise self.deny(self.policy.rules_of(FeeRule)[0], "no fee account")
            fee_legs.append(EntrySpec(self.debits[0], self.policy.asset, fee, Side.DEBIT))
            fee_legs.append(EntrySpec(self.policy.fee_account, self.policy.asset, fee, Side.CREDIT))

    def claims(self, rule: ClaimsRule) -> None:
        for user in self.users(rule.party):
            facts = self.ctx.users.get(user)
            held = facts.claims if facts is not None else {}
            for req in rule.require:
                if not req.satisfied(held.get(req.claim)):
                    raise self.deny(
                        rule,
                        f"user {user} does not hold {req.describe()}",
                        user=str(user),
                        claim=req.claim,
                    )

    def amount_bounds(self, rule: AmountRule) -> None:
        if rule.min is not None and self.amount < rule.min:
            raise self.deny(rule, f"amount {self.amount} is below {rule.min}", amount=self.amount)
        if rule.max is not None and self.amount > rule.max:
            raise self.deny(rule, f"amount {self.amount} is above {rule.max}", amount=self.amount)

    def limit(self, rule: LimitRule) -> list[tuple[LimitKey, int]]:
        per_account = self.per_side[rule.party]
        out: list[tuple[LimitKey, int]] = []
        for user in self.users(rule.party):
            amount = sum(v for a, v in per_account.items() if self.info(a).owner_id == user)
            key: LimitKey = (user, self.policy.asset, self.policy.operation_type.value)
            count, used = self.ctx.limits.used(key, rule.window)
            if rule.max_count is not None and count + 1 > rule.max_count:
                raise self.deny(
                    rule,
                    f"user {user} already made {count} of {rule.max_count} operations "
                    f"this {rule.window}",
                    user=str(user),
                    used_count=count,
                )
            if rule.max_amount is not None and used + amount > rule.max_amount:
                raise self.deny(
                    rule,
                    f"user {user} has {rule.max_amount - used} of {rule.max_amount} left "
                    f"this {rule.window}, needs {amount}",
                    user=str(user),
                    used_amount=str(used),
                )
            out.append((key, amount))
        return out

    def counterparty(self, rule: CounterpartyRule) -> None:
        accounts = list(dict.fromkeys(self.debits + self.credits))
        denied_users = set(rule.deny_users)
        owners: set[UUID | None] = set()
        for account in accounts:
            info = self.info(account)
            owners.add(info.owner_id)
            if account in rule.deny_accounts:
                raise self.deny(rule, f"account {account} is denied", account_id=account)
            if info.owner_id is not None and info.owner_id in denied_users:
                raise self.deny(rule, f"user {info.owner_id} is denied", user=str(info.owner_id))
            if rule.account_kinds is not None and info.kind not in rule.account_kinds:
                raise self.deny(
                    rule,
                    f"account {account} is {info.kind.value}, not an allowed kind",
                    account_id=account,
                )
        if rule.same_owner and (len(owners) != 1 or None in owners):
            raise self.deny(rule, "all accounts must belong to the same user")

    def freeze(self, rule: FreezeRule) -> set[int]:
        receivers: set[int] = set()
        for account in self.debits:
            owner = self.info(account).owner_id
            facts = self.ctx.users.get(owner) if owner is not None else None
            if facts is not None and facts.suspended:
                raise self.deny(rule, f"user {owner} is suspended", user=str(owner))
        for account in self.credits:
            if account in self.debits:
                continue
            owner = self.info(account).owner_id
            facts = self.ctx.users.get(owner) if owner is not None else None
            if facts is not None and facts.suspended and not rule.suspended_user_can_receive:
                raise self.deny(
                    rule, f"user {owner} is suspended and may not receive", user=str(owner)
                )
            if self.status(account) is not AccountStatus.ACTIVE:
                if not rule.frozen_account_can_receive:
                    raise self.deny(
                        rule, f"account {account} is frozen and may not receive", account_id=account
                    )
                receivers.add(account)
        return receivers
