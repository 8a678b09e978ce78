"""ERC-20 bridge tokens: one token contract per bridged asset and chain.

``bridge_tokens`` records where an asset's token lives (chain id, address), its decimals (the
asset's scale maps onto them exactly), and whether outbound bridging is paused (with the
reason). A bridge-out itself is a BRIDGE_OUT operation (user -> in-flight) whose mint is its
outbox row (``chain_txs``, purpose ``erc20_mint``), ended by a BRIDGE_OUT_FINAL or
BRIDGE_OUT_REFUND operation; nothing else is stored for it, and two expression indexes find
a bridge-out's operations by its id and a user's bridge-outs.

Revision ID: 0011_bridge_tokens
Revises: 0010_chain_outbox
Create Date: 2026-11-29
"""

from core.migrations.sql import run_script

revision = "0011_bridge_tokens"
down_revision = "0010_chain_outbox"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE bridge_tokens (
    asset         text PRIMARY KEY REFERENCES assets (code),
    chain_id      bigint NOT NULL,
    address       text NOT NULL CHECK (address ~ '^0x[0-9a-fA-F]{40}$'),
    decimals      smallint NOT NULL CHECK (decimals BETWEEN 0 AND 36),
    paused        boolean NOT NULL DEFAULT false,
    pause_reason  text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (chain_id, address),
    CHECK (NOT paused OR pause_reason IS NOT NULL)
);
-- a bridge-out's operations by its id, and a user's bridge-outs (core.bridges.erc20)
CREATE INDEX operations_bridge_id ON operations ((metadata -> 'bridge' ->> 'id'))
    WHERE type IN ('BRIDGE_OUT', 'BRIDGE_OUT_FINAL', 'BRIDGE_OUT_REFUND');
CREATE INDEX operations_bridge_user ON operations ((metadata -> 'bridge' ->> 'user'), id)
    WHERE type = 'BRIDGE_OUT';
"""

DOWNGRADE = """
DROP INDEX operations_bridge_user;
DROP INDEX operations_bridge_id;
DROP TABLE bridge_tokens;
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
