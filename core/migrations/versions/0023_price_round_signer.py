"""A pushed price round keeps the name of the ops signer whose Ed25519 signature it carried
(``core.risk.price_signing``); feed rounds have none.

Revision ID: 0023_price_round_signer
Revises: 0022_saga_names
Create Date: 2026-12-07
"""

from core.migrations.sql import run_script

revision = "0023_price_round_signer"
down_revision = "0022_saga_names"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE price_rounds ADD COLUMN signer text;
ALTER TABLE price_rounds ADD CONSTRAINT price_rounds_signer_of_push
    CHECK (signer IS NULL OR source = 'push');
"""

DOWNGRADE = """
ALTER TABLE price_rounds DROP CONSTRAINT price_rounds_signer_of_push;
ALTER TABLE price_rounds DROP COLUMN signer;
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
