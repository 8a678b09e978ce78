"""``valueos serve | create-user | create-api-key``: the API's commands.

``serve`` applies the migrations, makes sure an admin exists (the first start creates
one and prints its API key ONCE), then runs uvicorn (default 127.0.0.1:8000; ``--host``,
``--port`` or ``VALUEOS_HOST``/``VALUEOS_PORT``; ``--workers``/``VALUEOS_WORKERS``
processes, default 1).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import uuid
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any

from api.auth import SCOPES, Principal, issue_token, jwt_auth
from api.settings import ApiSettings, api_settings
from core.credentials import Credentials, User
from core.db import create_engine, migrate, resolve_url
from core.types import Actor, Role

OPERATOR = Actor("valueos-cli", Role.SYSTEM)


def _roles() -> list[str]:
    return [r.value for r in Role if r is not Role.SYSTEM]


async def _with_credentials(url: str) -> Credentials:
    return Credentials(create_engine(url, 2))


async def _first_admin(url: str) -> tuple[User, str] | None:
    creds = await _with_credentials(url)
    try:
        if await creds.has_admin():
            return None
        admin = await creds.create_user(email=None, role=Role.ADMIN, actor=OPERATOR)
        _, key = await creds.create_api_key(
            user_id=admin.id, name="first admin", scopes=("*",), actor=OPERATOR
        )
        return admin, key
    finally:
        await creds.engine.dispose()


def worker_app() -> Any:
    """The app of one ``--workers`` process (spawned: it sets up its own logging)."""
    from api.app import create_app  # noqa: PLC0415
    from api.logs import configure_logging  # noqa: PLC0415

    configure_logging()
    return create_app(api_settings())


def _exit_quietly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def serve(argv: list[str], settings: ApiSettings) -> int:
    parser = argparse.ArgumentParser(prog="valueos serve", description=__doc__)
    parser.add_argument("--host", default=settings.host)
    parser.add_argument("--port", type=int, default=settings.port)
    parser.add_argument(
        "--workers",
        type=int,
        default=settings.workers,
        help="worker processes (VALUEOS_WORKERS; each has its own pool and batcher)",
    )
    args = parser.parse_args(argv)

    import uvicorn  # noqa: PLC0415 - only the server needs it

    from api.app import create_app  # noqa: PLC0415
    from api.logs import configure_logging  # noqa: PLC0415

    url = resolve_url(settings.database)
    migrate(url)
    created = asyncio.run(_first_admin(url))
    if created is not None:
        admin, key = created
        print(
            f"First start: created admin user {admin.id}.\n"
            f"Its API key (shown once, store it now):\n\n    {key}\n\n"
            f"Use it as 'X-API-Key: <key>', or exchange it for a bearer token:\n"
            f"    curl -X POST -H 'X-API-Key: <key>' http://{args.host}:{args.port}/api/v1/auth/token\n",
            flush=True,
        )
    configure_logging()
    print(f"Value OS API on http://{args.host}:{args.port}  (docs: /schema/swagger)", flush=True)
    # one worker: this process serves; more: uvicorn forks workers that build the app
    # from the same environment (the factory re-reads it)
    app: Any = create_app(settings) if args.workers <= 1 else "api.cli:worker_app"
    # uvicorn re-raises the signal that stopped it once it has shut down; with the default
    # SIGTERM disposition the process would die there without running atexit, leaving the
    # embedded PostgreSQL running. Exit through SystemExit instead, so pgserver stops it.
    signal.signal(signal.SIGTERM, _exit_quietly)
    uvicorn.run(
        app,
        factory=args.workers > 1,
        workers=args.workers if args.workers > 1 else None,
        host=args.host,
        port=args.port,
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=settings.trusted_proxy,
    )
    return 0


async def _create_user(
    url: str, settings: ApiSettings, email: str | None, role: Role, ttl: int
) -> int:
    creds = await _with_credentials(url)
    try:
        user = await creds.create_user(email=email, role=role, actor=OPERATOR)
    finally:
        await creds.engine.dispose()
    expires = datetime.now(UTC) + timedelta(seconds=ttl)
    principal = Principal(user.id, user.role, frozenset({"*"}), f"u:{user.id}", None, expires)
    token = issue_token(
        jwt_auth(settings.jwt_secret, settings.token_ttl_seconds), principal, timedelta(seconds=ttl)
    )
    print(f"user {user.id} role {user.role.value}\nbearer token (valid {ttl} s):\n{token}")
    return 0


async def _create_key(
    url: str, user_id: uuid.UUID, name: str, scopes: tuple[str, ...], role: Role | None
) -> int:
    creds = await _with_credentials(url)
    try:
        key, secret = await creds.create_api_key(
            user_id=user_id, name=name, scopes=scopes, role=role, actor=OPERATOR
        )
    finally:
        await creds.engine.dispose()
    print(
        f"API key {key.id} for user {key.user_id} role {key.role.value} "
        f"scopes {','.join(key.scopes)}"
    )
    print(f"key (shown once): {secret}")
    return 0


def main(command: str, argv: list[str]) -> int:
    settings = api_settings()
    if command == "serve":
        return serve(argv, settings)
    parser = argparse.ArgumentParser(prog=f"valueos {command}")
    if command == "create-user":
        parser.add_argument("--email")
        parser.add_argument("--role", choices=_roles(), default="USER")
        parser.add_argument(
            "--ttl", type=int, default=settings.token_ttl_seconds, help="token seconds"
        )
        args = parser.parse_args(argv)
        url = resolve_url(settings.database)
        migrate(url)
        return asyncio.run(_create_user(url, settings, args.email, Role(args.role), args.ttl))
    if command == "create-api-key":
        parser.add_argument("--user-id", required=True, type=uuid.UUID)
        parser.add_argument("--name", required=True)
        parser.add_argument(
            "--scopes", default="*", help=f"comma-separated, of {','.join(sorted(SCOPES))}"
        )
        parser.add_argument(
            "--role", choices=_roles(), help="the user's role (default) or READ_ONLY"
        )
        args = parser.parse_args(argv)
        scopes = tuple(s.strip() for s in args.scopes.split(",") if s.strip())
        unknown = set(scopes) - SCOPES
        if unknown:
            parser.error(f"unknown scopes: {sorted(unknown)}")
        url = resolve_url(settings.database)
        migrate(url)
        role = Role(args.role) if args.role else None
        return asyncio.run(_create_key(url, args.user_id, args.name, scopes, role))
    parser.error(f"unknown command {command}")
    return 2  # pragma: no cover - parser.error exits
