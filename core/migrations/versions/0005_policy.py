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
-- Claims about users. Current claims: unrevoked and (no expiry or expiry in the future);
-- for one (subject, claim) the latest issued wins.
CREATE TABLE attestations (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subject_id     uuid NOT NULL REFERENCES users (id),
    claim          text NOT NULL CHECK (claim ~ '^[a-z][a-z0-9_]*(\\.[a-z][a-z0-9_]*)*$'
                                        AND length(claim) <= 64),
    value          jsonb NOT NULL,
    issuer         text NOT NULL,
    evidence_hash  text NOT NULL,
    issued_at      timestamptz NOT NULL,
    expires_at     timestamptz,
    issued_by      text NOT NULL,
    revoked_at     timestamptz,
    revoked_by     text,
    revoke_reason  text,
    CHECK (expires_at IS NULL OR expires_at > issued_at),
    CHECK ((revoked_at IS NULL) = (revoked_by IS NULL))
);
CREATE INDEX attestations_current ON attestations (subject_id, claim, issued_at DESC, id DESC)
    INCLUDE (value, expires_at) WHERE revoked_at IS NULL;

-- Versioned policy documents, one ACTIVE version per (asset, operation type).
CREATE TABLE policies (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    asset           text NOT NULL REFERENCES assets (code),
    operation_type  text NOT NULL,
    version         integer NOT NULL CHECK (version > 0),
    document        jsonb NOT NULL,
    status          text NOT NULL CHECK (status IN ('DRAFT', 'ACTIVE', 'RETIRED')),
    fee_account_id  bigint REFERENCES accounts (id),
    created_by      text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    activated_at    timestamptz,
    UNIQUE (asset, operation_type, version)
);
CREATE UNIQUE INDEX policies_one_active ON policies (asset, operation_type)
    WHERE status = 'ACTIVE';

-- Bumped by every activation: writers compare it with their cached policies.
CREATE TABLE policy_state (
    id          boolean PRIMARY KEY DEFAULT true CHECK (id),
    generation  bigint NOT NULL
);
INSERT INTO policy_state VALUES (true, 0);

CREATE FUNCTION valueos_policy_generation() RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT generation FROM policy_state
$$;

-- Which policy versions allowed an operation: [{"policy_id": .., "version": ..}, ..]
ALTER TABLE operations ADD COLUMN policy_versions jsonb;

-- Rolling-window limits. One lock row per (user, asset, operation type): a batch locks
-- its rows (sorted, after the balance rows) before reading the usage, so two
-- transactions can never both fit under a limit only one fits. Usage is kept in
-- one-hour buckets.
CREATE TABLE policy_limit_locks (
    user_id         uuid NOT NULL,
    asset           text NOT NULL,
    operation_type  text NOT NULL,
    PRIMARY KEY (user_id, asset, operation_type)
);
CREATE TABLE policy_usage (
    user_id         uuid NOT NULL,
    asset           text NOT NULL,
    operation_type  text NOT NULL,
    bucket          timestamptz NOT NULL,
    count           bigint NOT NULL,
    amount          bigint NOT NULL,
    PRIMARY KEY (user_id, asset, operation_type, bucket)
);

CREATE FUNCTION valueos_lock_limits(users uuid[], assets text[], ops text[], since timestamptz)
RETURNS TABLE (user_id uuid, asset text, operation_type text, bucket timestamptz,
               count bigint, amount bigint)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    INSERT INTO policy_limit_locks
        SELECT DISTINCT k.u, k.a, k.o FROM unnest(users, assets, ops) AS k(u, a, o)
        ORDER BY 1, 2, 3
    ON CONFLICT DO NOTHING;
    PERFORM 1 FROM policy_limit_locks l
        JOIN (SELECT DISTINCT * FROM unnest(users, assets, ops)) AS k(u, a, o)
          ON l.user_id = k.u AND l.asset = k.a AND l.operation_type = k.o
        ORDER BY l.user_id, l.asset, l.operation_type
        FOR UPDATE OF l;
    RETURN QUERY
        SELECT p.user_id, p.asset, p.operation_type, p.bucket, p.count, p.amount
        FROM policy_usage p
        JOIN (SELECT DISTINCT * FROM unnest(users, assets, ops)) AS k(u, a, o)
          ON p.user_id = k.u AND p.asset = k.a AND p.operation_type = k.o
        WHERE p.bucket >= since;
END $$;
"""

DOWNGRADE = """
DROP FUNCTION IF EXISTS valueos_lock_limits(uuid[], text[], text[], timestamptz);
DROP FUNCTION IF EXISTS valueos_policy_generation();
DROP TABLE IF EXISTS policy_usage, policy_limit_locks, policy_state, policies, attestations;
ALTER TABLE operations DROP COLUMN IF EXISTS policy_versions;
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
