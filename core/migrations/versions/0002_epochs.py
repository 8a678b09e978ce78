"""Epoch sealing, stored Merkle levels and anchors (issue 4).

Revision ID: 0002_epochs
Revises: 0001_ledger
Create Date: 2026-11-21

* ``epoch_roots``: per sealed epoch, the header fields, both roots and the header hash.
* ``epoch_trees`` / ``epoch_tree_levels``: each tree of a sealed epoch (tree 1 = ENTRY
  leaves, tree 2 = BALANCE leaves, the leaf kinds), stored as the rows of OpenZeppelin's node
  array (row d = array positions [2^d - 1, 2^(d+1) - 1), 32-byte nodes back to back), plus the
  leaf keys in input order (seq for entries, account id for balances, 8 bytes each) and each
  leaf's array position (4 bytes each). ``valueos_merkle_proof`` serves a proof from them in one
  call: binary search of the key, then one 32-byte slice per level (STORAGE EXTERNAL, so
  PostgreSQL reads only the slices, never the whole row).
* ``epoch_anchors``: the anchor state machine of each epoch
  (SEALED -> SIGNED -> BROADCAST -> CONFIRMED -> FINALIZED) with the raw signed transaction,
  its hash, nonce, block and chain coordinates; ``anchor_events`` keeps every transition.

Roots, trees and levels are append-only like the ledger itself.
"""

from core.migrations.sql import run_script

revision = "0002_epochs"
down_revision = "0001_ledger"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE epoch_roots (
    epoch          bigint PRIMARY KEY REFERENCES epochs (id),
    ledger_id      bytea NOT NULL CHECK (length(ledger_id) = 32),
    prev_header    bytea NOT NULL CHECK (length(prev_header) = 32),
    entries_root   bytea NOT NULL CHECK (length(entries_root) = 32),
    balances_root  bytea NOT NULL CHECK (length(balances_root) = 32),
    first_seq      bigint NOT NULL,
    last_seq       bigint NOT NULL,
    leaf_count     bigint NOT NULL,
    balance_count  bigint NOT NULL,
    cut_seq        bigint NOT NULL,
    header         bytea NOT NULL UNIQUE CHECK (length(header) = 32),
    computed_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE epoch_trees (
    epoch       bigint NOT NULL REFERENCES epoch_roots (epoch),
    tree        smallint NOT NULL CHECK (tree IN (1, 2)),
    leaf_count  bigint NOT NULL CHECK (leaf_count >= 0),
    root        bytea NOT NULL CHECK (length(root) = 32),
    keys        bytea NOT NULL CHECK (length(keys) = 8 * leaf_count),
    positions   bytea NOT NULL CHECK (length(positions) = 4 * leaf_count),
    PRIMARY KEY (epoch, tree)
);
ALTER TABLE epoch_trees ALTER COLUMN keys SET STORAGE EXTERNAL;
ALTER TABLE epoch_trees ALTER COLUMN positions SET STORAGE EXTERNAL;

CREATE TABLE epoch_tree_levels (
    epoch  bigint NOT NULL,
    tree   smallint NOT NULL,
    depth  integer NOT NULL CHECK (depth >= 0),
    nodes  bytea NOT NULL CHECK (length(nodes) % 32 = 0),
    PRIMARY KEY (epoch, tree, depth),
    FOREIGN KEY (epoch, tree) REFERENCES epoch_trees (epoch, tree)
);
ALTER TABLE epoch_tree_levels ALTER COLUMN nodes SET STORAGE EXTERNAL;

CREATE TABLE epoch_anchors (
    epoch             bigint PRIMARY KEY REFERENCES epoch_roots (epoch),
    status            text NOT NULL CHECK (status IN
                        ('SEALED', 'SIGNED', 'BROADCAST', 'CONFIRMED', 'FINALIZED')),
    chain_id          bigint,
    contract_address  text,
    sender            text,
    nonce             bigint,
    raw_tx            bytea,
    tx_hash           bytea,
    block_number      bigint,
    block_hash        bytea,
    gas_used          bigint,
    attempts          integer NOT NULL DEFAULT 0,
    last_error        text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    -- an anchor found on chain after a crash (by its event) has a tx hash but no raw bytes
    CHECK (status = 'SEALED' OR tx_hash IS NOT NULL),
    CHECK (status <> 'SIGNED' OR raw_tx IS NOT NULL),
    CHECK (status NOT IN ('CONFIRMED', 'FINALIZED') OR block_hash IS NOT NULL)
);
CREATE INDEX epoch_anchors_pending ON epoch_anchors (epoch) WHERE status <> 'FINALIZED';

CREATE TABLE anchor_events (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    epoch        bigint NOT NULL REFERENCES epoch_roots (epoch),
    at           timestamptz NOT NULL DEFAULT now(),
    from_status  text,
    to_status    text NOT NULL,
    tx_hash      bytea,
    detail       text
);
CREATE INDEX anchor_events_epoch ON anchor_events (epoch, id);

-- Node ``pos`` of a stored tree (array layout: row d holds positions [2^d - 1, 2^(d+1) - 1)).
CREATE FUNCTION valueos_tree_node(p_epoch bigint, p_tree smallint, p_pos bigint)
RETURNS bytea LANGUAGE plpgsql STABLE AS $$
DECLARE d integer := 0; start bigint := 0; out bytea;
BEGIN
    WHILE start + (1::bigint << d) <= p_pos LOOP
        start := start + (1::bigint << d);
        d := d + 1;
    END LOOP;
    SELECT substring(nodes FROM ((p_pos - start) * 32 + 1)::integer FOR 32) INTO out
    FROM epoch_tree_levels WHERE epoch = p_epoch AND tree = p_tree AND depth = d;
    RETURN out;
END $$;

-- The array position and the proof (siblings, leaf to root, concatenated) of the leaf whose
-- key is ``p_key``; no row when the tree has no such key.
CREATE FUNCTION valueos_merkle_proof(p_epoch bigint, p_tree smallint, p_key bigint)
RETURNS TABLE (leaf_index bigint, leaf_pos bigint, leaf bytea, proof bytea)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    n bigint; k bytea; p bytea; lo bigint := 0; hi bigint; mid bigint; pos bigint;
    acc bytea := '\\x';
    target bytea := int8send(p_key);
BEGIN
    SELECT t.leaf_count, t.keys, t.positions INTO n, k, p
    FROM epoch_trees t WHERE t.epoch = p_epoch AND t.tree = p_tree;
    IF n IS NULL OR n = 0 OR p_key < 0 THEN
        RETURN;
    END IF;
    hi := n;
    WHILE lo < hi LOOP
        mid := (lo + hi) / 2;
        IF substring(k FROM (mid * 8 + 1)::integer FOR 8) < target THEN
            lo := mid + 1;
        ELSE
            hi := mid;
        END IF;
    END LOOP;
    IF lo = n OR substring(k FROM (lo * 8 + 1)::integer FOR 8) <> target THEN
        RETURN;
    END IF;
    pos := ('x' || encode(substring(p FROM (lo * 4 + 1)::integer FOR 4), 'hex'))::bit(32)::bigint;
    leaf_index := lo;
    leaf_pos := pos;
    leaf := valueos_tree_node(p_epoch, p_tree, pos);
    WHILE pos > 0 LOOP
        acc := acc || valueos_tree_node(
            p_epoch, p_tree, CASE WHEN pos % 2 = 1 THEN pos + 1 ELSE pos - 1 END);
        pos := (pos - 1) / 2;
    END LOOP;
    proof := acc;
    RETURN NEXT;
END $$;
"""

APPEND_ONLY = ("epoch_roots", "epoch_trees", "epoch_tree_levels", "anchor_events")

TRIGGERS = "\n".join(
    f"""
CREATE TRIGGER {table}_no_change BEFORE UPDATE OR DELETE ON {table}
    FOR EACH ROW EXECUTE FUNCTION valueos_append_only();
CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}
    FOR EACH STATEMENT EXECUTE FUNCTION valueos_append_only();
"""
    for table in APPEND_ONLY
)

DOWNGRADE = """
DROP FUNCTION IF EXISTS valueos_merkle_proof(bigint, smallint, bigint);
DROP FUNCTION IF EXISTS valueos_tree_node(bigint, smallint, bigint);
DROP TABLE IF EXISTS anchor_events, epoch_anchors, epoch_tree_levels, epoch_trees, epoch_roots;
"""


def upgrade() -> None:
    run_script(UPGRADE + TRIGGERS)


def downgrade() -> None:
    run_script(DOWNGRADE)
