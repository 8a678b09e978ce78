"""Compliance attestations and the policy engine (issue 5).

Revision ID: 0005_policy
Revises: 0004_vaults_p2p
Create Date: 2026-11-21
"""

from core.migrations.sql import run_script

revision = "0005_policy"
down_revision = "0004_vaults_p2p"
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
