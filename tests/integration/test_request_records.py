"""An unfinished idempotency claim is in progress exactly while the process that made it
is alive: another process's retry is refused as busy, then takes over as soon as the first
process's liveness lock is gone — not after an age."""

from __future__ import annotations

import pytest

from core.db import create_engine
from core.request_records import Records

pytestmark = [pytest.mark.integration]


async def test_a_claim_is_busy_while_its_process_lives_and_taken_over_once_it_dies(
    database_url: str,
) -> None:
    first_engine = create_engine(database_url, 2)
    second_engine = create_engine(database_url, 2)
    first, second = Records(first_engine), Records(second_engine)
    try:
        assert (await first.claim("k:test", "key-1", b"h" * 32, {"a": 1}))[0] == "new"
        assert await second.claim("k:test", "key-1", b"h" * 32, {}) == ("busy", None)
        assert (await second.claim("k:test", "key-1", b"x" * 32, {}))[0] == "conflict"
        await first.close()  # the first process dies: its liveness connection with it
        assert await second.claim("k:test", "key-1", b"h" * 32, {}) == ("retry", {"a": 1})
        # the record is now the second process's: busy for anyone else while it lives
        third = Records(create_engine(database_url, 2))
        try:
            assert await third.claim("k:test", "key-1", b"h" * 32, {}) == ("busy", None)
        finally:
            await third.close()
            await third.engine.dispose()
    finally:
        await second.close()
        await first_engine.dispose()
        await second_engine.dispose()
