"""The risk job's settings: liquidation caps read from the environment."""

from __future__ import annotations

import pytest

from core.risk.loop import DEFAULT_ASSET_CAP, DEFAULT_GLOBAL_CAP, LiquidationCaps
from jobs.risk import RiskSettings

pytestmark = pytest.mark.unit

CAP_VARS = ("VALUEOS_RISK_CAP_GLOBAL", "VALUEOS_RISK_CAP_ASSET", "VALUEOS_RISK_CAPS")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*CAP_VARS, "VALUEOS_PRICE_FEEDS", "VALUEOS_CARD_WEBHOOK_URL"):
        monkeypatch.delenv(name, raising=False)


def test_caps_default() -> None:
    caps = RiskSettings.from_env().caps
    assert caps == LiquidationCaps(DEFAULT_GLOBAL_CAP, DEFAULT_ASSET_CAP, {})
    assert caps.of("WETH") == DEFAULT_ASSET_CAP


def test_caps_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VALUEOS_RISK_CAP_GLOBAL", "500")
    monkeypatch.setenv("VALUEOS_RISK_CAP_ASSET", "200")
    monkeypatch.setenv("VALUEOS_RISK_CAPS", "WETH=300, WBTC=100")
    caps = RiskSettings.from_env().caps
    assert (caps.global_cap, caps.of("WETH"), caps.of("WBTC"), caps.of("SOL")) == (
        500, 300, 100, 200,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("VALUEOS_RISK_CAPS", "WETH"),
        ("VALUEOS_RISK_CAPS", "WETH=1.5"),
        ("VALUEOS_RISK_CAPS", "WETH=-3"),
        ("VALUEOS_RISK_CAPS", "WETH=0"),
        ("VALUEOS_RISK_CAP_GLOBAL", "0"),
        ("VALUEOS_RISK_CAP_ASSET", "abc"),
    ],
)
def test_bad_caps_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError):  # noqa: PT011 - int() or the caps' own message
        RiskSettings.from_env()
