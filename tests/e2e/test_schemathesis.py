"""Schemathesis against the app's own OpenAPI, over real HTTP (uvicorn on loopback):
no 5xx, and status codes, content types and bodies conform to the documented schema.
Bounded: a few examples per operation (the whole run takes well under a minute)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from schemathesis import checks

from api.app import create_app
from api.auth import Principal, issue_token
from core.credentials import Credentials
from core.db import create_engine
from core.types import Role
from tests.e2e.conftest import BOOTSTRAP, make_settings

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """uvicorn serving a fresh app in a thread with its own event loop."""

    def __init__(self, database_url: str) -> None:
        self.settings = make_settings(database_url)
        self.app = create_app(self.settings)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_config=None, lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    def admin_token(self) -> str:
        async def make() -> uuid.UUID:
            engine = create_engine(self.settings.database.url or "", 1)
            try:
                user = await Credentials(engine).create_user(
                    email=None, role=Role.ADMIN, actor=BOOTSTRAP
                )
            finally:
                await engine.dispose()
            return user.id

        user_id = asyncio.run(make())
        principal = Principal(user_id, Role.ADMIN, frozenset({"*"}), f"u:{user_id}")
        return issue_token(self.app.state.jwt_auth, principal)


@pytest.fixture(scope="module")
def live(database_url: str) -> Iterator[LiveServer]:
    with LiveServer(database_url) as server:
        yield server


CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
]
MAX_EXAMPLES = 8


def test_api_conforms_to_its_schema(live: LiveServer) -> None:
    """Every operation, positive data, as an admin (so guards mostly let data through;
    routes of other roles answer a documented 403 problem)."""
    headers = {"Authorization": f"Bearer {live.admin_token()}"}
    schema = schemathesis.openapi.from_url(f"{live.url}/schema/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 25
    failures: list[str] = []
    calls: list[int] = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: schemathesis.Case) -> None:
            calls.append(case.call_and_validate(headers=headers, checks=CHECKS).status_code)

        try:
            run()
        except Exception as exc:  # collect every operation's failure
            failures.append(f"{operation.label}: {str(exc)[:2000]}")
    assert not failures, "\n\n".join(failures)
    # the run really exercised the API, successes included
    assert len(calls) >= 5 * len(operations), len(calls)
    ok = sum(200 <= c < 300 for c in calls)
    print(f"schemathesis: {len(calls)} calls, {ok} 2xx, statuses {sorted(set(calls))}")
    assert ok >= 10, sorted(set(calls))


def test_live_server_is_ready(live: LiveServer) -> None:
    r = httpx.get(f"{live.url}/ready")
    assert r.status_code == 200, r.text
