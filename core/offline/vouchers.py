"""Offline vouchers and allowance certificates: their exact bytes, and Ed25519 checks.

Pure (no I/O). The client SDK (``valueos_sdk.vouchers``) has its own implementation of the
same format; a test checks that the two agree byte for byte.

* **Allowance certificate** (signed by the server's issuer key): the allowance id, the user,
  the device's public key, the asset and its scale, the amount and the expiry. A payee
  that pinned the issuer key checks it offline.
* **Voucher** (signed by the device key): allowance id, payee, amount, counter (1, 2, ...
  per allowance), cumulative total (the amounts of vouchers 1..counter).

Every signed message starts with a domain tag, so no signature is valid for two purposes.
Integers are big-endian; amounts are minor units (int64 range, positive).
"""

from __future__ import annotations

import base64
import struct
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from core.errors import InvalidDeviceKey, VoucherMalformed
from core.money import INT64_MAX

VOUCHER_TAG = b"valueos/voucher/v1\x00"
CERTIFICATE_TAG = b"valueos/allowance/v1\x00"
DEVICE_TAG = b"valueos/device/v1\x00"
RELEASE_TAG = b"valueos/release/v1\x00"
VOUCHER_PREFIX = "VV1."
PAYMENT_PREFIX = "VP1."
_VOUCHER = struct.Struct(">Q16sQIQ")  # allowance, payee, amount, counter, cumulative
_CERT_HEAD = struct.Struct(">Q16s32sB")  # allowance, user, device key, asset length
_CERT_TAIL = struct.Struct(">BQq")  # scale, amount, expires (unix seconds)
SIGNATURE_BYTES = 64
MAX_COUNTER = 2**32 - 1


@dataclass(frozen=True, slots=True)
class Voucher:
    allowance_id: int
    payee_id: uuid.UUID
    amount: int
    counter: int
    cumulative: int
    signature: bytes = b""

    def body(self) -> bytes:
        return _VOUCHER.pack(
            self.allowance_id, self.payee_id.bytes, self.amount, self.counter, self.cumulative
        )

    def message(self) -> bytes:
        return VOUCHER_TAG + self.body()

    def encode(self) -> str:
        return VOUCHER_PREFIX + _b64(self.body() + self.signature)

    def check_shape(self) -> None:
        """Amount, counter and cumulative within range and coherent (no key needed)."""
        if not 0 < self.amount <= INT64_MAX:
            raise VoucherMalformed("a voucher amount must be positive", field="amount")
        if not 1 <= self.counter <= MAX_COUNTER:
            raise VoucherMalformed("a voucher counter starts at 1", field="counter")
        if not self.amount <= self.cumulative <= INT64_MAX:
            raise VoucherMalformed("the cumulative total includes the amount", field="cumulative")


@dataclass(frozen=True, slots=True)
class Certificate:
    allowance_id: int
    user_id: uuid.UUID
    device_key: bytes
    asset: str
    scale: int
    amount: int
    expires_at: datetime
    signature: bytes = b""

    def body(self) -> bytes:
        asset = self.asset.encode("ascii")
        return (
            _CERT_HEAD.pack(self.allowance_id, self.user_id.bytes, self.device_key, len(asset))
            + asset
            + _CERT_TAIL.pack(self.scale, self.amount, int(self.expires_at.timestamp()))
        )

    def message(self) -> bytes:
        return CERTIFICATE_TAG + self.body()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str, what: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError as exc:
        raise VoucherMalformed(f"{what} is not base64url", field=what) from exc


def decode_voucher(text: str) -> Voucher:
    """A voucher from its text form (``VV1.`` + base64url), or VOUCHER_MALFORMED."""
    if not text.startswith(VOUCHER_PREFIX):
        raise VoucherMalformed("a voucher starts with " + VOUCHER_PREFIX, field="voucher")
    raw = _unb64(text[len(VOUCHER_PREFIX) :], "voucher")
    if len(raw) != _VOUCHER.size + SIGNATURE_BYTES:
        raise VoucherMalformed("a voucher has the wrong length", field="voucher")
    allowance, payee, amount, counter, cumulative = _VOUCHER.unpack(raw[: _VOUCHER.size])
    voucher = Voucher(
        allowance, uuid.UUID(bytes=payee), amount, counter, cumulative, raw[_VOUCHER.size :]
    )
    voucher.check_shape()
    return voucher


def certificate_expiry(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def verify(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """True when ``signature`` is ``public_key``'s Ed25519 signature of ``message``."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def device_message(user_id: uuid.UUID, public_key: bytes) -> bytes:
    """What a device signs to prove it holds the key it registers for ``user_id``."""
    return DEVICE_TAG + user_id.bytes + public_key


def release_message(allowance_id: int, final_cumulative: int) -> bytes:
    """What a device signs to release its allowance: the last cumulative total it issued."""
    return RELEASE_TAG + struct.pack(">QQ", allowance_id, final_cumulative)


def check_device_key(user_id: uuid.UUID, public_key: bytes, proof: bytes) -> None:
    """A 32-byte Ed25519 key whose holder signed :func:`device_message`."""
    if len(public_key) != 32:
        raise InvalidDeviceKey("an Ed25519 public key has 32 bytes", field="public_key")
    if not verify(public_key, proof, device_message(user_id, public_key)):
        raise InvalidDeviceKey(
            "the proof is not the key's signature of the registration", field="proof"
        )
