"""The SDK's offline pieces without a server: its voucher and certificate codec against the
server's (two implementations, one format), the terminal's offline checks, the wallet's
counter across a restart, and the three storage backends."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from core.errors import LedgerError
from core.offline.issuer import Issuer
from core.offline.vouchers import Certificate as ServerCertificate
from core.offline.vouchers import Voucher as ServerVoucher
from core.offline.vouchers import check_device_key, decode_voucher, release_message, verify
from valueos_sdk import (
    FileStore,
    MemoryStore,
    SQLiteStore,
    Store,
    Terminal,
    VoucherRejected,
    Wallet,
)
from valueos_sdk.store import DONE, FAILED
from valueos_sdk.vouchers import (
    Certificate,
    DeviceKey,
    Voucher,
    decode_payment,
    encode_payment,
    to_units,
)

pytestmark = pytest.mark.unit

ISSUER = Issuer(bytes(range(32)))
USER, SHOP = uuid.uuid4(), uuid.uuid4()
NOW = 1_800_000_000.0


def certificate(device: DeviceKey, amount: int = 5000, expires: float = NOW + 86400) -> str:
    return ISSUER.encode(
        ServerCertificate(
            7, USER, device.public, "MILES", 2, amount, datetime.fromtimestamp(expires, UTC)
        )
    )


def wallet_with(store: Store, amount: int = 5000, clock: float = NOW) -> Wallet:
    w = Wallet(None, store, clock=lambda: clock)  # type: ignore[arg-type]
    store.put(
        "wallet.allowance",
        {"certificate": certificate(w.key, amount), "counter": 0, "cumulative": 0},
    )
    return w


def terminal(store: Store | None = None, clock: float = NOW, payee: uuid.UUID = SHOP) -> Terminal:
    return Terminal(
        None,
        store or MemoryStore(),
        payee_id=payee,
        issuer_key=ISSUER.public_key,
        clock=lambda: clock,
    )  # type: ignore[arg-type]


def test_the_sdk_and_the_server_agree_on_every_byte() -> None:
    device = DeviceKey(bytes(32))
    mine = Voucher(7, SHOP, 1250, 3, 4000)
    mine = replace(mine, signature=device.sign(mine.message()))
    theirs = decode_voucher(mine.encode())
    assert theirs == ServerVoucher(7, SHOP, 1250, 3, 4000, mine.signature)
    assert theirs.message() == mine.message() and theirs.encode() == mine.encode()
    assert verify(device.public, mine.signature, theirs.message())
    cert = Certificate.from_text(certificate(device))
    assert (
        cert.allowance_id,
        cert.user_id,
        cert.device_key,
        cert.asset,
        cert.scale,
        cert.amount,
    ) == (7, USER, device.public, "MILES", 2, 5000)
    assert cert.expires_at == int(NOW + 86400)
    assert verify(ISSUER.public_key, cert.signature, cert.message())
    check_device_key(USER, device.public, device.registration_proof(USER))
    assert verify(device.public, device.release_signature(7, 4000), release_message(7, 4000))
    payment = encode_payment(cert, mine)
    assert decode_payment(payment) == (cert, mine)
    assert len(payment) < 400  # fits a QR code or an NFC record


def test_amounts_are_exact_minor_units() -> None:
    assert to_units("12.5", 2) == 1250 and to_units("3", 0) == 3 and to_units("0.07", 2) == 7
    for bad in ("1.234", "-1", "1e3", "", "."):
        with pytest.raises(ValueError, match="scale"):
            to_units(bad, 2)


def test_the_terminal_accepts_good_payments_and_refuses_every_bad_one_offline() -> None:
    store = MemoryStore()
    w = wallet_with(store)
    t = terminal()
    first = t.accept(w.pay(SHOP, "10.00"))
    assert (first.counter, first.amount, first.cumulative) == (1, 1000, 1000)
    second_payment = w.pay(SHOP, "15.00")
    assert t.accept(second_payment) == t.accept(second_payment)  # the same payment twice: kept once
    assert len(t.accepted()) == 2

    def refused(payment: str, code: str, tm: Terminal = t) -> None:
        with pytest.raises(VoucherRejected) as caught:
            tm.accept(payment)
        assert caught.value.code == code

    cert = Certificate.from_text(store.get("wallet.allowance")["certificate"])
    # forged by another key, for the right allowance
    forger = DeviceKey(b"\x01" * 32)
    forged = Voucher(7, SHOP, 100, 3, 2600)
    refused(
        encode_payment(cert, replace(forged, signature=forger.sign(forged.message()))),
        "VOUCHER_SIGNATURE_INVALID",
    )
    # a certificate not signed by the pinned issuer
    fake_issuer = Issuer(b"\x02" * 32)
    fake = Certificate.from_text(
        fake_issuer.encode(
            ServerCertificate(
                7, USER, w.key.public, "MILES", 2, 10**9, datetime.fromtimestamp(NOW + 86400, UTC)
            )
        )
    )
    honest = Voucher(7, SHOP, 100, 3, 2600)
    refused(
        encode_payment(fake, replace(honest, signature=w.key.sign(honest.message()))),
        "CERTIFICATE_INVALID",
    )
    # another payee's voucher
    refused(w.pay(uuid.uuid4(), "1.00"), "VOUCHER_WRONG_PAYEE")
    # a reused counter for a different amount (a device forking its counter)
    reused = Voucher(7, SHOP, 999, 1, 999)
    refused(
        encode_payment(cert, replace(reused, signature=w.key.sign(reused.message()))),
        "VOUCHER_COUNTER_REUSED",
    )
    # cumulative totals that contradict what was seen (counter 5 claims less than 1+2 paid)
    lie = Voucher(7, SHOP, 100, 5, 100)
    refused(
        encode_payment(cert, replace(lie, signature=w.key.sign(lie.message()))),
        "VOUCHER_INCONSISTENT",
    )
    # beyond the allowance
    over = Voucher(7, SHOP, 4000, 9, 6500)
    refused(
        encode_payment(cert, replace(over, signature=w.key.sign(over.message()))),
        "ALLOWANCE_EXCEEDED",
    )
    # garbage
    refused("VP1.AAAA", "CERTIFICATE_MALFORMED")
    refused("hello", "PAYMENT_MALFORMED")
    # the wallet refuses to overspend (nothing signed, counter unchanged)
    with pytest.raises(VoucherRejected) as caught:
        w.pay(SHOP, "30.00")
    assert caught.value.code == "ALLOWANCE_EXCEEDED"


def test_clock_skew_the_terminal_keeps_a_redeem_window_on_its_own_clock() -> None:
    store = MemoryStore()
    w = wallet_with(store)  # expires at NOW + 1 day
    payment = w.pay(SHOP, "1.00")
    assert terminal(clock=NOW + 86400 - 7200).accept(payment).counter == 1  # 2 h left: fine
    with pytest.raises(VoucherRejected) as caught:
        terminal(clock=NOW + 86400 - 1800).accept(payment)  # 30 min left < 1 h window
    assert caught.value.code == "ALLOWANCE_EXPIRING"
    late = wallet_with(MemoryStore(), clock=NOW + 86400 + 1)  # the wallet's clock: expired
    with pytest.raises(VoucherRejected) as caught:
        late.pay(SHOP, "1.00")
    assert caught.value.code == "ALLOWANCE_EXPIRED"


@pytest.mark.parametrize("backend", ["sqlite", "file"])
def test_the_wallet_never_reuses_a_counter_across_a_restart(tmp_path: Path, backend: str) -> None:
    path = tmp_path / "wallet.db"
    opener = SQLiteStore if backend == "sqlite" else FileStore
    store = opener(path)
    w = wallet_with(store)
    key = w.key.public
    p1 = w.pay(SHOP, "1.00")
    store.close()
    store = opener(path)
    w2 = Wallet(None, store, clock=lambda: NOW)  # type: ignore[arg-type]
    assert w2.key.public == key
    p2 = w2.pay(SHOP, "2.00")
    v1, v2 = decode_payment(p1)[1], decode_payment(p2)[1]
    assert (v1.counter, v2.counter, v2.cumulative) == (1, 2, 300)
    store.close()


@pytest.mark.parametrize("backend", ["memory", "sqlite", "file"])
def test_a_store_keeps_records_in_order_and_finishes_each_once(
    tmp_path: Path, backend: str
) -> None:
    path = tmp_path / "queue"
    make: dict[str, Any] = {
        "memory": MemoryStore,
        "sqlite": lambda: SQLiteStore(path),
        "file": lambda: FileStore(path),
    }
    store: Store = make[backend]()
    a = store.append("k1", "POST", "/x", {"n": 1})
    b = store.append("k2", "POST", "/x", {"n": 2})
    store.append("k3", "POST", "/x", {"n": 3})
    assert [r.key for r in store.pending()] == ["k1", "k2", "k3"]
    store.finish(a.id, DONE, None, {"id": 1})
    store.finish(b.id, FAILED, 409, {"code": "INSUFFICIENT_FUNDS"})
    store.finish(a.id, FAILED, 500, None)  # already finished: unchanged
    store.put("cursor", {"seq": 9})
    if backend != "memory":
        store.close()
        store = make[backend]()
    assert [r.key for r in store.pending()] == ["k3"]
    by_key = {r.key: r for r in store.records()}
    assert (by_key["k1"].state, by_key["k1"].response) == (DONE, {"id": 1})
    assert (by_key["k2"].state, by_key["k2"].status) == (FAILED, 409)
    assert store.get("cursor") == {"seq": 9} and store.get("nothing") is None
    store.close()


def test_a_torn_last_line_of_the_file_store_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "queue.jsonl"
    store = FileStore(path)
    store.append("k1", "POST", "/x", {"n": 1})
    store.close()
    with path.open("a") as f:
        f.write('{"e":"append","id":2,"key":"k2"')  # the process died mid-write
    store = FileStore(path)
    assert [r.key for r in store.pending()] == ["k1"]
    store.append("k2", "POST", "/x", {"n": 2})  # written after the last whole record
    store.close()
    assert [r.key for r in FileStore(path).pending()] == ["k1", "k2"]


def test_the_server_codec_refuses_what_the_sdk_never_makes() -> None:
    for text in ("VV1.", "VV1.@@@", "nope"):
        with pytest.raises(LedgerError):
            decode_voucher(text)
