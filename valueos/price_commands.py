"""``valueos price-keygen | price-sign``: an ops signer's key and signed price rounds.

``valueos price-keygen --signer NAME --key-file FILE`` creates FILE (mode 0600, the 32-byte
Ed25519 seed in hex; an existing file is kept) and prints the entry the server needs in
``VALUEOS_PRICE_SIGNERS``: ``NAME:<base64 public key>``. The seed never leaves the file.

``valueos price-sign --signer NAME --key-file FILE --asset A --round-id N --answer X
--decimals D [--updated-at ISO-8601]`` prints the JSON body of ``POST /api/v1/risk/prices``
with the round, the signer and the signature (see ``core.risk.price_signing``); the ledger id
is the one ``VALUEOS_LEDGER_ID`` names, as on the server, and ``--updated-at`` defaults to now.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import sys
from datetime import UTC, datetime
from pathlib import Path

from core.risk.price_signing import SignedRound, public_key_of, sign_round
from core.settings import epoch_settings


def _seed(path: Path) -> bytes:
    seed = bytes.fromhex(path.read_text().strip())
    if len(seed) != 32:
        raise SystemExit(f"{path}: an Ed25519 seed has 32 bytes (64 hex digits)")
    return seed


def keygen(signer: str, path: Path) -> str:
    """Create the seed file if absent; the ``name:key`` entry for the server."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_bytes(32).hex() + "\n")
    return f"{signer}:{base64.b64encode(public_key_of(_seed(path))).decode('ascii')}"


def signed_body(signer: str, seed: bytes, ledger_id: bytes, r: SignedRound) -> dict[str, object]:
    """The request body of ``POST /api/v1/risk/prices`` for ``r`` signed by ``signer``."""
    return {
        "asset": r.asset,
        "round_id": r.round_id,
        "answer": r.answer,
        "decimals": r.decimals,
        "updated_at": r.updated_at.isoformat(),
        "signer": signer,
        "signature": sign_round(seed, ledger_id, signer, r),
    }


def main(command: str, argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=f"valueos {command}")
    parser.add_argument("--signer", required=True, help="the signer's name")
    parser.add_argument("--key-file", required=True, type=Path, help="the hex seed file")
    if command == "price-keygen":
        args = parser.parse_args(argv)
        print(keygen(args.signer, args.key_file))
        return 0
    parser.add_argument("--asset", required=True)
    parser.add_argument("--round-id", required=True, type=int)
    parser.add_argument("--answer", required=True, type=int)
    parser.add_argument("--decimals", required=True, type=int)
    parser.add_argument("--updated-at", type=datetime.fromisoformat, default=None)
    args = parser.parse_args(argv)
    at = args.updated_at or datetime.now(UTC)
    if at.tzinfo is None:
        print("--updated-at needs a time zone (e.g. +00:00)", file=sys.stderr)
        return 2
    r = SignedRound(args.asset, args.round_id, args.answer, args.decimals, at)
    body = signed_body(args.signer, _seed(args.key_file), epoch_settings().ledger_id, r)
    print(json.dumps(body))
    return 0
