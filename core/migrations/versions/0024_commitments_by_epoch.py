"""``balance_commitments`` by epoch: the self-audit reads one epoch's rows at a time.

The primary key is (account_id, epoch), which serves a leaf's look-up (the latest row of one
account at or before an epoch) but not "every row of epoch E", which the self-audit compares
with its rebuild for each epoch it audits.

Revision ID: 0024_commitments_by_epoch
Revises: 0023_price_round_signer
Create Date: 2026-12-07
"""

from core.migrations.sql import run_script

revision = "0024_commitments_by_epoch"
down_revision = "0023_price_round_signer"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE INDEX balance_commitments_epoch ON balance_commitments (epoch, account_id);
"""

DOWNGRADE = """
DROP INDEX IF EXISTS balance_commitments_epoch;
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
