"""One ``risk_events`` row per ledger operation of the risk loop.

The loop writes an action's operation and its event row in one transaction; this index makes
the database refuse a second event naming the same operation.

Revision ID: 0021_risk_event_per_operation
Revises: 0020_risk_triggers
Create Date: 2026-12-07
"""

from core.migrations.sql import run_script

revision = "0021_risk_event_per_operation"
down_revision = "0020_risk_triggers"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE UNIQUE INDEX risk_events_one_per_operation ON risk_events (operation_id)
    WHERE operation_id IS NOT NULL;
"""

DOWNGRADE = """
DROP INDEX risk_events_one_per_operation;
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
