"""The server's issuer key: it signs allowance certificates, which payees check offline.

An Ed25519 key from a 32-byte seed (``VALUEOS_OFFLINE_KEY``, hex, or the key file the API
settings name; see ``api.settings``). Pure: no I/O here."""

from __future__ import annotations

import base64
import struct
from dataclasses import replace

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from core.offline.vouchers import Certificate

CERTIFICATE_PREFIX = "VC1."


class Issuer:
    def __init__(self, seed: bytes) -> None:
        if len(seed) != 32:
            raise ValueError("the issuer seed has 32 bytes")
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        self.public_key = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def sign(self, certificate: Certificate) -> Certificate:
        return replace(certificate, signature=self._key.sign(certificate.message()))

    def encode(self, certificate: Certificate) -> str:
        """The signed certificate's text form: ``VC1.`` + base64url(length, body, signature)."""
        signed = self.sign(certificate)
        body = signed.body()
        raw = struct.pack(">H", len(body)) + body + signed.signature
        return CERTIFICATE_PREFIX + base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
