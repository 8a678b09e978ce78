"""Stellar settings, read from the environment (cached accessor). Secrets come from the
environment or a key file, never from code, and are never logged.

* ``STELLAR_RPC_URL``, ``STELLAR_NETWORK_PASSPHRASE``: the Soroban RPC and its network;
* ``STELLAR_ISSUER_SECRET`` or ``STELLAR_ISSUER_KEY_FILE``: the asset issuer's seed -- the SAC's
  admin, which signs each mint's authorization entry (and deploys the SAC);
* ``STELLAR_CHANNEL_SECRETS`` (comma-separated) or ``STELLAR_CHANNEL_KEY_FILE`` (one per
  line): the channel accounts, the mints' sources (one transaction in flight per channel);
* ``STELLAR_TX_TIMEOUT_S`` (default 30): a mint envelope's validity after it is built.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from stellar_sdk import Keypair

__all__ = ["StellarSettings", "stellar_settings"]


def _secret(name: str, file_name: str) -> str | None:
    value = os.environ.get(name)
    if value:
        return value.strip()
    path = os.environ.get(file_name)
    return Path(path).read_text().strip() if path else None


@dataclass(frozen=True, slots=True)
class StellarSettings:
    rpc_url: str | None
    passphrase: str | None
    timeout_s: int = 30
    _issuer: str | None = field(default=None, repr=False)
    _channels: tuple[str, ...] = field(default=(), repr=False)

    @property
    def configured(self) -> bool:
        return bool(self.rpc_url and self.passphrase)

    def issuer(self) -> Keypair | None:
        return Keypair.from_secret(self._issuer) if self._issuer else None

    def channels(self) -> list[Keypair]:
        return [Keypair.from_secret(s) for s in self._channels]

    @classmethod
    def from_env(cls) -> StellarSettings:
        channels = _secret("STELLAR_CHANNEL_SECRETS", "STELLAR_CHANNEL_KEY_FILE") or ""
        return cls(
            rpc_url=os.environ.get("STELLAR_RPC_URL") or None,
            passphrase=os.environ.get("STELLAR_NETWORK_PASSPHRASE") or None,
            timeout_s=int(os.environ.get("STELLAR_TX_TIMEOUT_S", "30")),
            _issuer=_secret("STELLAR_ISSUER_SECRET", "STELLAR_ISSUER_KEY_FILE"),
            _channels=tuple(s.strip() for s in channels.replace("\n", ",").split(",") if s.strip()),
        )


@lru_cache(maxsize=1)
def stellar_settings() -> StellarSettings:
    return StellarSettings.from_env()
