"""API credentials: user roles, API keys (issue 3).

Revision ID: 0003_auth
Revises: 0002_epochs
Create Date: 2026-11-21
"""

from core.migrations.sql import run_script

revision = "0003_auth"
down_revision = "0002_epochs"
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
