"""Epoch sealing, stored Merkle levels and anchors (issue 4).

Revision ID: 0002_epochs
Revises: 0001_ledger
Create Date: 2026-11-21
"""

from core.migrations.sql import run_script

revision = "0002_epochs"
down_revision = "0001_ledger"
branch_labels = None
depends_on = None

UPGRADE = """
"""

DOWNGRADE = """
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
