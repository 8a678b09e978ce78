"""The request screen's cost (``api.body.screen_body``) per body, next to what the API pays
for the same body anyway: msgspec decoding it into the route's request Struct.

    python -m bench.screen [--rounds N]

Bodies: a transfer, a transfer with non-ASCII memo written with \\u escapes, an API-key
creation (colons in a timestamp: the exact repeated-key check runs), a 20-leg adjustment.
Each figure is the best of 7 repeats of ``--rounds`` calls (the machine is shared: the
ratio is the figure). Human-readable lines first; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import timeit
from typing import Any

import msgspec

from api.body import screen_body
from api.schemas.credits import TransferCreate
from api.schemas.operations import AdjustmentCreate
from api.schemas.users import ApiKeyCreate

USER = "6f1c2b9e-4a0e-4a5e-9b8e-2d6c3f1a7b90"
BODIES: dict[str, tuple[dict[str, Any], type[Any], bool]] = {
    "transfer": (
        {"from_account_id": 123456, "to_user_id": USER, "amount": "12.50", "memo": "coffee"},
        TransferCreate,
        False,
    ),
    "transfer, escaped memo": (
        {"from_account_id": 123456, "to_user_id": USER, "amount": "12.50", "memo": "café ☕"},
        TransferCreate,
        True,
    ),
    "api key (timestamp)": (
        {"user_id": USER, "name": "pos", "scopes": ["read", "payments"],
         "expires_at": "2027-01-01T12:00:00+00:00"},
        ApiKeyCreate,
        False,
    ),
    "adjustment, 20 legs": (
        {"reason": "correction", "entries": [
            {"account_id": i, "amount": "1.00", "side": "DEBIT" if i % 2 else "CREDIT"}
            for i in range(1, 21)
        ]},
        AdjustmentCreate,
        False,
    ),
}  # fmt: skip


def best_us(call: Any, rounds: int) -> float:
    return min(timeit.repeat(call, number=rounds, repeat=7)) / rounds * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5000)
    args = parser.parse_args()
    out = {}
    for name, (doc, struct, ascii_only) in BODIES.items():
        raw = json.dumps(doc, ensure_ascii=ascii_only).encode()
        screen = best_us(lambda raw=raw: screen_body(raw), args.rounds)
        decode = best_us(lambda raw=raw, s=struct: msgspec.json.decode(raw, type=s), args.rounds)
        out[name] = {"bytes": len(raw), "screen_us": round(screen, 2),
                     "decode_us": round(decode, 2), "ratio": round(screen / decode, 2)}  # fmt: skip
        print(
            f"{name:24} {len(raw):5} B  screen {screen:7.2f} us  typed decode {decode:7.2f} us"
            f"  ({screen / decode:.1f}x)"
        )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
