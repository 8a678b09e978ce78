"""Offline spending: device keys, allowances (a hold bound to a device key), vouchers.

- ``core.offline.vouchers``: the signed formats (pure);
- ``core.offline.issuer``: the server key that signs allowance certificates (pure);
- ``core.offline.devices``: device keys (registering, listing, revoking);
- ``core.offline.allowances``: opening, releasing and reading allowances;
- ``core.offline.opening``: finishing an allowance's opening, and the sweep of those a crash
  left unfinished;
- ``core.offline.redemptions``: vouchers captured against their allowance exactly once.

:class:`Offline` is the one door the API uses.
"""

from __future__ import annotations

from core.directory import Directory
from core.offline.allowances import (
    Allowance,
    AllowancePage,
    Allowances,
    AllowanceStatus,
)
from core.offline.devices import Device, Devices
from core.offline.issuer import Issuer
from core.offline.redemptions import (
    Redemption,
    Redemptions,
    StoredVoucher,
    VoucherPage,
    VoucherStatus,
)


class Offline:
    def __init__(self, directory: Directory, issuer: Issuer) -> None:
        self.issuer = issuer
        self.devices = Devices(directory.ledger)
        self.allowances = Allowances(directory, issuer)
        self.redemptions = Redemptions(directory)


__all__ = [
    "Allowance",
    "AllowancePage",
    "AllowanceStatus",
    "Allowances",
    "Device",
    "Devices",
    "Issuer",
    "Offline",
    "Redemption",
    "Redemptions",
    "StoredVoucher",
    "VoucherPage",
    "VoucherStatus",
]
