"""The pinned trust of an auditor: which ledger, on which chain, anchored by which contract.

A trust file is what an auditor obtains out of band (published by the operator, checked once
against the chain) and then holds fixed; ``valueos verify`` takes it (``--trust FILE`` or
``VALUEOS_TRUST_FILE``) and judges every bundle against it, never against what the bundle says
about itself::

    {"version": 1, "chain_id": 1, "anchor_contract": "0x…", "ledger_id": "0x…",
     "confirmations": 12}

``confirmations`` is the operator's published finality depth: a bundle claiming FINALIZED must
be at least that deep on the auditor's node. ``valueos trust export`` writes one
(:func:`export_trust`), after checking that the contract on the configured chain anchors
this ledger id.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from web3 import AsyncWeb3, Web3
from web3.exceptions import Web3Exception

from chain.evm.artifacts import load_artifact
from chain.evm.client import ChainError

__all__ = ["TRUST_VERSION", "Trust", "TrustError", "export_trust", "load_trust"]

TRUST_VERSION = 1
#: finality depth assumed when a trust file does not publish one
DEFAULT_CONFIRMATIONS = 12


class TrustError(ValueError):
    """A trust file that cannot be read or is malformed."""


@dataclass(frozen=True, slots=True)
class Trust:
    chain_id: int
    anchor_contract: str
    ledger_id: bytes
    confirmations: int = DEFAULT_CONFIRMATIONS

    def __post_init__(self) -> None:
        if isinstance(self.chain_id, bool) or not isinstance(self.chain_id, int):
            raise TrustError("chain_id must be an integer")
        if self.chain_id <= 0:
            raise TrustError("chain_id must be positive")
        if not Web3.is_address(self.anchor_contract):
            raise TrustError(f"anchor_contract {self.anchor_contract!r} is not an address")
        object.__setattr__(self, "anchor_contract", Web3.to_checksum_address(self.anchor_contract))
        if not isinstance(self.ledger_id, bytes) or len(self.ledger_id) != 32:
            raise TrustError("ledger_id must be 32 bytes")
        if isinstance(self.confirmations, bool) or not isinstance(self.confirmations, int):
            raise TrustError("confirmations must be an integer")
        if self.confirmations < 1:
            raise TrustError("confirmations must be at least 1")

    def to_json(self) -> dict[str, Any]:
        return {
            "version": TRUST_VERSION,
            "chain_id": self.chain_id,
            "anchor_contract": self.anchor_contract,
            "ledger_id": "0x" + self.ledger_id.hex(),
            "confirmations": self.confirmations,
        }

    @classmethod
    def from_json(cls, data: Any) -> Trust:
        if not isinstance(data, dict):
            raise TrustError("a trust file is a JSON object")
        if data.get("version") != TRUST_VERSION:
            raise TrustError(f"unsupported trust file version {data.get('version')!r}")
        ledger = data.get("ledger_id")
        if not isinstance(ledger, str) or not ledger.startswith("0x") or len(ledger) != 66:
            raise TrustError("ledger_id is not a 0x-prefixed 32-byte hex string")
        try:
            ledger_id = bytes.fromhex(ledger[2:])
        except ValueError:
            raise TrustError("ledger_id is not valid hex") from None
        return cls(
            chain_id=data.get("chain_id"),  # type: ignore[arg-type]  # checked in __post_init__
            anchor_contract=str(data.get("anchor_contract")),
            ledger_id=ledger_id,
            confirmations=data.get("confirmations", DEFAULT_CONFIRMATIONS),
        )


def load_trust(path: Path) -> Trust:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise TrustError(f"cannot read trust file {path}: {exc}") from None
    return Trust.from_json(data)


async def export_trust(
    w3: AsyncWeb3[Any], contract: str, ledger_id: bytes, confirmations: int
) -> Trust:
    """The trust of this ledger on the node behind ``w3``: refuses a contract without code or
    one that anchors another ledger id."""
    address = AsyncWeb3.to_checksum_address(contract)
    try:
        if not await w3.eth.get_code(address):
            raise ChainError(f"no contract at {address}")
        anchor = w3.eth.contract(address=address, abi=load_artifact("LedgerAnchor").abi)
        onchain = bytes(await anchor.functions.ledgerId().call())
        chain_id = await w3.eth.chain_id
    except (Web3Exception, OSError) as exc:
        raise ChainError(f"RPC failure: {exc}") from exc
    if onchain != ledger_id:
        raise ChainError(
            f"contract {address} anchors ledger 0x{onchain.hex()}, this ledger is "
            f"0x{ledger_id.hex()}"
        )
    return Trust(chain_id, address, ledger_id, confirmations)
