"""The on-chain transaction outbox, shared by anchoring and the bridges.

* ``chain_txs``: one row per intent (``purpose`` + ``ref``, e.g. ``anchor`` / ``7``): the call
  (``to_address``, ``data``, ``value_wei``) and the state of the transaction that carries it
  (BUILT -> SIGNED -> BROADCAST -> CONFIRMED -> FINALIZED; FAILED when mined but reverted;
  REJECTED when the node says the call reverts before anything is signed; BATCHED while
  another row's transaction carries its call: ``carrier_id``, e.g. one ``mintBatch`` for
  many bridge-out mints).
  The raw signed bytes are stored before any broadcast. A nonce belongs to one row per
  (chain, sender): the unique index is the database's own guard against a nonce used twice.
* ``chain_tx_events``: every transition, with the transaction hash current after it (so the
  hashes a fee bump replaced stay known).
* ``epoch_anchors`` keeps what belongs to the epoch (its outbox row, a conflict found on the
  chain); the transaction columns move to ``chain_txs``. The view ``anchor_state`` shows an
  anchor as before: SEALED while its transaction is not signed (none, BUILT or FAILED), else
  the transaction's status.

Anchors signed before this revision move into ``chain_txs`` with empty call data: if one of
them must be signed again (nonce taken, reverted), the anchor job supplies the call anew.

Revision ID: 0010_chain_outbox
Revises: 0009_policy_usage_pruning
Create Date: 2026-11-29
"""

from core.migrations.sql import run_script

revision = "0010_chain_outbox"
down_revision = "0009_policy_usage_pruning"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE chain_txs (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    purpose       text NOT NULL,
    ref           text NOT NULL,
    chain_id      bigint NOT NULL,
    sender        text,
    to_address    text NOT NULL,
    data          bytea NOT NULL,
    value_wei     numeric(78, 0) NOT NULL DEFAULT 0 CHECK (value_wei >= 0),
    status        text NOT NULL CHECK (status IN
                    ('BUILT', 'SIGNED', 'BROADCAST', 'CONFIRMED', 'FINALIZED', 'FAILED',
                     'REJECTED', 'BATCHED')),
    nonce         bigint CHECK (nonce >= 0),
    raw_tx        bytea,
    tx_hash       bytea,
    block_number  bigint,
    block_hash    bytea,
    gas_used      bigint,
    carrier_id    bigint REFERENCES chain_txs (id),
    attempts      integer NOT NULL DEFAULT 0,
    last_error    text,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (purpose, ref),
    CHECK (nonce IS NULL OR sender IS NOT NULL),
    -- a transaction adopted from the chain (found by its event) has a hash but no raw bytes
    CHECK (status IN ('BUILT', 'REJECTED', 'BATCHED') OR tx_hash IS NOT NULL),
    CHECK (status <> 'BATCHED' OR carrier_id IS NOT NULL),
    CHECK (status <> 'SIGNED' OR (raw_tx IS NOT NULL AND nonce IS NOT NULL)),
    CHECK (status NOT IN ('CONFIRMED', 'FINALIZED', 'FAILED') OR block_hash IS NOT NULL)
);
CREATE UNIQUE INDEX chain_txs_nonce ON chain_txs (chain_id, sender, nonce)
    WHERE nonce IS NOT NULL;
CREATE INDEX chain_txs_unfinished ON chain_txs (purpose, id)
    WHERE status NOT IN ('FINALIZED', 'FAILED', 'REJECTED');
CREATE INDEX chain_txs_carried ON chain_txs (carrier_id) WHERE status = 'BATCHED';

CREATE TABLE chain_tx_events (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tx_id        bigint NOT NULL REFERENCES chain_txs (id),
    at           timestamptz NOT NULL DEFAULT clock_timestamp(),
    from_status  text,
    to_status    text NOT NULL,
    tx_hash      bytea,
    detail       text
);
CREATE INDEX chain_tx_events_tx ON chain_tx_events (tx_id, id);

ALTER TABLE epoch_anchors ADD COLUMN tx_id bigint UNIQUE REFERENCES chain_txs (id);

INSERT INTO chain_txs (purpose, ref, chain_id, sender, to_address, data, status, nonce, raw_tx,
                       tx_hash, block_number, block_hash, gas_used, attempts, last_error,
                       created_at, updated_at)
SELECT 'anchor', epoch::text, chain_id, sender, contract_address, '\\x'::bytea, status, nonce,
       raw_tx, tx_hash, block_number, block_hash, gas_used, attempts, last_error, created_at,
       updated_at
FROM epoch_anchors WHERE status <> 'SEALED';
UPDATE epoch_anchors a SET tx_id = t.id, last_error = NULL
FROM chain_txs t WHERE t.purpose = 'anchor' AND t.ref = a.epoch::text;
INSERT INTO chain_tx_events (tx_id, at, from_status, to_status, tx_hash, detail)
SELECT t.id, e.at, e.from_status, e.to_status, e.tx_hash, e.detail
FROM anchor_events e JOIN chain_txs t ON t.purpose = 'anchor' AND t.ref = e.epoch::text
WHERE e.to_status <> 'SEALED' OR e.from_status IS NOT NULL
ORDER BY e.id;

DROP INDEX epoch_anchors_pending;
ALTER TABLE epoch_anchors
    DROP COLUMN status, DROP COLUMN chain_id, DROP COLUMN contract_address, DROP COLUMN sender,
    DROP COLUMN nonce, DROP COLUMN raw_tx, DROP COLUMN tx_hash, DROP COLUMN block_number,
    DROP COLUMN block_hash, DROP COLUMN gas_used, DROP COLUMN attempts;

CREATE VIEW anchor_state AS
SELECT a.epoch,
       CASE WHEN t.status IS NULL OR t.status IN ('BUILT', 'FAILED', 'REJECTED') THEN 'SEALED'
            ELSE t.status END AS status,
       t.id AS tx_id, t.chain_id, t.to_address AS contract_address, t.sender, t.nonce,
       t.raw_tx, t.tx_hash, t.block_number, t.block_hash, t.gas_used,
       COALESCE(t.attempts, 0) AS attempts,
       COALESCE(a.last_error, t.last_error) AS last_error,
       GREATEST(a.updated_at, t.updated_at) AS updated_at
FROM epoch_anchors a LEFT JOIN chain_txs t ON t.id = a.tx_id;
"""

DOWNGRADE = """
DROP VIEW anchor_state;
ALTER TABLE epoch_anchors
    ADD COLUMN status text NOT NULL DEFAULT 'SEALED' CHECK (status IN
        ('SEALED', 'SIGNED', 'BROADCAST', 'CONFIRMED', 'FINALIZED')),
    ADD COLUMN chain_id bigint, ADD COLUMN contract_address text, ADD COLUMN sender text,
    ADD COLUMN nonce bigint, ADD COLUMN raw_tx bytea, ADD COLUMN tx_hash bytea,
    ADD COLUMN block_number bigint, ADD COLUMN block_hash bytea, ADD COLUMN gas_used bigint,
    ADD COLUMN attempts integer NOT NULL DEFAULT 0;
UPDATE epoch_anchors a SET
    status = CASE WHEN t.status IN ('BUILT', 'FAILED', 'REJECTED') THEN 'SEALED'
                  ELSE t.status END,
    chain_id = t.chain_id, contract_address = t.to_address, sender = t.sender, nonce = t.nonce,
    raw_tx = t.raw_tx, tx_hash = t.tx_hash, block_number = t.block_number,
    block_hash = t.block_hash, gas_used = t.gas_used, attempts = t.attempts
FROM chain_txs t WHERE t.id = a.tx_id AND t.status NOT IN ('BUILT', 'FAILED', 'REJECTED');
CREATE INDEX epoch_anchors_pending ON epoch_anchors (epoch) WHERE status <> 'FINALIZED';
ALTER TABLE epoch_anchors DROP COLUMN tx_id;
DROP TABLE chain_tx_events;
DROP TABLE chain_txs;
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
