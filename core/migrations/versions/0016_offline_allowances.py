"""Offline spending: device keys, allowances (a hold bound to a device key) and the
vouchers redeemed against them.

``offline_devices``: a user's Ed25519 public keys (32 bytes, unique), ACTIVE or REVOKED.

``offline_allowances``: one per reservation. ``hold_id`` is the hold on the user's AVAILABLE
account that backs it (NULL only while OPENING: the row is written first, the hold under the
ledger key ``offline-allowance:<id>``, so a retry finishes it). ``claimed`` is the sum of the
vouchers claimed against it (never above ``amount``); ``final_cumulative`` is what the device
declared when it released the allowance.

``offline_vouchers``: one row per (allowance, counter), written under the allowance's row lock
before the capture (CLAIMED), then HONOURED (``operation_id``: the HOLD_CAPTURE) or REFUSED
(``code``). A second voucher with the same counter is refused (VOUCHER_COUNTER_REUSED); the
same voucher again answers the stored row. The capture's ledger key is
``offline-voucher:<allowance>:<counter>``, so a crash between the claim and its capture never
captures twice.

Revision ID: 0016_offline_allowances
Revises: 0015_credit_risk
Create Date: 2026-11-29
"""

from core.migrations.sql import run_script

revision = "0016_offline_allowances"
down_revision = "0015_credit_risk"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE offline_devices (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users (id),
    public_key  bytea NOT NULL UNIQUE CHECK (length(public_key) = 32),
    name        text NOT NULL,
    status      text NOT NULL DEFAULT 'ACTIVE' CHECK (status IN ('ACTIVE', 'REVOKED')),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX offline_devices_user ON offline_devices (user_id, id);

CREATE TABLE offline_allowances (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id           uuid NOT NULL REFERENCES users (id),
    device_id         bigint NOT NULL REFERENCES offline_devices (id),
    account_id        bigint NOT NULL REFERENCES accounts (id),
    asset             text NOT NULL,
    amount            bigint NOT NULL CHECK (amount > 0),
    claimed           bigint NOT NULL DEFAULT 0 CHECK (claimed >= 0 AND claimed <= amount),
    expires_at        timestamptz NOT NULL,
    hold_id           bigint UNIQUE REFERENCES holds (id),
    status            text NOT NULL CHECK (status IN ('OPENING', 'OPEN', 'RELEASED')),
    final_cumulative  bigint,
    idempotency_key   text,
    request_hash      bytea NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CHECK ((status = 'OPENING') = (hold_id IS NULL)),
    CHECK ((status = 'RELEASED') = (final_cumulative IS NOT NULL))
);
CREATE UNIQUE INDEX offline_allowances_key ON offline_allowances (user_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX offline_allowances_user ON offline_allowances (user_id, id);

CREATE TABLE offline_vouchers (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    allowance_id      bigint NOT NULL REFERENCES offline_allowances (id),
    counter           bigint NOT NULL CHECK (counter >= 1),
    payee_id          uuid NOT NULL REFERENCES users (id),
    payee_account_id  bigint NOT NULL REFERENCES accounts (id),
    amount            bigint NOT NULL CHECK (amount > 0),
    cumulative        bigint NOT NULL CHECK (cumulative >= amount),
    signature         bytea NOT NULL CHECK (length(signature) = 64),
    status            text NOT NULL CHECK (status IN ('CLAIMED', 'HONOURED', 'REFUSED')),
    code              text,
    operation_id      bigint REFERENCES operations (id),
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (allowance_id, counter),
    CHECK ((status = 'HONOURED') = (operation_id IS NOT NULL)),
    CHECK ((status = 'REFUSED') = (code IS NOT NULL))
);
CREATE INDEX offline_vouchers_payee ON offline_vouchers (payee_id, id);
"""

DOWNGRADE = """
DROP TABLE offline_vouchers;
DROP TABLE offline_allowances;
DROP TABLE offline_devices;
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
