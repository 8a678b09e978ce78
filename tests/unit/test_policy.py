"""Policy engine, pure: schema validation and every rule kind at its exact boundary."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from core.compliance import Attestation
from core.errors import InsufficientFunds, InvalidPolicy, LedgerError, PolicyDenied
from core.planner import PlannedOperation, plan_batch
from core.policy.limits import LimitBook, UsageRow, bucket_of
from core.policy.rules import AccountInfo, Policy, PolicyContext, UserFacts, parse_document
from core.posting import AccountState, BalanceBook
from core.types import (
    AccountKind,
    AccountStatus,
    Command,
    EntrySpec,
    OperationType,
    PostOperation,
    Side,
    transfer_legs,
)

pytestmark = pytest.mark.unit
NOW = datetime(2026, 11, 21, 12, 30, tzinfo=UTC)
ALICE, BOB = uuid.UUID(int=1), uuid.UUID(int=2)
A, A2, B, FEES, ISSUANCE = 1, 2, 3, 9, 10  # A, A2: Alice's; B: Bob's
T = OperationType.TRANSFER


def policy(*rules: dict[str, Any]) -> Policy:
    return Policy(7, "PTS", T, 3, parse_document({"rules": list(rules)}), fee_account=FEES)


def context(
    pol: Policy,
    *,
    claims: dict[uuid.UUID, dict[str, Any]] | None = None,
    suspended: frozenset[uuid.UUID] = frozenset(),
    usage: list[UsageRow] | None = None,
) -> PolicyContext:
    accounts = {
        A: AccountInfo(ALICE, AccountKind.AVAILABLE),
        A2: AccountInfo(ALICE, AccountKind.LOCKED),
        B: AccountInfo(BOB, AccountKind.AVAILABLE),
        FEES: AccountInfo(None, AccountKind.SYSTEM),
        ISSUANCE: AccountInfo(None, AccountKind.SYSTEM),
    }
    users = {u: UserFacts(u in suspended, (claims or {}).get(u, {})) for u in (ALICE, BOB)}
    return PolicyContext({("PTS", T): pol}, accounts, users, LimitBook(usage or [], NOW))


def book(frozen: frozenset[int] = frozenset(), alice: int = 10_000) -> BalanceBook:
    def state(i: int, posted: int, floor: int | None = 0) -> AccountState:
        status = AccountStatus.FROZEN if i in frozen else AccountStatus.ACTIVE
        return AccountState(i, "PTS", floor, status, posted, 0)

    return BalanceBook(
        [state(A, alice), state(A2, 0), state(B, 0), state(FEES, 0), state(ISSUANCE, 0, None)]
    )


def move(amount: int, src: int = A, dst: int = B) -> PostOperation:
    return PostOperation(T, transfer_legs(src, dst, "PTS", amount))


def run(
    ctx: PolicyContext,
    commands: list[Command],
    groups: list[int | None] | None = None,
    b: BalanceBook | None = None,
) -> list[Any]:
    plan = plan_batch(
        commands, groups=groups or [None] * len(commands), book=b or book(), holds={},
        originals={}, stored={}, now=NOW, policy=ctx,
    )  # fmt: skip
    return plan.outcomes


def allowed(ctx: PolicyContext, command: Command, b: BalanceBook | None = None) -> bool:
    outcome = run(ctx, [command], b=b)[0]
    if isinstance(outcome, PolicyDenied):
        return False
    assert isinstance(outcome, PlannedOperation), outcome
    return True


# -- schema -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "path"),
    [
        ({}, "$"),
        ({"rules": []}, "$.rules"),
        ({"rules": [{"id": "x", "kind": "magic"}]}, "$.rules[0].kind"),
        (
            {"rules": [{"id": "l", "kind": "limit", "window": "week", "max_count": 1}]},
            "$.rules[0].window",
        ),
        ({"rules": [{"id": "l", "kind": "limit", "window": "day"}]}, "$.rules[0]"),
        ({"rules": [{"id": "a", "kind": "amount", "min": -1}]}, "$.rules[0].min"),
        ({"rules": [{"id": "a", "kind": "amount", "min": 1.5}]}, "$.rules[0].min"),
        ({"rules": [{"id": "a", "kind": "amount", "min": 5, "max": 4}]}, "$.rules[0]"),
        ({"rules": [{"id": "f", "kind": "fee", "bps": 10_001}]}, "$.rules[0].bps"),
        ({"rules": [{"id": "f", "kind": "fee", "fixed": 1, "extra": 1}]}, "$.rules[0]"),
        (
            {
                "rules": [
                    {
                        "id": "c",
                        "kind": "claims",
                        "require": [{"claim": "kyc.level", "op": ">=", "value": "2"}],
                    }
                ]
            },
            "$.rules[0].require[0]",
        ),
        (
            {
                "rules": [
                    {"id": "c", "kind": "claims", "require": [{"claim": "KYC", "op": "exists"}]}
                ]
            },
            "$.rules[0].require[0].claim",
        ),
        (
            {
                "rules": [
                    {"id": "f", "kind": "fee", "fixed": 1},
                    {"id": "f", "kind": "fee", "fixed": 2},
                ]
            },
            "$.rules[1].id",
        ),
        (
            {"rules": [{"id": "k", "kind": "counterparty", "account_kinds": ["NOPE"]}]},
            "$.rules[0].account_kinds[0]",
        ),
    ],
)
def test_invalid_documents_name_the_exact_path(document: dict[str, Any], path: str) -> None:
    with pytest.raises(InvalidPolicy) as err:
        parse_document(document)
    assert err.value.details["path"] == path
    assert err.value.message.startswith(path)


def test_json_text_is_accepted_and_bad_json_rejected() -> None:
    assert parse_document('{"rules": [{"id": "f", "kind": "fee", "fixed": 1}]}').rules[0].id == "f"
    with pytest.raises(InvalidPolicy):
        parse_document("{not json")


# -- rules at their boundaries ---------------------------------------------------------------


def test_claims_boundary_and_strict_types() -> None:
    pol = policy(
        {"id": "kyc", "kind": "claims", "require": [{"claim": "kyc.level", "op": ">=", "value": 2}]}
    )
    assert not allowed(context(pol), move(1))  # no claim at all
    assert not allowed(context(pol, claims={ALICE: {"kyc.level": 1}}), move(1))
    assert allowed(context(pol, claims={ALICE: {"kyc.level": 2}}), move(1))
    assert not allowed(
        context(pol, claims={ALICE: {"kyc.level": True}}), move(1)
    )  # bool is no level
    assert not allowed(context(pol, claims={ALICE: {"kyc.level": "2"}}), move(1))
    # destination party: Bob's claims count, Alice's do not
    dest = policy({"id": "age", "kind": "claims", "party": "destination",
                   "require": [{"claim": "age.over18", "value": True}]})  # fmt: skip
    assert not allowed(context(dest, claims={ALICE: {"age.over18": True}}), move(1))
    assert not allowed(context(dest, claims={BOB: {"age.over18": 1}}), move(1))
    assert allowed(context(dest, claims={BOB: {"age.over18": True}}), move(1))
    # system accounts have no owner: minting from issuance needs no claim of the issuer
    assert allowed(context(pol, claims={BOB: {}}), move(1, ISSUANCE, B))


@pytest.mark.parametrize(
    ("op", "value", "held", "ok"),
    [
        (">", 2, 2, False), (">", 2, 3, True), ("<", 2, 2, False), ("<", 2, 1, True),
        ("<=", 2, 2, True), ("<=", 2, 3, False), ("==", "FR", "FR", True), ("==", "FR", "DE", False),
        ("!=", "FR", "DE", True), ("!=", "FR", "FR", False), ("in", ["FR", "DE"], "DE", True),
        ("in", ["FR", "DE"], "US", False), ("exists", None, False, True),
    ],
)  # fmt: skip
def test_claim_operators(op: str, value: Any, held: Any, ok: bool) -> None:
    req: dict[str, Any] = {"claim": "x.y", "op": op}
    if value is not None:
        req["value"] = value
    pol = policy({"id": "c", "kind": "claims", "require": [req]})
    assert allowed(context(pol, claims={ALICE: {"x.y": held}}), move(1)) is ok


def test_amount_min_max_boundaries() -> None:
    ctx = context(policy({"id": "amt", "kind": "amount", "min": 10, "max": 100}))
    assert [allowed(ctx, move(n)) for n in (9, 10, 100, 101)] == [False, True, True, False]


def test_limit_amount_and_count_boundaries_within_a_batch() -> None:
    ctx = context(
        policy({"id": "d", "kind": "limit", "window": "day", "max_amount": 100, "max_count": 3})
    )
    outcomes = run(ctx, [move(60), move(40), move(1)])
    assert [isinstance(o, PlannedOperation) for o in outcomes] == [True, True, False]
    assert outcomes[2].details["rule"] == "d"
    ctx = context(policy({"id": "n", "kind": "limit", "window": "day", "max_count": 3}))
    assert [isinstance(o, PlannedOperation) for o in run(ctx, [move(1)] * 4)] == [True] * 3 + [
        False
    ]


def test_limit_windows_count_stored_usage_up_to_their_edge() -> None:
    key = (ALICE, "PTS", T.value)
    current = bucket_of(NOW)
    pol = policy({"id": "d", "kind": "limit", "window": "day", "max_amount": 100},
                 {"id": "m", "kind": "limit", "window": "month", "max_amount": 150})  # fmt: skip
    edge = [UsageRow(key, current - timedelta(hours=23), 1, 100)]  # oldest bucket of the day
    assert not allowed(context(pol, usage=edge), move(1))
    past = [UsageRow(key, current - timedelta(hours=24), 1, 100)]  # out of the day, in month
    assert allowed(context(pol, usage=past), move(50))
    denied = run(context(pol, usage=past), [move(51)])[0]
    assert isinstance(denied, PolicyDenied)
    assert denied.details["rule"] == "m"
    gone = [UsageRow(key, current - timedelta(hours=720), 1, 10**6)]
    assert allowed(context(pol, usage=gone), move(100))


def test_a_day_and_a_month_limit_count_each_operation_once() -> None:
    both = policy({"id": "d", "kind": "limit", "window": "day", "max_amount": 100},
                  {"id": "m", "kind": "limit", "window": "month", "max_amount": 1_000})  # fmt: skip
    outcomes = run(context(both), [move(60), move(40), move(1)])
    assert [isinstance(o, PlannedOperation) for o in outcomes] == [True, True, False]
    assert outcomes[0].policy.usage == (((ALICE, "PTS", T.value), 60),)
    # Alice on both sides (her own compartments): counted once, with the larger side
    mine = policy({"id": "src", "kind": "limit", "window": "day", "max_count": 5},
                  {"id": "dst", "kind": "limit", "window": "day", "max_count": 5,
                   "party": "destination"})  # fmt: skip
    assert run(context(mine), [move(7, dst=A2)])[0].policy.usage == (((ALICE, "PTS", T.value), 7),)


def test_limit_is_not_consumed_by_failed_or_undone_operations() -> None:
    ctx = context(policy({"id": "n", "kind": "limit", "window": "day", "max_count": 2}))
    poor = book(alice=5)
    outcomes = run(ctx, [move(10), move(1), move(1)], b=poor)  # the first fails on funds
    assert isinstance(outcomes[0], InsufficientFunds)
    assert all(isinstance(o, PlannedOperation) for o in outcomes[1:])
    ctx = context(policy({"id": "n", "kind": "limit", "window": "day", "max_count": 2}))
    outcomes = run(ctx, [move(1), move(10**9), move(1), move(1)], [1, 1, None, None])
    assert all(isinstance(o, LedgerError) for o in outcomes[:2])  # linked group undone
    assert all(isinstance(o, PlannedOperation) for o in outcomes[2:])


def test_counterparty_rules() -> None:
    deny_user = context(policy({"id": "s", "kind": "counterparty", "deny_users": [str(BOB)]}))
    assert not allowed(deny_user, move(1))
    assert allowed(deny_user, move(1, A, A2))
    deny_account = context(policy({"id": "s", "kind": "counterparty", "deny_accounts": [A2]}))
    assert allowed(deny_account, move(1))
    assert not allowed(deny_account, move(1, A, A2))
    same = context(policy({"id": "own", "kind": "counterparty", "same_owner": True}))
    assert allowed(same, move(1, A, A2))
    assert not allowed(same, move(1, A, B))
    assert not allowed(same, move(1, ISSUANCE, A))
    kinds = context(policy({"id": "k", "kind": "counterparty", "account_kinds": ["AVAILABLE"]}))
    assert allowed(kinds, move(1, A, B))
    assert not allowed(kinds, move(1, A, A2))


@pytest.mark.parametrize(
    ("rule", "amount", "fee"),
    [
        ({"fixed": 10}, 1_000, 10),
        ({"bps": 25}, 399, 0),  # 399 * 25 / 10000 = 0.9975: rounded down
        ({"bps": 25}, 400, 1),
        ({"fixed": 10, "bps": 100}, 1_000, 20),
        ({"bps": 100, "min": 5}, 100, 5),
        ({"bps": 100, "max": 7}, 9_000, 7),
    ],
)
def test_fees_are_extra_legs_to_the_fee_account(
    rule: dict[str, Any], amount: int, fee: int
) -> None:
    ctx = context(policy({"id": "fee", "kind": "fee", **rule}))
    op = run(ctx, [move(amount)])[0]
    assert isinstance(op, PlannedOperation)
    legs = [(account, signed) for account, _, signed, _ in op.entries]
    expected = [(A, -amount), (B, amount)] + ([(A, -fee), (FEES, fee)] if fee else [])
    assert legs == expected
    assert sum(signed for _, signed in legs) == 0
    assert op.policy is not None
    assert op.policy.versions == ((7, 3),)


def test_fee_needs_funds_on_top_of_the_amount() -> None:
    ctx = context(policy({"id": "fee", "kind": "fee", "fixed": 1}))
    assert isinstance(run(ctx, [move(100)], b=book(alice=100))[0], InsufficientFunds)
    assert isinstance(run(ctx, [move(99)], b=book(alice=100))[0], PlannedOperation)


def test_freeze_rules() -> None:
    can = context(policy({"id": "fz", "kind": "freeze", "frozen_account_can_receive": True}))
    cannot = context(policy({"id": "fz", "kind": "freeze"}))
    frozen_bob = frozenset({B})
    assert allowed(can, move(1), b=book(frozen_bob))
    assert not allowed(cannot, move(1), b=book(frozen_bob))
    # frozen senders never send, whatever the policy
    assert isinstance(run(can, [move(1)], b=book(frozenset({A})))[0], LedgerError)
    susp = policy({"id": "fz", "kind": "freeze", "suspended_user_can_receive": True})
    assert not allowed(context(susp, suspended=frozenset({ALICE})), move(1))
    assert allowed(context(susp, suspended=frozenset({BOB})), move(1))
    assert not allowed(
        context(policy({"id": "fz", "kind": "freeze"}), suspended=frozenset({BOB})), move(1)
    )


def test_denial_names_policy_version_and_rule() -> None:
    ctx = context(policy({"id": "amt", "kind": "amount", "max": 5}))
    plan = plan_batch(
        [move(6)], groups=[None], book=book(), holds={}, originals={}, stored={}, now=NOW,
        policy=ctx,
    )  # fmt: skip
    denial = plan.outcomes[0]
    assert isinstance(denial, PolicyDenied)
    assert denial.code == "POLICY_DENIED"
    assert {k: denial.details[k] for k in ("policy_id", "version", "rule", "rule_kind")} == {
        "policy_id": 7,
        "version": 3,
        "rule": "amt",
        "rule_kind": "amount",
    }
    assert plan.operations == []
    assert plan.policy_denials == [(0, denial)]


def test_other_assets_and_reversals_are_not_checked() -> None:
    ctx = context(policy({"id": "amt", "kind": "amount", "max": 0}))
    other = PostOperation(
        T, (EntrySpec(A, "OTHER", 1, Side.DEBIT), EntrySpec(B, "OTHER", 1, Side.CREDIT))
    )
    assert ctx.evaluate(T, other.entries, lambda _: AccountStatus.ACTIVE) is None
    assert (
        ctx.evaluate(OperationType.REVERSAL, move(1).entries, lambda _: AccountStatus.ACTIVE)
        is None
    )


def test_attestation_expiry_boundary() -> None:
    att = Attestation(1, ALICE, "kyc.level", 2, "x", "ab" * 8, NOW - timedelta(days=1), NOW,
                      "x", None, None, None)  # fmt: skip
    assert att.current(NOW - timedelta(microseconds=1))
    assert not att.current(NOW)  # expires exactly now: no longer counts
