"""Settings of the worker, read from the environment (cached accessor).

``VALUEOS_ANCHORING``                ``on`` (default) or ``off``: with ``off`` the worker runs
                                     only the housekeeping jobs and touches no chain (no
                                     ``ETH_RPC_URL`` needed, no local anvil started);
                                     ``valueos worker --no-anchoring`` is the same
``VALUEOS_EXPIRE_HOLDS_INTERVAL_S``  seconds between hold expiry and P2P housekeeping runs;
                                     default 60
``VALUEOS_PRUNE_INTERVAL_S``         seconds between prunings of expired rolling-limit
                                     buckets; default 3600
``VALUEOS_BRIDGE_INTERVAL_S``        seconds between bridge-out passes (send mints, settle);
                                     default 5; the job runs only with a bridge minter key
                                     (``VALUEOS_BRIDGE_KEY``, see chain.evm.settings)

The anchoring settings (``ETH_RPC_URL``, ``VALUEOS_ANCHOR_*``) are
:class:`chain.evm.settings.AnchorSettings`, read only when anchoring is on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

_ON = {"1", "true", "yes", "on"}
_OFF = {"0", "false", "no", "off"}


def parse_switch(name: str, value: str) -> bool:
    """``on``/``off`` (also 1/0, true/false, yes/no); anything else is an error."""
    word = value.strip().lower()
    if word in _ON:
        return True
    if word in _OFF:
        return False
    raise ValueError(f"{name} must be 'on' or 'off', not {value!r}")


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    #: seal and anchor epochs on Ethereum (``VALUEOS_ANCHORING``)
    anchoring: bool = True
    housekeeping_interval_s: float = 60.0
    prune_interval_s: float = 3600.0
    bridge_interval_s: float = 5.0

    @classmethod
    def from_env(cls) -> WorkerSettings:
        env = os.environ
        return cls(
            anchoring=parse_switch("VALUEOS_ANCHORING", env.get("VALUEOS_ANCHORING", "on")),
            housekeeping_interval_s=float(env.get("VALUEOS_EXPIRE_HOLDS_INTERVAL_S", "60")),
            prune_interval_s=float(env.get("VALUEOS_PRUNE_INTERVAL_S", "3600")),
            bridge_interval_s=float(env.get("VALUEOS_BRIDGE_INTERVAL_S", "5")),
        )


@lru_cache(maxsize=1)
def worker_settings() -> WorkerSettings:
    return WorkerSettings.from_env()
