"""Settings of the HTTP API, read from the environment (cached accessor)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from core.risk.price_signing import parse_signers
from core.settings import DatabaseSettings, database_settings


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name, str(default)))


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def load_jwt_secret(path: Path) -> str:
    """The signing key from ``path``, created (mode 0600) with 64 random bytes if absent."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(64)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret + "\n")
    return secret


def load_offline_seed(path: Path) -> bytes:
    """The offline issuer's Ed25519 seed (32 bytes, hex) from ``path``, created (mode 0600)
    if absent."""
    if path.exists():
        return bytes.fromhex(path.read_text().strip())
    path.parent.mkdir(parents=True, exist_ok=True)
    seed = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(seed.hex() + "\n")
    return seed


def load_price_signers(env: Mapping[str, str]) -> dict[str, bytes]:
    """The ops price signers' public keys: ``VALUEOS_PRICE_SIGNERS`` (``name:base64-key,...``)
    and the file ``VALUEOS_PRICE_SIGNERS_FILE`` names (the same entries, one or more a line,
    ``#`` comments), merged; a name given twice with different keys is an error."""
    text = env.get("VALUEOS_PRICE_SIGNERS", "")
    path = env.get("VALUEOS_PRICE_SIGNERS_FILE")
    if path:
        text += "\n" + Path(path).read_text()
    return parse_signers(text)


@dataclass(frozen=True, slots=True)
class RateLimits:
    """Requests per minute per client, by route group."""

    api: int = 600
    admin: int = 120
    webhooks: int = 240
    auth: int = 30
    #: failed authentications per client address and per key id (``api.throttle``)
    auth_failures: int = 10


@dataclass(frozen=True, slots=True)
class ApiSettings:
    #: HS256 signing key of the bearer tokens (``VALUEOS_JWT_SECRET`` or the key file)
    jwt_secret: str
    #: shared secret of the deposit provider's webhook signatures; None: webhook disabled
    webhook_secret: str | None
    database: DatabaseSettings = field(default_factory=database_settings)
    token_ttl_seconds: int = 3600
    #: ``REDIS_URL``: rate-limit counters shared by every API process; else in memory
    redis_url: str | None = None
    rate_limits: RateLimits = field(default_factory=RateLimits)
    #: ``VALUEOS_HSTS``: send Strict-Transport-Security (only behind TLS)
    hsts: bool = False
    #: ``VALUEOS_TRUSTED_PROXY``: take the client address from X-Forwarded-For
    trusted_proxy: bool = False
    host: str = "127.0.0.1"
    port: int = 8000
    #: ``VALUEOS_METRICS_TOKEN``: /metrics requires ``Authorization: Bearer <token>``;
    #: unset, /metrics is public
    metrics_token: str | None = None
    #: ``VALUEOS_WORKERS``: uvicorn worker processes of ``valueos serve``
    workers: int = 1
    #: ``ETH_RPC_URL``: the chain head, for a bridge-out's confirmations; unset: not shown
    eth_rpc_url: str | None = None
    #: seed of the key that signs offline allowance certificates (``VALUEOS_OFFLINE_KEY``, hex,
    #: or ``VALUEOS_OFFLINE_KEY_FILE``); None: a fresh key per process (tests)
    offline_issuer_seed: bytes | None = field(default=None, repr=False)
    #: ``STELLAR_RPC_URL`` and ``STELLAR_NETWORK_PASSPHRASE``: the Soroban RPC a Stellar
    #: bridge-out's destination is checked against; unset: Stellar bridge-outs are refused
    stellar_rpc_url: str | None = None
    stellar_passphrase: str | None = None
    #: ``VALUEOS_PRICE_SIGNERS`` / ``VALUEOS_PRICE_SIGNERS_FILE``: name -> Ed25519 public key
    #: of each ops price signer; empty: ``POST /risk/prices`` refuses every round (503)
    price_signers: Mapping[str, bytes] = field(default_factory=dict)

    @classmethod
    def from_env(cls) -> ApiSettings:
        secret = os.environ.get("VALUEOS_JWT_SECRET") or load_jwt_secret(
            Path(os.environ.get("VALUEOS_JWT_KEY_FILE", ".valueos/jwt.key"))
        )
        return cls(
            jwt_secret=secret,
            webhook_secret=os.environ.get("VALUEOS_WEBHOOK_SECRET") or None,
            database=database_settings(),
            token_ttl_seconds=_int("VALUEOS_TOKEN_TTL", 3600),
            redis_url=os.environ.get("REDIS_URL") or None,
            eth_rpc_url=os.environ.get("ETH_RPC_URL") or None,
            stellar_rpc_url=os.environ.get("STELLAR_RPC_URL") or None,
            stellar_passphrase=os.environ.get("STELLAR_NETWORK_PASSPHRASE") or None,
            price_signers=load_price_signers(os.environ),
            rate_limits=RateLimits(
                api=_int("VALUEOS_RATE_API", 600),
                admin=_int("VALUEOS_RATE_ADMIN", 120),
                webhooks=_int("VALUEOS_RATE_WEBHOOKS", 240),
                auth=_int("VALUEOS_RATE_AUTH", 30),
                auth_failures=_int("VALUEOS_RATE_AUTH_FAILURES", 10),
            ),
            hsts=_flag("VALUEOS_HSTS"),
            trusted_proxy=_flag("VALUEOS_TRUSTED_PROXY"),
            host=os.environ.get("VALUEOS_HOST", "127.0.0.1"),
            port=_int("VALUEOS_PORT", 8000),
            metrics_token=os.environ.get("VALUEOS_METRICS_TOKEN") or None,
            workers=_int("VALUEOS_WORKERS", 1),
            offline_issuer_seed=bytes.fromhex(os.environ["VALUEOS_OFFLINE_KEY"])
            if os.environ.get("VALUEOS_OFFLINE_KEY")
            else load_offline_seed(
                Path(os.environ.get("VALUEOS_OFFLINE_KEY_FILE", ".valueos/offline.key"))
            ),
        )


@lru_cache(maxsize=1)
def api_settings() -> ApiSettings:
    return ApiSettings.from_env()
