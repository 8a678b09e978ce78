"""Signed ops price rounds: each ops signer holds an Ed25519 key; the server knows the
signers' public keys by name and records a pushed round only if its signature verifies.

The signed message (:func:`round_message`) is ASCII, one ``name=value`` line per field in
this order, each line ending in ``\\n``::

    valueos/price-round/v1
    ledger_id=0x<64 lowercase hex digits: the ledger's bytes32 id, VALUEOS_LEDGER_ID>
    signer=<signer name>
    asset=<asset code>
    round_id=<decimal integer>
    answer=<decimal integer, '-' if negative>
    decimals=<decimal integer>
    updated_at=<microseconds since 1970-01-01T00:00:00Z, decimal integer>

Integers have no leading zeros or '+'. No value can hold a newline or '=' (an asset code is
``[A-Z][A-Z0-9_]{0,31}``, a signer name ``[a-z0-9][a-z0-9._-]{0,63}``), so the encoding is
injective. The first line separates these signatures from any other use of the key; the
ledger id keeps a round signed for one ledger from being accepted by another. The signature
is the 64-byte Ed25519 signature of those bytes, sent in standard base64.

Pure: no I/O here (the keys come from ``api.settings``).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from core.errors import (
    PriceSignatureInvalid,
    PriceSignersNotConfigured,
    UnknownPriceSigner,
)

DOMAIN = "valueos/price-round/v1"
SIGNER_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
ASSET_CODE = re.compile(r"^[A-Z][A-Z0-9_]{0,31}$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class SignedRound:
    """The fields of a pushed round the signature covers."""

    asset: str
    round_id: int
    answer: int
    decimals: int
    updated_at: datetime


def _micros(at: datetime) -> int:
    if at.tzinfo is None:
        raise ValueError("updated_at must carry a time zone")
    return (at - _EPOCH) // timedelta(microseconds=1)


def round_message(ledger_id: bytes, signer: str, r: SignedRound) -> bytes:
    """The exact bytes a signer signs (see the module's description)."""
    if len(ledger_id) != 32:
        raise ValueError("the ledger id has 32 bytes")
    if not SIGNER_NAME.match(signer) or not ASSET_CODE.match(r.asset):
        raise ValueError("signer name or asset code out of their alphabets")
    lines = (
        DOMAIN,
        f"ledger_id=0x{ledger_id.hex()}",
        f"signer={signer}",
        f"asset={r.asset}",
        f"round_id={r.round_id}",
        f"answer={r.answer}",
        f"decimals={r.decimals}",
        f"updated_at={_micros(r.updated_at)}",
    )
    return "".join(line + "\n" for line in lines).encode("ascii")


def public_key_of(seed: bytes) -> bytes:
    """The raw 32-byte public key of a 32-byte Ed25519 seed."""
    key = Ed25519PrivateKey.from_private_bytes(seed).public_key()
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def sign_round(seed: bytes, ledger_id: bytes, signer: str, r: SignedRound) -> str:
    """The base64 signature of ``r`` by ``signer`` with the 32-byte Ed25519 ``seed``."""
    raw = Ed25519PrivateKey.from_private_bytes(seed).sign(round_message(ledger_id, signer, r))
    return base64.b64encode(raw).decode("ascii")


def parse_signers(text: str) -> dict[str, bytes]:
    """``name:base64-public-key`` entries separated by commas or newlines (``#`` starts a
    comment) -> {name: raw 32-byte key}; raises ValueError on a malformed entry, a key that
    is not 32 bytes, or a name given twice with different keys."""
    found: dict[str, bytes] = {}
    for raw_line in text.splitlines():
        for raw_entry in raw_line.split("#", 1)[0].split(","):
            entry = raw_entry.strip()
            if not entry:
                continue
            name, sep, encoded = entry.partition(":")
            name = name.strip()
            if not sep or not SIGNER_NAME.match(name):
                raise ValueError(f"price signer entry {entry!r} must read name:base64-key")
            try:
                key = base64.b64decode(encoded.strip(), validate=True)
            except binascii.Error as exc:
                raise ValueError(f"price signer {name}: the key is not base64") from exc
            if len(key) != 32:
                raise ValueError(f"price signer {name}: an Ed25519 public key has 32 bytes")
            if found.get(name, key) != key:
                raise ValueError(f"price signer {name} is given two different keys")
            found[name] = key
    return found


@dataclass(frozen=True, slots=True)
class PriceSigners:
    """The signers the server trusts (name -> raw public key) and the ledger they sign for."""

    keys: Mapping[str, bytes] = field(default_factory=dict)
    ledger_id: bytes = bytes(32)

    def verify(self, signer: str | None, signature: str | None, r: SignedRound) -> str:
        """The signer's name when ``signature`` is theirs over ``r``; raises otherwise:
        503 PRICE_SIGNERS_NOT_CONFIGURED (no signer configured: every push is refused),
        401 PRICE_SIGNATURE_INVALID (no signer or signature given, or it does not verify),
        403 UNKNOWN_PRICE_SIGNER (a name the server does not know)."""
        if not self.keys:
            raise PriceSignersNotConfigured(
                "no price signers are configured (VALUEOS_PRICE_SIGNERS): pushes are refused"
            )
        if not signer or not signature:
            raise PriceSignatureInvalid("a pushed round needs a signer and its signature")
        key = self.keys.get(signer)
        if key is None:
            raise UnknownPriceSigner(f"{signer!r} is not a configured price signer")
        try:
            raw = base64.b64decode(signature, validate=True)
            Ed25519PublicKey.from_public_bytes(key).verify(
                raw, round_message(self.ledger_id, signer, r)
            )
        except (binascii.Error, ValueError, InvalidSignature) as exc:
            raise PriceSignatureInvalid(
                f"the signature does not verify with {signer}'s key over this round"
            ) from exc
        return signer
