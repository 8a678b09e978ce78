"""The worker's job list and its switch (pure: nothing is scheduled or run)."""

from __future__ import annotations

from typing import Any, cast

import pytest

from core.ledger import Ledger
from jobs.anchor import AnchorJob
from jobs.schedule import worker_jobs
from jobs.settings import WorkerSettings, parse_switch

pytestmark = pytest.mark.unit

LEDGER = cast(Ledger, object())
JOB = cast(AnchorJob, object())
HOUSEKEEPING = ["expire_holds", "p2p_housekeeping", "prune_policy_usage"]


def _jobs(job: AnchorJob | None) -> dict[str, Any]:
    listed = worker_jobs(
        LEDGER, job, anchor_interval_s=3600, housekeeping_interval_s=5, prune_interval_s=600
    )
    return {j.id: j for j in listed}


def test_with_a_chain_every_job_is_listed_and_anchoring_starts_at_once() -> None:
    jobs = _jobs(JOB)
    assert list(jobs) == ["seal_and_anchor", "confirm", *HOUSEKEEPING]
    assert jobs["seal_and_anchor"].at_start and jobs["seal_and_anchor"].every_s == 3600
    assert jobs["confirm"].every_s == 60  # never longer than a minute
    assert [jobs[h].every_s for h in HOUSEKEEPING] == [5, 5, 600]


def test_without_a_chain_only_housekeeping_is_listed() -> None:
    assert list(_jobs(None)) == HOUSEKEEPING


def test_the_anchoring_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VALUEOS_ANCHORING", raising=False)
    assert WorkerSettings.from_env().anchoring is True  # the default: anchor
    for word, expected in (("off", False), ("OFF", False), ("0", False), ("on", True)):
        monkeypatch.setenv("VALUEOS_ANCHORING", word)
        assert WorkerSettings.from_env().anchoring is expected
    with pytest.raises(ValueError, match="VALUEOS_ANCHORING must be 'on' or 'off'"):
        parse_switch("VALUEOS_ANCHORING", "sometimes")
