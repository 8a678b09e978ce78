"""BALANCE leaves commit to the account's entry count and the running hash of its entries.

``balance_commitments``: one row per account and epoch in which the account's (entry count,
running hash) changed, i.e. it had entries in that epoch (every account with entries gets one
at the first epoch sealed after this migration). A BALANCE leaf of epoch E takes the latest row
at or before E. Append-only, like the trees.

``epoch_roots.balance_leaf_format``: the layout of the epoch's BALANCE leaves, 1 for the epochs
sealed before this migration (7 words, no count or hash; they stay as anchored), 2 for every
epoch sealed after it (9 words, ``merkle/leaves.py``).

Revision ID: 0018_balance_commitments
Revises: 0017_idempotency_owner
Create Date: 2026-12-07
"""

from core.migrations.sql import run_script

revision = "0018_balance_commitments"
down_revision = "0017_idempotency_owner"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE epoch_roots ADD COLUMN balance_leaf_format smallint NOT NULL DEFAULT 1
    CHECK (balance_leaf_format IN (1, 2));
ALTER TABLE epoch_roots ALTER COLUMN balance_leaf_format SET DEFAULT 2;

CREATE TABLE balance_commitments (
    account_id    bigint NOT NULL REFERENCES accounts (id),
    epoch         bigint NOT NULL REFERENCES epoch_roots (epoch),
    entry_count   bigint NOT NULL CHECK (entry_count > 0),
    entries_hash  bytea NOT NULL CHECK (length(entries_hash) = 32),
    PRIMARY KEY (account_id, epoch)
);
CREATE TRIGGER balance_commitments_no_change BEFORE UPDATE OR DELETE ON balance_commitments
    FOR EACH ROW EXECUTE FUNCTION valueos_append_only();
CREATE TRIGGER balance_commitments_no_truncate BEFORE TRUNCATE ON balance_commitments
    FOR EACH STATEMENT EXECUTE FUNCTION valueos_append_only();
"""

DOWNGRADE = """
DROP TABLE IF EXISTS balance_commitments;
ALTER TABLE epoch_roots DROP COLUMN balance_leaf_format;
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
