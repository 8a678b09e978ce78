"""ERC-20 bridge-in: the ``Redeemed`` events seen on-chain and a read cursor per token.

``bridge_redemptions`` holds one row per event, keyed by (chain id, transaction hash, log
index), as read from a finalized block range: the token, the block (number and hash, re-checked
against the canonical chain before anything is credited), the burner, the amount in token
units, the 32-byte ``ledgerRef``; and what became of it: ``outcome`` NULL while pending, then
CREDITED (``credit_operation``, a BRIDGE_IN), SUSPENDED (``suspense_operation``, a
BRIDGE_IN_SUSPENSE, NULL when not even one minor unit maps; ``reason`` says why) or DROPPED
(its block left the canonical chain: never credited). ``resolved_operation`` is the staff's
SUSPENSE_RESOLVED of a suspended one. The asset, the user and the minor amount are the
operations' own.

``bridge_cursors`` is the next block to read per (chain, token); it moves only after the page
below it is recorded (and its final events credited).

An expression index finds a redemption's operations by its key (``metadata -> 'redemption'
->> 'key'``): after a crash between a posting and the row's update, the next pass finds the
operation there instead of posting another.

Revision ID: 0012_bridge_redemptions
Revises: 0011_bridge_tokens
Create Date: 2026-11-29
"""

from core.migrations.sql import run_script

revision = "0012_bridge_redemptions"
down_revision = "0011_bridge_tokens"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE bridge_redemptions (
    chain_id            bigint NOT NULL,
    tx_hash             bytea NOT NULL CHECK (length(tx_hash) = 32),
    log_index           integer NOT NULL CHECK (log_index >= 0),
    token               text NOT NULL,
    block_number        bigint NOT NULL CHECK (block_number >= 0),
    block_hash          bytea NOT NULL CHECK (length(block_hash) = 32),
    sender              text NOT NULL,
    amount              numeric(78, 0) NOT NULL CHECK (amount >= 0),
    ledger_ref          bytea NOT NULL CHECK (length(ledger_ref) = 32),
    outcome             text CHECK (outcome IN ('CREDITED', 'SUSPENDED', 'DROPPED')),
    reason              text,
    credit_operation    bigint REFERENCES operations (id),
    suspense_operation  bigint REFERENCES operations (id),
    resolved_operation  bigint REFERENCES operations (id),
    recorded_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (chain_id, tx_hash, log_index),
    FOREIGN KEY (chain_id, token) REFERENCES bridge_tokens (chain_id, address),
    CHECK ((outcome = 'CREDITED') = (credit_operation IS NOT NULL)),
    CHECK (outcome IS NOT DISTINCT FROM 'SUSPENDED' OR suspense_operation IS NULL),
    CHECK ((outcome IS NOT DISTINCT FROM 'SUSPENDED') = (reason IS NOT NULL)),
    CHECK (resolved_operation IS NULL OR suspense_operation IS NOT NULL)
);
CREATE INDEX bridge_redemptions_pending ON bridge_redemptions (chain_id, token, block_number)
    WHERE outcome IS NULL;
CREATE INDEX bridge_redemptions_suspended ON bridge_redemptions (recorded_at)
    WHERE outcome = 'SUSPENDED';

CREATE TABLE bridge_cursors (
    chain_id    bigint NOT NULL,
    token       text NOT NULL,
    next_block  bigint NOT NULL CHECK (next_block >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (chain_id, token),
    FOREIGN KEY (chain_id, token) REFERENCES bridge_tokens (chain_id, address)
);

CREATE INDEX operations_redemption ON operations ((metadata -> 'redemption' ->> 'key'))
    WHERE type IN ('BRIDGE_IN', 'BRIDGE_IN_SUSPENSE', 'SUSPENSE_RESOLVED');
"""

DOWNGRADE = """
DROP INDEX operations_redemption;
DROP TABLE bridge_cursors;
DROP TABLE bridge_redemptions;
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
