"""Ethereum anchoring settings and the signer, read from the environment.

``ETH_RPC_URL``                   JSON-RPC endpoint; unset: the worker starts a local anvil
``VALUEOS_ANCHOR_CONTRACT``       LedgerAnchor address (unset with a local anvil: deployed)
``VALUEOS_ANCHOR_CONTRACT_FILE``  a file holding that address (written by
                                  ``valueos deploy-anchor --out``), read when the above is unset
``VALUEOS_ANCHOR_CONFIRMATIONS``  blocks on top of (and including) the anchor's block before
                                  FINALIZED; default 12
``VALUEOS_ANCHOR_FINALITY``       ``depth`` (default: FINALIZED at the confirmation depth) or
                                  ``finalized`` (when the node's ``finalized`` block reaches
                                  the anchor's block; the depth if the node has no such tag)
``VALUEOS_ANCHOR_BUMP_AFTER_S``   re-sign an anchor transaction still pending after this many
                                  seconds with the same nonce and fees +12.5%; default 180,
                                  0 or ``off``: never
``VALUEOS_ANCHOR_MAX_FEE_GWEI``   never sign a replacement above this maxFeePerGas; default none
``VALUEOS_ANCHOR_INTERVAL_S``     seconds between seal+anchor runs of the worker; default 3600
``VALUEOS_ANCHOR_KEY``            the signer's private key (0x hex), or
``VALUEOS_ANCHOR_KEYSTORE``       an encrypted keystore JSON file, with its password in
``VALUEOS_ANCHOR_KEYSTORE_PASSWORD`` or the file ``VALUEOS_ANCHOR_KEYSTORE_PASSWORD_FILE``

``VALUEOS_BRIDGE_KEY``            the ERC-20 bridge's minter key (0x hex), or
``VALUEOS_BRIDGE_KEY_FILE``       a file holding it; unset: the worker runs no bridge-out job

The key is never logged: :class:`Signer` does not show it in ``repr`` and nothing here
formats it into a message.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount

__all__ = ["AnchorSettings", "SignerError", "anchor_settings", "load_signer"]


class SignerError(RuntimeError):
    """No usable signing key was configured (the message never contains key material)."""


@dataclass(frozen=True, slots=True)
class AnchorSettings:
    rpc_url: str | None
    contract_address: str | None
    confirmations: int
    interval_s: float
    #: how long ``valueos anchor --now`` waits for finality
    wait_timeout_s: float
    finality: str = "depth"
    bump_after_s: float | None = 180.0
    max_fee_cap_wei: int | None = None
    key: str | None = field(default=None, repr=False)
    keystore: Path | None = None
    keystore_password: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls) -> AnchorSettings:
        env = os.environ
        password = env.get("VALUEOS_ANCHOR_KEYSTORE_PASSWORD")
        password_file = env.get("VALUEOS_ANCHOR_KEYSTORE_PASSWORD_FILE")
        if password is None and password_file:
            password = Path(password_file).read_text().strip()
        keystore = env.get("VALUEOS_ANCHOR_KEYSTORE")
        confirmations = int(env.get("VALUEOS_ANCHOR_CONFIRMATIONS", "12"))
        if confirmations < 1:
            raise ValueError("VALUEOS_ANCHOR_CONFIRMATIONS must be at least 1")
        finality = env.get("VALUEOS_ANCHOR_FINALITY", "depth").strip().lower()
        if finality not in ("depth", "finalized"):
            raise ValueError("VALUEOS_ANCHOR_FINALITY must be 'depth' or 'finalized'")
        bump = env.get("VALUEOS_ANCHOR_BUMP_AFTER_S", "180").strip().lower()
        bump_after_s = None if bump in ("", "0", "off", "never") else float(bump)
        cap_gwei = env.get("VALUEOS_ANCHOR_MAX_FEE_GWEI")
        contract = env.get("VALUEOS_ANCHOR_CONTRACT") or None
        contract_file = env.get("VALUEOS_ANCHOR_CONTRACT_FILE")
        if contract is None and contract_file and Path(contract_file).exists():
            contract = Path(contract_file).read_text().strip() or None
        return cls(
            finality=finality,
            bump_after_s=bump_after_s,
            max_fee_cap_wei=int(float(cap_gwei) * 10**9) if cap_gwei else None,
            rpc_url=env.get("ETH_RPC_URL") or None,
            contract_address=contract,
            confirmations=confirmations,
            interval_s=float(env.get("VALUEOS_ANCHOR_INTERVAL_S", "3600")),
            wait_timeout_s=float(env.get("VALUEOS_ANCHOR_WAIT_S", "600")),
            key=env.get("VALUEOS_ANCHOR_KEY") or None,
            keystore=Path(keystore) if keystore else None,
            keystore_password=password,
        )


@lru_cache(maxsize=1)
def anchor_settings() -> AnchorSettings:
    return AnchorSettings.from_env()


def load_signer(settings: AnchorSettings) -> LocalAccount:
    """The anchoring account, from the raw key or the keystore file."""
    if settings.key:
        try:
            account: LocalAccount = Account.from_key(settings.key)
        except (ValueError, TypeError):
            raise SignerError("VALUEOS_ANCHOR_KEY is not a valid private key") from None
        return account
    if settings.keystore is not None:
        if settings.keystore_password is None:
            raise SignerError("VALUEOS_ANCHOR_KEYSTORE needs VALUEOS_ANCHOR_KEYSTORE_PASSWORD")
        try:
            keyfile = json.loads(settings.keystore.read_text())
            key = Account.decrypt(keyfile, settings.keystore_password)
        except (OSError, ValueError) as exc:
            raise SignerError(
                f"cannot open keystore {settings.keystore}: {type(exc).__name__}"
            ) from None
        keystore_account: LocalAccount = Account.from_key(key)
        return keystore_account
    raise SignerError("no anchor signer: set VALUEOS_ANCHOR_KEY or VALUEOS_ANCHOR_KEYSTORE")


def bridge_signer(env: dict[str, str] | None = None) -> LocalAccount | None:
    """The bridge minter from ``VALUEOS_BRIDGE_KEY`` or ``VALUEOS_BRIDGE_KEY_FILE``; None when
    neither is set (no bridge-out job)."""
    env = dict(os.environ) if env is None else env
    key = env.get("VALUEOS_BRIDGE_KEY") or None
    path = env.get("VALUEOS_BRIDGE_KEY_FILE") or None
    if key is None and path is not None:
        try:
            key = Path(path).read_text().strip()
        except OSError as exc:
            raise SignerError(
                f"cannot read VALUEOS_BRIDGE_KEY_FILE: {type(exc).__name__}"
            ) from None
    if key is None:
        return None
    try:
        account: LocalAccount = Account.from_key(key)
    except (ValueError, TypeError):
        raise SignerError("the bridge key is not a valid private key") from None
    return account
