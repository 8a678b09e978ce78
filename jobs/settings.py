"""Settings of the worker, read from the environment (cached accessor).

``VALUEOS_ANCHORING``                ``on`` (default) or ``off``: with ``off`` the worker runs
                                     only the housekeeping jobs and touches no chain (no
                                     ``ETH_RPC_URL`` needed, no local anvil started);
                                     ``valueos worker --no-anchoring`` is the same
``VALUEOS_EXPIRE_HOLDS_INTERVAL_S``  seconds between hold expiry, P2P and offline sweep runs;
                                     default 60
``VALUEOS_PRUNE_INTERVAL_S``         seconds between prunings of expired rolling-limit
                                     buckets; default 3600
``VALUEOS_BRIDGE_INTERVAL_S``        seconds between bridge-out passes (send mints, settle);
                                     default 5; the job runs only with a bridge minter key
                                     (``VALUEOS_BRIDGE_KEY``, see chain.evm.settings);
                                     also between bridge-in passes (final ``Redeemed``
                                     events credited back), which run whenever the worker
                                     has a chain (reading needs no key)
``VALUEOS_BRIDGE_IN_PAGE_BLOCKS``    blocks per ``eth_getLogs`` page of the bridge-in job;
                                     default 1000 (keep it within the node's log-range limit)
``VALUEOS_BRIDGE_IN_START_BLOCK``    first block read for a token never read before
                                     (e.g. its deployment block); default 0
``VALUEOS_BRIDGE_SUPPLY_INTERVAL_S`` seconds between supply invariant checks of the bridge
                                     tokens (with a chain); default 60

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
    bridge_in_page_blocks: int = 1000
    bridge_in_start_block: int = 0
    bridge_supply_interval_s: float = 60.0
    #: the self-audit's full pass (``VALUEOS_AUDIT_INTERVAL_S``; 6 h: every epoch daily)
    audit_interval_s: float = 21600.0

    def __post_init__(self) -> None:
        if self.bridge_in_page_blocks < 1 or self.bridge_in_start_block < 0:
            raise ValueError(
                "VALUEOS_BRIDGE_IN_PAGE_BLOCKS must be at least 1 and "
                "VALUEOS_BRIDGE_IN_START_BLOCK not negative"
            )

    @classmethod
    def from_env(cls) -> WorkerSettings:
        env = os.environ
        return cls(
            anchoring=parse_switch("VALUEOS_ANCHORING", env.get("VALUEOS_ANCHORING", "on")),
            housekeeping_interval_s=float(env.get("VALUEOS_EXPIRE_HOLDS_INTERVAL_S", "60")),
            prune_interval_s=float(env.get("VALUEOS_PRUNE_INTERVAL_S", "3600")),
            bridge_interval_s=float(env.get("VALUEOS_BRIDGE_INTERVAL_S", "5")),
            bridge_in_page_blocks=int(env.get("VALUEOS_BRIDGE_IN_PAGE_BLOCKS", "1000")),
            bridge_in_start_block=int(env.get("VALUEOS_BRIDGE_IN_START_BLOCK", "0")),
            bridge_supply_interval_s=float(env.get("VALUEOS_BRIDGE_SUPPLY_INTERVAL_S", "60")),
            audit_interval_s=float(env.get("VALUEOS_AUDIT_INTERVAL_S", "21600")),
        )


@lru_cache(maxsize=1)
def worker_settings() -> WorkerSettings:
    return WorkerSettings.from_env()
