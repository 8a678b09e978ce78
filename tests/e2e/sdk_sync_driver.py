"""A client process for the SDK's crash test: queue transfers in a SQLite store (once), then
sync them to a real server, optionally SIGKILLing itself at an injected point.

    python -m tests.e2e.sdk_sync_driver --url URL --store PATH --to USER --from ACCOUNT \\
        --count N [--die-after-response K | --die-after-append K]

The API key comes from ``SDK_TEST_KEY`` (never the command line). Points:

* ``--die-after-response K``: the server has answered the K-th request of this sync, the
  answer is not recorded yet (the kill lands inside the transport, before the queue sees it);
* ``--die-after-append K``: the K-th transfer is durably queued, nothing of it was sent.

The product code has no test hooks: the kill wraps the client's transport and the store from
outside. Prints ``synced`` and exits 0 when nothing is left pending.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from typing import Any

import httpx

from valueos_sdk import AsyncClient, OfflineQueue, SQLiteStore


class Dying(httpx.AsyncHTTPTransport):
    def __init__(self, after: int) -> None:
        super().__init__()
        self.after = after
        self.answered = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        await response.aread()
        self.answered += 1
        if self.answered == self.after:
            os.kill(os.getpid(), signal.SIGKILL)
        return response


async def main(args: Any) -> None:
    store = SQLiteStore(args.store)
    transport = Dying(args.die_after_response or 0)
    client = AsyncClient(args.url, api_key=os.environ["SDK_TEST_KEY"], transport=transport)
    queue = OfflineQueue(client, store)
    if not store.records():
        for i in range(args.count):
            body = {"from_account_id": args.from_account, "to_user_id": args.to, "amount": "1.00"}
            queue.enqueue("POST", "/api/v1/credits/transfer", body, key=f"crash-{args.tag}-{i}")
            if args.die_after_append == i + 1:
                os.kill(os.getpid(), signal.SIGKILL)
    report = await queue.sync()
    await client.aclose()
    if report.pending == 0 and not store.pending():
        print("synced", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--store", required=True)
    parser.add_argument("--to", required=True)
    parser.add_argument("--from", dest="from_account", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--tag", required=True)
    parser.add_argument("--die-after-response", type=int, default=None)
    parser.add_argument("--die-after-append", type=int, default=None)
    asyncio.run(main(parser.parse_args()))
