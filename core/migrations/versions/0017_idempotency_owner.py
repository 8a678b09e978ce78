"""The API process that claimed an HTTP idempotency record.

``owner`` is the claiming process's liveness lock (``pg_advisory_lock(7301, owner)``, held
on a connection of its own for the life of the process): while the lock is held the record
is in progress; once it is gone (the process died, its connection with it) a retry takes the
record over at once. Rows claimed before this column existed keep the age rule.

Revision ID: 0017_idempotency_owner
Revises: 0016_offline_allowances
Create Date: 2026-11-29
"""

from core.migrations.sql import run_script

revision = "0017_idempotency_owner"
down_revision = "0016_offline_allowances"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE api_idempotency ADD COLUMN owner integer;
"""

DOWNGRADE = """
ALTER TABLE api_idempotency DROP COLUMN owner;
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
