"""Device revocation and abandoned allowances.

``offline_devices.revoked_at``: when the key was revoked (set with status REVOKED, once).

``offline_allowances`` may end FAILED: an allowance never bound, because its device was
revoked before it became OPEN or because it was left OPENING (its request died) and the
worker's sweep abandoned it. ``failure`` says which (DEVICE_REVOKED, ABANDONED). A FAILED
allowance keeps the hold it may have got, voided under the ledger key
``offline-failed:<id>``. OPEN and RELEASED allowances always have a hold, OPENING ones never.

Revision ID: 0019_offline_revoke_sweep
Revises: 0018_balance_commitments
Create Date: 2026-12-07
"""

from core.migrations.sql import run_script

revision = "0019_offline_revoke_sweep"
down_revision = "0018_balance_commitments"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE offline_devices ADD COLUMN revoked_at timestamptz;
ALTER TABLE offline_devices ADD CONSTRAINT offline_devices_revoked
    CHECK ((status = 'REVOKED') = (revoked_at IS NOT NULL));

ALTER TABLE offline_allowances ADD COLUMN failure text;
ALTER TABLE offline_allowances DROP CONSTRAINT offline_allowances_status_check;
ALTER TABLE offline_allowances DROP CONSTRAINT offline_allowances_check1;
ALTER TABLE offline_allowances ADD CONSTRAINT offline_allowances_status_check
    CHECK (status IN ('OPENING', 'OPEN', 'RELEASED', 'FAILED'));
ALTER TABLE offline_allowances ADD CONSTRAINT offline_allowances_hold
    CHECK (CASE status WHEN 'OPENING' THEN hold_id IS NULL
                       WHEN 'FAILED' THEN true
                       ELSE hold_id IS NOT NULL END);
ALTER TABLE offline_allowances ADD CONSTRAINT offline_allowances_failure
    CHECK ((status = 'FAILED') = (failure IS NOT NULL));
CREATE INDEX offline_allowances_unfinished ON offline_allowances (created_at)
    WHERE status IN ('OPENING', 'FAILED');
"""

DOWNGRADE = """
DROP INDEX offline_allowances_unfinished;
DELETE FROM offline_allowances WHERE status = 'FAILED';
ALTER TABLE offline_allowances DROP CONSTRAINT offline_allowances_failure;
ALTER TABLE offline_allowances DROP CONSTRAINT offline_allowances_hold;
ALTER TABLE offline_allowances DROP CONSTRAINT offline_allowances_status_check;
ALTER TABLE offline_allowances ADD CONSTRAINT offline_allowances_status_check
    CHECK (status IN ('OPENING', 'OPEN', 'RELEASED'));
ALTER TABLE offline_allowances ADD CONSTRAINT offline_allowances_check1
    CHECK ((status = 'OPENING') = (hold_id IS NULL));
ALTER TABLE offline_allowances DROP COLUMN failure;
ALTER TABLE offline_devices DROP CONSTRAINT offline_devices_revoked;
ALTER TABLE offline_devices DROP COLUMN revoked_at;
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
