"""The bridge-in job in the worker's list, and its settings (pure: nothing runs)."""

from __future__ import annotations

from typing import cast

import pytest

from core.ledger import Ledger
from jobs.anchor import AnchorJob
from jobs.schedule import worker_jobs
from jobs.settings import WorkerSettings

pytestmark = pytest.mark.unit


async def _body() -> None:
    return None


def test_the_bridge_in_job_is_listed_next_to_bridge_out_on_the_bridge_interval() -> None:
    listed = worker_jobs(
        cast(Ledger, object()), cast(AnchorJob, object()), anchor_interval_s=3600,
        housekeeping_interval_s=5, prune_interval_s=600, bridge_out=_body, bridge_interval_s=3,
        bridge_in=_body,
    )  # fmt: skip
    jobs = {j.id: j for j in listed}
    assert list(jobs)[:4] == ["seal_and_anchor", "confirm", "bridge_out", "bridge_in"]
    assert jobs["bridge_in"].body is _body and jobs["bridge_in"].every_s == 3
    assert jobs["bridge_in"].at_start


def test_the_bridge_in_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("VALUEOS_BRIDGE_IN_PAGE_BLOCKS", "VALUEOS_BRIDGE_IN_START_BLOCK"):
        monkeypatch.delenv(name, raising=False)
    default = WorkerSettings.from_env()
    assert (default.bridge_in_page_blocks, default.bridge_in_start_block) == (1000, 0)
    monkeypatch.setenv("VALUEOS_BRIDGE_IN_PAGE_BLOCKS", "50")
    monkeypatch.setenv("VALUEOS_BRIDGE_IN_START_BLOCK", "1234")
    got = WorkerSettings.from_env()
    assert (got.bridge_in_page_blocks, got.bridge_in_start_block) == (50, 1234)
    monkeypatch.setenv("VALUEOS_BRIDGE_IN_PAGE_BLOCKS", "0")
    with pytest.raises(ValueError, match="VALUEOS_BRIDGE_IN_PAGE_BLOCKS"):
        WorkerSettings.from_env()
