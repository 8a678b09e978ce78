"""``valueos bridge status``: every bridge token, its pause (and why), its bridge-outs by state
and its redemptions by outcome, as JSON. Reads the database only."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json

from core.bridges.status import TokenStatus, bridge_status
from jobs import wiring


async def _status() -> list[TokenStatus]:
    async with wiring.ledger() as led:
        return await bridge_status(led)


def main(command: str, argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=f"valueos {command}", description=__doc__)
    parser.add_argument("what", choices=["status"])
    parser.parse_args(argv)
    found = asyncio.run(_status())
    print(json.dumps([dataclasses.asdict(t) for t in found], indent=2))
    return 1 if any(t.paused for t in found) else 0
