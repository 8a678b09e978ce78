"""Vaults with member roles and P2P requests (issue 3).

Revision ID: 0004_vaults_p2p
Revises: 0003_auth
Create Date: 2026-11-21
"""

from core.migrations.sql import run_script

revision = "0004_vaults_p2p"
down_revision = "0003_auth"
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
