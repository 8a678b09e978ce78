"""The worker's job list and its switch (pure: nothing is scheduled or run)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from chain.evm.settings import SignerError, bridge_signer
from core.ledger import Ledger
from jobs.anchor import AnchorJob
from jobs.schedule import worker_jobs
from jobs.settings import WorkerSettings, parse_switch

pytestmark = pytest.mark.unit

LEDGER = cast(Ledger, object())
JOB = cast(AnchorJob, object())
HOUSEKEEPING = ["expire_holds", "p2p_housekeeping", "offline_sweep", "prune_policy_usage"]


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
    assert [jobs[h].every_s for h in HOUSEKEEPING] == [5, 5, 5, 600]


def test_with_a_bridge_minter_the_bridge_out_job_is_listed() -> None:
    async def body() -> None:
        return None

    listed = worker_jobs(
        LEDGER, JOB, anchor_interval_s=3600, housekeeping_interval_s=5, prune_interval_s=600,
        bridge_out=body, bridge_interval_s=3,
    )  # fmt: skip
    jobs = {j.id: j for j in listed}
    assert list(jobs) == ["seal_and_anchor", "confirm", "bridge_out", *HOUSEKEEPING]
    assert jobs["bridge_out"].body is body and jobs["bridge_out"].every_s == 3


def test_the_bridge_minter_key_comes_from_the_environment_or_a_file(tmp_path: Path) -> None:
    key = "0x" + "11" * 32
    assert bridge_signer({}) is None
    from_env = bridge_signer({"VALUEOS_BRIDGE_KEY": key})
    (tmp_path / "minter.key").write_text(key + "\n")
    from_file = bridge_signer({"VALUEOS_BRIDGE_KEY_FILE": str(tmp_path / "minter.key")})
    assert from_env is not None and from_file is not None
    assert from_env.address == from_file.address
    with pytest.raises(SignerError) as caught:
        bridge_signer({"VALUEOS_BRIDGE_KEY": "0x1234"})
    assert "1234" not in str(caught.value)  # never the key material


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


def test_the_self_audit_is_listed_on_its_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    async def body() -> None:
        return None

    listed = worker_jobs(
        LEDGER, None, anchor_interval_s=3600, housekeeping_interval_s=5, prune_interval_s=600,
        audit=body, audit_interval_s=7200,
    )  # fmt: skip
    jobs = {j.id: j for j in listed}
    assert list(jobs) == ["self_audit", *HOUSEKEEPING]
    assert jobs["self_audit"].body is body and jobs["self_audit"].every_s == 7200
    monkeypatch.delenv("VALUEOS_AUDIT_INTERVAL_S", raising=False)
    assert WorkerSettings.from_env().audit_interval_s == 6 * 3600  # every epoch at least daily


def test_the_risk_jobs_are_listed_and_start_at_once() -> None:
    async def body() -> None:
        return None

    async def limits() -> None:
        return None

    listed = worker_jobs(
        LEDGER, None, anchor_interval_s=3600, housekeeping_interval_s=5, prune_interval_s=600,
        risk=body, risk_limits=limits, risk_interval_s=7,
    )  # fmt: skip
    jobs = {j.id: j for j in listed}
    assert list(jobs) == ["risk", "risk_limits", *HOUSEKEEPING]
    assert jobs["risk"].body is body and jobs["risk"].every_s == 7 and jobs["risk"].at_start
    # the limits refresh is a job of its own: a long one never delays the next tick
    assert jobs["risk_limits"].body is limits and jobs["risk_limits"].every_s == 7
