import importlib
import pkgutil
from datetime import UTC, datetime, timedelta

import pytest

import core
from core.errors import (
    ERRORS_BY_CODE,
    AlreadyReversed,
    HoldExceeded,
    HoldNotPending,
    IdempotencyConflict,
    InsufficientFunds,
    LedgerError,
    LinkedOperationFailed,
    NotReversible,
    P2PRequestExpired,
    ReasonRequired,
)
from core.planner import (
    HoldRow,
    OriginalOperation,
    StoredOutcome,
    outcome_from_json,
    outcome_to_json,
    plan_batch,
)
from core.posting import AccountState, BalanceBook
from core.types import (
    AccountStatus,
    CaptureHold,
    Command,
    HoldResult,
    HoldStatus,
    OperationResult,
    OperationType,
    PostOperation,
    ReverseOperation,
    VoidHold,
    transfer_legs,
)

pytestmark = pytest.mark.unit
NOW = datetime(2026, 11, 21, 12, tzinfo=UTC)


def book() -> BalanceBook:
    return BalanceBook(
        [
            AccountState(1, "PTS", 0, AccountStatus.ACTIVE, 100, 0),
            AccountState(2, "PTS", 0, AccountStatus.ACTIVE, 0, 0),
        ]
    )


def move(amount: int, key: str | None = None) -> PostOperation:
    return PostOperation(
        OperationType.TRANSFER, transfer_legs(1, 2, "PTS", amount), idempotency_key=key
    )


def run(commands: list[Command], groups: list[int | None] | None = None, **state: object) -> list:
    b = state.pop("book", None) or book()
    plan = plan_batch(
        commands,
        groups=groups or [None] * len(commands),
        book=b,  # type: ignore[arg-type]
        holds=state.get("holds", {}),  # type: ignore[arg-type]
        originals=state.get("originals", {}),  # type: ignore[arg-type]
        stored=state.get("stored", {}),  # type: ignore[arg-type]
        now=NOW,
    )
    plan.assign(
        list(range(1, len(plan.operations) + 1)),
        list(range(1, plan.entry_count + 1)),
        list(range(1, len(plan.new_holds) + 1)),
    )
    return plan.results(1, NOW)


def test_independent_items_fail_alone() -> None:
    results = run([move(60), move(60), move(40)])
    assert isinstance(results[0], OperationResult)
    assert isinstance(results[1], InsufficientFunds)
    assert isinstance(results[2], OperationResult)
    assert results[2].entries[0].balance_after == 0


def test_same_key_in_batch_replays_and_conflicts() -> None:
    results = run([move(10, "k"), move(10, "k"), move(11, "k")])
    first, again, other = results
    assert isinstance(first, OperationResult)
    assert isinstance(again, OperationResult) and again.replayed
    assert again.operation_id == first.operation_id
    assert isinstance(other, IdempotencyConflict)


def test_stored_outcomes_replay_results_and_failures() -> None:
    ok = run([move(10)])[0]
    failed = InsufficientFunds("no", account_id=1)
    stored = {
        "ok": StoredOutcome(move(10, "ok").request_hash(), outcome_to_json(ok)),
        "bad": StoredOutcome(move(500, "bad").request_hash(), outcome_to_json(failed)),
    }
    results = run([move(10, "ok"), move(500, "bad"), move(1, "bad")], stored=stored)
    assert isinstance(results[0], OperationResult) and results[0].replayed
    assert results[0].operation_id == ok.operation_id
    assert isinstance(results[1], InsufficientFunds)
    assert isinstance(results[2], IdempotencyConflict)


def test_outcome_json_round_trip() -> None:
    ok = run([move(10)])[0]
    back = outcome_from_json(outcome_to_json(ok))
    assert isinstance(back, OperationResult)
    assert back.entries == ok.entries and back.replayed


def test_linked_group_all_or_nothing() -> None:
    b = book()
    results = run([move(50), move(60), move(5)], groups=[7, 7, None], book=b)
    assert isinstance(results[0], LinkedOperationFailed)
    assert isinstance(results[1], InsufficientFunds)
    assert isinstance(results[2], OperationResult)
    assert b.accounts[1].posted == 95  # only the independent item applied


def hold(remaining: int = 40, expires: datetime | None = None) -> HoldRow:
    return HoldRow(
        9, 1, 2, "PTS", 40, remaining, HoldStatus.PENDING, expires or NOW + timedelta(hours=1)
    )


def held_book() -> BalanceBook:
    b = book()
    b.accounts[1].pending = 40
    return b


def test_partial_capture_releases_the_rest() -> None:
    b = held_book()
    results = run([CaptureHold(9, 25), CaptureHold(9, 1)], holds={9: hold()}, book=b)
    assert isinstance(results[0], OperationResult)
    assert isinstance(results[1], HoldNotPending)
    assert (b.accounts[1].posted, b.accounts[1].pending, b.accounts[2].posted) == (75, 0, 25)


def test_capture_more_than_held_or_expired_is_refused() -> None:
    assert isinstance(
        run([CaptureHold(9, 41)], holds={9: hold()}, book=held_book())[0], HoldExceeded
    )
    expired = hold(expires=NOW - timedelta(seconds=1))
    assert isinstance(
        run([CaptureHold(9)], holds={9: expired}, book=held_book())[0], HoldNotPending
    )


def test_void_releases_pending() -> None:
    b = held_book()
    result = run([VoidHold(9, expire=True)], holds={9: hold()}, book=b)[0]
    assert isinstance(result, HoldResult) and result.status is HoldStatus.EXPIRED
    assert b.accounts[1].pending == 0


def test_reversal_once_with_reason_and_never_of_a_reversal() -> None:
    original = OriginalOperation(5, OperationType.TRANSFER, ((1, "PTS", -30), (2, "PTS", 30)), None)
    b = BalanceBook(
        [
            AccountState(1, "PTS", 0, AccountStatus.ACTIVE, 70, 0),
            AccountState(2, "PTS", 0, AccountStatus.ACTIVE, 30, 0),
        ]
    )
    results = run(
        [
            ReverseOperation(5, ""),
            ReverseOperation(5, "customer dispute"),
            ReverseOperation(5, "again"),
        ],
        originals={5: original},
        book=b,
    )
    assert isinstance(results[0], ReasonRequired)
    assert isinstance(results[1], OperationResult)
    assert [e.amount for e in results[1].entries] == [30, -30]
    assert isinstance(results[2], AlreadyReversed)
    reversal = OriginalOperation(6, OperationType.REVERSAL, original.entries, None)
    assert isinstance(run([ReverseOperation(6, "x")], originals={6: reversal})[0], NotReversible)


def error_tree(root: type[LedgerError] = LedgerError) -> list[type[LedgerError]]:
    """``root`` and every class below it, at any depth (``__subclasses__`` is one level)."""
    found = [root]
    for sub in root.__subclasses__():
        found += error_tree(sub)
    return found


def test_every_error_has_a_stable_code() -> None:
    """Every class of core's error tree names its own code (none inherits its parent's),
    no two share one, and the replay registry maps each code back to exactly its class."""
    classes = [c for c in error_tree() if c.__module__ == "core.errors"]
    assert {HoldNotPending, LinkedOperationFailed, P2PRequestExpired} <= set(classes)
    inherited = [c.__name__ for c in classes if "code" not in vars(c)]
    assert not inherited, f"classes without a code of their own: {inherited}"
    codes = [c.code for c in classes]
    assert len(codes) == len(set(codes)), sorted(c for c in codes if codes.count(c) > 1)
    assert {c.code: c for c in classes} == ERRORS_BY_CODE


def test_error_codes_are_unique_across_all_of_core() -> None:
    """Same rule for error classes defined anywhere in core, not only in core.errors."""
    for module in pkgutil.walk_packages(core.__path__, "core."):
        if ".migrations" not in module.name:
            importlib.import_module(module.name)
    classes = [c for c in error_tree() if c.__module__.startswith("core.")]
    codes = [c.code for c in classes]
    assert len(codes) == len(set(codes)), sorted(c for c in codes if codes.count(c) > 1)
    assert {c.code: c for c in classes} == ERRORS_BY_CODE


def test_validation_failures_are_not_stored_under_the_key() -> None:
    bad = PostOperation(
        OperationType.ADJUSTMENT, transfer_legs(1, 2, "PTS", 5), idempotency_key="adj"
    )
    fixed = PostOperation(
        OperationType.ADJUSTMENT,
        transfer_legs(1, 2, "PTS", 5),
        idempotency_key="adj",
        reason="goodwill",
    )
    results = run([bad, fixed])
    assert isinstance(results[0], ReasonRequired)
    assert isinstance(results[1], OperationResult)
