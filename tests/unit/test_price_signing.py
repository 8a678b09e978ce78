"""Signed ops price rounds (pure): the canonical message byte for byte, verification of every
field, the signer set's parsing, and the CLI that makes keys and signed bodies."""

from __future__ import annotations

import base64
import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from api.settings import load_price_signers
from core.errors import PriceSignatureInvalid, PriceSignersNotConfigured, UnknownPriceSigner
from core.risk.price_signing import (
    PriceSigners,
    SignedRound,
    parse_signers,
    public_key_of,
    round_message,
    sign_round,
)
from valueos import price_commands

pytestmark = pytest.mark.unit

SEED, OTHER = bytes(range(32)), bytes(range(1, 33))
LEDGER = bytes.fromhex("ab" * 32)
ROUND = SignedRound("WETH", 7, 200_012_345_678, 8, datetime(2026, 12, 7, 4, 0, 1, 5, tzinfo=UTC))
SIGNERS = PriceSigners({"ops-1": public_key_of(SEED)}, LEDGER)


def test_the_message_is_the_documented_text() -> None:
    assert round_message(LEDGER, "ops-1", ROUND) == (
        b"valueos/price-round/v1\n"
        b"ledger_id=0x" + b"ab" * 32 + b"\n"
        b"signer=ops-1\n"
        b"asset=WETH\n"
        b"round_id=7\n"
        b"answer=200012345678\n"
        b"decimals=8\n"
        b"updated_at=1796616001000005\n"
    )
    negative = SignedRound("WETH", 0, -5, 0, datetime(1970, 1, 1, 1, tzinfo=UTC).astimezone())
    assert b"answer=-5\n" in round_message(LEDGER, "ops-1", negative)
    assert b"updated_at=3600000000\n" in round_message(LEDGER, "ops-1", negative)


def test_a_good_signature_verifies_and_names_its_signer() -> None:
    assert SIGNERS.verify("ops-1", sign_round(SEED, LEDGER, "ops-1", ROUND), ROUND) == "ops-1"


@pytest.mark.parametrize(
    "tampered",
    [
        SignedRound("WBTC", ROUND.round_id, ROUND.answer, ROUND.decimals, ROUND.updated_at),
        SignedRound(ROUND.asset, 8, ROUND.answer, ROUND.decimals, ROUND.updated_at),
        SignedRound(ROUND.asset, ROUND.round_id, ROUND.answer + 1, ROUND.decimals,
                    ROUND.updated_at),
        SignedRound(ROUND.asset, ROUND.round_id, ROUND.answer, 9, ROUND.updated_at),
        SignedRound(ROUND.asset, ROUND.round_id, ROUND.answer, ROUND.decimals,
                    ROUND.updated_at + timedelta(microseconds=1)),
    ],
    ids=["asset", "round", "answer", "decimals", "time"],
)  # fmt: skip
def test_every_field_is_covered(tampered: SignedRound) -> None:
    signature = sign_round(SEED, LEDGER, "ops-1", ROUND)
    with pytest.raises(PriceSignatureInvalid):
        SIGNERS.verify("ops-1", signature, tampered)


def test_refusals() -> None:
    good = sign_round(SEED, LEDGER, "ops-1", ROUND)
    for signer, signature in (
        ("ops-1", sign_round(OTHER, LEDGER, "ops-1", ROUND)),  # wrong key
        ("ops-1", sign_round(SEED, bytes(32), "ops-1", ROUND)),  # another ledger
        ("ops-1", "%%%"),
        ("ops-1", base64.b64encode(b"x" * 10).decode()),
        ("ops-1", None),
        (None, good),
    ):
        with pytest.raises(PriceSignatureInvalid):
            SIGNERS.verify(signer, signature, ROUND)
    with pytest.raises(UnknownPriceSigner):
        SIGNERS.verify("ops-2", sign_round(OTHER, LEDGER, "ops-2", ROUND), ROUND)
    with pytest.raises(PriceSignersNotConfigured):
        PriceSigners({}, LEDGER).verify("ops-1", good, ROUND)
    assert (PriceSignatureInvalid.status, UnknownPriceSigner.status,
            PriceSignersNotConfigured.status) == (401, 403, 503)  # fmt: skip


def test_signer_sets_parse_strictly(tmp_path: Path) -> None:
    a, b = public_key_of(SEED), public_key_of(OTHER)
    ea, eb = base64.b64encode(a).decode(), base64.b64encode(b).decode()
    assert parse_signers(f"ops-1:{ea}, ops-2:{eb}\n# comment\n\nops-1:{ea}") == {
        "ops-1": a, "ops-2": b,
    }  # fmt: skip
    for bad in (f"ops-1{ea}", f"Ops:{ea}", "ops-1:@@", f"ops-1:{ea[:-4]}",
                f"ops-1:{ea},ops-1:{eb}"):  # fmt: skip
        with pytest.raises(ValueError, match="price signer"):
            parse_signers(bad)
    path = tmp_path / "signers"
    path.write_text(f"ops-2:{eb}\n")
    env = {"VALUEOS_PRICE_SIGNERS": f"ops-1:{ea}", "VALUEOS_PRICE_SIGNERS_FILE": str(path)}
    assert load_price_signers(env) == {"ops-1": a, "ops-2": b}
    assert load_price_signers({}) == {}


def test_the_cli_makes_a_key_and_a_body_the_server_accepts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    key = tmp_path / "ops.key"
    assert price_commands.main("price-keygen", ["--signer", "ops-9", "--key-file", str(key)]) == 0
    entry = capsys.readouterr().out.strip()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_text().strip() not in entry  # the seed stays in its file
    signers = PriceSigners(parse_signers(entry), bytes(32))
    monkeypatch.setattr(price_commands, "epoch_settings", _Epoch)
    assert price_commands.main("price-sign", [
        "--signer", "ops-9", "--key-file", str(key), "--asset", "WETH", "--round-id", "7",
        "--answer", "200012345678", "--decimals", "8",
        "--updated-at", "2026-12-07T04:00:01.000005+00:00",
    ]) == 0  # fmt: skip
    body = json.loads(capsys.readouterr().out)
    signed = SignedRound(body["asset"], body["round_id"], body["answer"], body["decimals"],
                         datetime.fromisoformat(body["updated_at"]))  # fmt: skip
    assert signed == ROUND
    assert signers.verify(body["signer"], body["signature"], signed) == "ops-9"


class _Epoch:
    ledger_id = bytes(32)
