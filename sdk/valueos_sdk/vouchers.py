"""Offline vouchers on the client: the compact formats (an implementation of their own, checked
against the server's byte for byte by a test), the paying :class:`Wallet` and the payee's
:class:`Terminal`.

Formats (big-endian; amounts in minor units; every signed message starts with a domain tag):

* voucher body: allowance id u64, payee uuid (16 bytes), amount u64, counter u32,
  cumulative u64; signed by the device key. Text: ``VV1.`` + base64url(body + signature).
* certificate (the server's ``VC1.``…): u16 length, body (allowance id u64, user uuid,
  device key (32 bytes), asset length u8 + ASCII, scale u8, amount u64, expiry i64 unix
  seconds), the issuer's signature.
* payment (wallet → terminal, over a QR code or an NFC record): ``VP1.`` +
  base64url(certificate bytes + voucher bytes), about 350 characters.
"""

from __future__ import annotations

import base64
import struct
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from valueos_sdk.client import AsyncClient
from valueos_sdk.errors import VoucherRejected
from valueos_sdk.models import AllowanceRead, VoucherOutcomeRead
from valueos_sdk.queue import OfflineQueue
from valueos_sdk.store import DONE, FAILED, Store

VOUCHER_TAG = b"valueos/voucher/v1\x00"
CERTIFICATE_TAG = b"valueos/allowance/v1\x00"
DEVICE_TAG = b"valueos/device/v1\x00"
RELEASE_TAG = b"valueos/release/v1\x00"
_VOUCHER = struct.Struct(">Q16sQIQ")
_SIG = 64
REDEEM_PATH = "/api/v1/offline/redemptions"


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def to_units(amount: str, scale: int) -> int:
    """A decimal string at ``scale`` as an integer of minor units (exact, or ValueError)."""
    whole, _, frac = amount.partition(".")
    if not whole.isdigit() or (frac and not frac.isdigit()) or len(frac) > scale:
        raise ValueError(f"{amount!r} is not an amount at scale {scale}")
    return int(whole + (frac or "").ljust(scale, "0"))


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

    def raw(self) -> bytes:
        return self.body() + self.signature

    def encode(self) -> str:
        return "VV1." + b64(self.raw())

    @classmethod
    def from_raw(cls, raw: bytes) -> Voucher:
        if len(raw) != _VOUCHER.size + _SIG:
            raise VoucherRejected("VOUCHER_MALFORMED", "a voucher has the wrong length")
        allowance, payee, amount, counter, cumulative = _VOUCHER.unpack(raw[: _VOUCHER.size])
        return cls(allowance, uuid.UUID(bytes=payee), amount, counter, cumulative,
                   raw[_VOUCHER.size :])  # fmt: skip


@dataclass(frozen=True, slots=True)
class Certificate:
    allowance_id: int
    user_id: uuid.UUID
    device_key: bytes
    asset: str
    scale: int
    amount: int
    expires_at: int
    signature: bytes
    raw: bytes

    @classmethod
    def decode(cls, data: bytes) -> Certificate:
        """From the certificate bytes (u16 length, body, signature)."""
        try:
            (length,) = struct.unpack(">H", data[:2])
            body, signature = data[2 : 2 + length], data[2 + length : 2 + length + _SIG]
            allowance, user, device_key, asset_len = struct.unpack(">Q16s32sB", body[:57])
            asset = body[57 : 57 + asset_len].decode("ascii")
            scale, amount, expires = struct.unpack(">BQq", body[57 + asset_len :])
        except (struct.error, UnicodeDecodeError) as exc:
            raise VoucherRejected("CERTIFICATE_MALFORMED", str(exc)) from exc
        if len(signature) != _SIG:
            raise VoucherRejected("CERTIFICATE_MALFORMED", "a certificate is cut short")
        return cls(allowance, uuid.UUID(bytes=user), device_key, asset, scale, amount, expires,
                   signature, data[: 2 + length + _SIG])  # fmt: skip

    @classmethod
    def from_text(cls, text: str) -> Certificate:
        if not text.startswith("VC1."):
            raise VoucherRejected("CERTIFICATE_MALFORMED", "a certificate starts with VC1.")
        return cls.decode(unb64(text[4:]))

    def message(self) -> bytes:
        (length,) = struct.unpack(">H", self.raw[:2])
        return CERTIFICATE_TAG + self.raw[2 : 2 + length]


def _verify(public_key: bytes, signature: bytes, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def encode_payment(certificate: Certificate, voucher: Voucher) -> str:
    return "VP1." + b64(certificate.raw + voucher.raw())


def decode_payment(text: str) -> tuple[Certificate, Voucher]:
    if not text.startswith("VP1."):
        raise VoucherRejected("PAYMENT_MALFORMED", "a payment starts with VP1.")
    try:
        raw = unb64(text[4:])
    except ValueError as exc:
        raise VoucherRejected("PAYMENT_MALFORMED", "not base64url") from exc
    certificate = Certificate.decode(raw)
    return certificate, Voucher.from_raw(raw[len(certificate.raw) :])


class DeviceKey:
    def __init__(self, seed: bytes) -> None:
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        self.public = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def registration_proof(self, user_id: uuid.UUID) -> bytes:
        return self.sign(DEVICE_TAG + user_id.bytes + self.public)

    def release_signature(self, allowance_id: int, final_cumulative: int) -> bytes:
        return self.sign(RELEASE_TAG + struct.pack(">QQ", allowance_id, final_cumulative))


class Wallet:
    """The paying device: its key, its allowance, and a counter that never repeats.

    State (key seed, device id, allowance, counter, cumulative total) lives in ``store`` and
    each payment is persisted before its voucher is returned: a crash may skip a counter
    (harmless), never reuse one. The key seed sits in the store: keep the store where the
    platform keeps secrets (a keystore or secure element in production)."""

    def __init__(
        self, client: AsyncClient, store: Store, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.client = client
        self.store = store
        self.clock = clock
        seed = store.get("wallet.seed")
        if seed is None:
            seed = Ed25519PrivateKey.generate().private_bytes_raw().hex()
            store.put("wallet.seed", seed)
        self.key = DeviceKey(bytes.fromhex(seed))

    async def register(self, name: str = "wallet") -> int:
        device_id = self.store.get("wallet.device_id")
        if device_id is None:
            me = await self.client.me()
            device = await self.client.register_device(
                b64(self.key.public), b64(self.key.registration_proof(me.user_id)), name
            )
            device_id = device.id
            self.store.put("wallet.device_id", device_id)
        return int(device_id)

    async def reserve(
        self, from_account_id: int, amount: str, *, expires_in: int = 7 * 86400
    ) -> AllowanceRead:
        """While online: reserve an allowance for this device (registering it first)."""
        device_id = await self.register()
        allowance = await self.client.open_allowance(
            from_account_id, device_id, amount, expires_in=expires_in
        )
        self.store.put("wallet.allowance", {"certificate": allowance.certificate, "counter": 0,
                                            "cumulative": 0})  # fmt: skip
        return allowance

    @property
    def certificate(self) -> Certificate:
        state = self.store.get("wallet.allowance")
        if state is None:
            raise VoucherRejected("NO_ALLOWANCE", "reserve an allowance first (online)")
        return Certificate.from_text(state["certificate"])

    @property
    def spent(self) -> int:
        """Minor units issued in vouchers so far."""
        state = self.store.get("wallet.allowance")
        return 0 if state is None else int(state["cumulative"])

    def pay(self, payee_id: uuid.UUID, amount: str) -> str:
        """Offline: a payment (``VP1.``…) of ``amount`` to ``payee_id``, within the allowance."""
        state = self.store.get("wallet.allowance")
        cert = self.certificate
        units = to_units(amount, cert.scale)
        if units <= 0:
            raise VoucherRejected("INVALID_AMOUNT", "a payment is positive")
        if self.clock() >= cert.expires_at:
            raise VoucherRejected("ALLOWANCE_EXPIRED", "the allowance has expired")
        cumulative = int(state["cumulative"]) + units
        if cumulative > cert.amount:
            raise VoucherRejected(
                "ALLOWANCE_EXCEEDED", f"{cert.amount - int(state['cumulative'])} units left"
            )
        counter = int(state["counter"]) + 1
        self.store.put("wallet.allowance", state | {"counter": counter, "cumulative": cumulative})
        voucher = Voucher(cert.allowance_id, payee_id, units, counter, cumulative)
        signed = Voucher(cert.allowance_id, payee_id, units, counter, cumulative,
                         self.key.sign(voucher.message()))  # fmt: skip
        return encode_payment(cert, signed)

    async def release(self) -> AllowanceRead:
        """Online: return the unspent rest (refused until the vouchers issued are redeemed)."""
        cert = self.certificate
        signature = self.key.release_signature(cert.allowance_id, self.spent)
        return await self.client.release_allowance(cert.allowance_id, self.spent, b64(signature))


@dataclass(frozen=True, slots=True)
class Accepted:
    """A voucher the terminal accepted offline, and what the server said once synced."""

    allowance_id: int
    counter: int
    amount: int
    cumulative: int
    voucher: str
    asset: str
    scale: int
    batch: int | None = None
    status: str = "ACCEPTED"
    code: str | None = None


class Terminal:
    """The payee (a POS terminal): checks payments offline against the issuer key it pinned
    while online, keeps them, and redeems them in batches through the offline queue.

    Offline checks: the certificate's issuer signature, the voucher's device signature, the
    payee, amounts, the allowance's expiry on the terminal's clock with ``redeem_window_s``
    to spare, and every voucher of the same allowance seen here (a reused counter, or
    cumulative totals that contradict each other, are refused)."""

    def __init__(
        self,
        client: AsyncClient,
        store: Store,
        *,
        payee_id: uuid.UUID,
        issuer_key: bytes,
        clock: Callable[[], float] = time.time,
        redeem_window_s: float = 3600.0,
    ) -> None:
        self.client = client
        self.store = store
        self.queue = OfflineQueue(client, store)
        self.payee_id = payee_id
        self.issuer_key = issuer_key
        self.clock = clock
        self.redeem_window_s = redeem_window_s

    def accepted(self) -> list[Accepted]:
        return [Accepted(**a) for a in self.store.get("terminal.accepted") or []]

    def _save(self, accepted: list[Accepted]) -> None:
        self.store.put("terminal.accepted", [asdict(a) for a in accepted])

    def accept(self, payment: str) -> Accepted:
        """Check a payment offline; keep it for redemption. Raises :class:`VoucherRejected`."""
        cert, voucher = decode_payment(payment)
        if not _verify(self.issuer_key, cert.signature, cert.message()):
            raise VoucherRejected("CERTIFICATE_INVALID", "not signed by the pinned issuer")
        if voucher.allowance_id != cert.allowance_id:
            raise VoucherRejected("VOUCHER_MISMATCH", "the voucher is for another allowance")
        if not _verify(cert.device_key, voucher.signature, voucher.message()):
            raise VoucherRejected("VOUCHER_SIGNATURE_INVALID", "not signed by the device")
        if voucher.payee_id != self.payee_id:
            raise VoucherRejected("VOUCHER_WRONG_PAYEE", "this voucher pays somebody else")
        if not 0 < voucher.amount <= voucher.cumulative or voucher.counter < 1:
            raise VoucherRejected("VOUCHER_MALFORMED", "amount, counter or total out of range")
        if voucher.cumulative > cert.amount:
            raise VoucherRejected("ALLOWANCE_EXCEEDED", "beyond the allowance")
        if self.clock() + self.redeem_window_s >= cert.expires_at:
            raise VoucherRejected(
                "ALLOWANCE_EXPIRING", "the allowance expires before it could be redeemed"
            )
        accepted = self.accepted()
        same = [a for a in accepted if a.allowance_id == voucher.allowance_id]
        for seen in same:
            if seen.counter == voucher.counter:
                if seen.voucher == voucher.encode():
                    return seen
                raise VoucherRejected("VOUCHER_COUNTER_REUSED", f"counter {seen.counter} seen")
            earlier, later = (seen, voucher) if seen.counter < voucher.counter else (voucher, seen)
            if earlier.cumulative > later.cumulative - later.amount:
                raise VoucherRejected(
                    "VOUCHER_INCONSISTENT", "cumulative totals contradict a voucher seen here"
                )
        if sum(a.amount for a in same) + voucher.amount > cert.amount:
            raise VoucherRejected("ALLOWANCE_EXCEEDED", "beyond the allowance")
        entry = Accepted(voucher.allowance_id, voucher.counter, voucher.amount,
                         voucher.cumulative, voucher.encode(), cert.asset, cert.scale)  # fmt: skip
        self._save([*accepted, entry])
        return entry

    async def sync(self) -> list[Accepted]:
        """Online: redeem every accepted voucher not yet answered (one queued batch), send the
        queue, and record per voucher what the server honoured."""
        accepted = self.accepted()
        waiting = [a for a in accepted if a.batch is None]
        if waiting:
            record = self.queue.enqueue(
                "POST", REDEEM_PATH, {"vouchers": [a.voucher for a in waiting]}
            )
            accepted = [a if a.batch is not None else _with(a, batch=record.id) for a in accepted]
            self._save(accepted)
        await self.queue.sync()
        records = self.store.records()
        answers = {r.id: r.response for r in records if r.state == DONE}
        # a whole batch refused: for its credentials (401/403), send the vouchers again in a
        # new batch later (each voucher is idempotent on the server); otherwise its code
        refused = {r.id: r for r in records if r.state == FAILED}
        updated = []
        for entry in accepted:
            response = answers.get(entry.batch or -1)
            batch = refused.get(entry.batch or -1)
            if entry.status == "ACCEPTED" and batch is not None:
                if batch.status in {401, 403}:
                    updated.append(_with(entry, batch=None))
                else:
                    code = (batch.response or {}).get("code")
                    updated.append(_with(entry, status="REFUSED", code=code))
                continue
            if response is None or entry.status != "ACCEPTED":
                updated.append(entry)
                continue
            vouchers = _batch_vouchers(self.store, entry.batch)
            outcome = VoucherOutcomeRead(**response["results"][vouchers.index(entry.voucher)])
            if outcome.status == "CLAIMED":  # not finished on the server: send it again
                updated.append(_with(entry, batch=None))
            else:
                updated.append(_with(entry, status=outcome.status, code=outcome.code))
        self._save(updated)
        return updated


def _with(a: Accepted, **changes: Any) -> Accepted:
    return Accepted(**(asdict(a) | changes))


def _batch_vouchers(store: Store, batch: int | None) -> list[str]:
    record = next(r for r in store.records() if r.id == batch)
    return list(record.body["vouchers"])
