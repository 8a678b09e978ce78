"""API credentials: user roles, API keys, HTTP idempotency records (issue 3).

Revision ID: 0003_auth
Revises: 0002_epochs
Create Date: 2026-11-21
"""

from core.migrations.sql import run_script

revision = "0003_auth"
down_revision = "0002_epochs"
branch_labels = None
depends_on = None

ROLES = "('USER', 'ADMIN', 'COMPLIANCE', 'OPS', 'READ_ONLY', 'AUDITOR')"

UPGRADE = f"""
-- One role per user (staff are users too). Existing users are plain USERs.
ALTER TABLE users ADD COLUMN role text NOT NULL DEFAULT 'USER' CHECK (role IN {ROLES});

-- API keys for POS terminals and services. Only the sha256 of the secret is stored;
-- the key shown once to its owner is "vo_<id>_<secret>".
CREATE TABLE api_keys (
    id           text PRIMARY KEY CHECK (id ~ '^[a-f0-9]{{16}}$'),
    user_id      uuid NOT NULL REFERENCES users (id),
    name         text NOT NULL,
    role         text NOT NULL CHECK (role IN {ROLES}),
    scopes       text[] NOT NULL,
    secret_hash  bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    revoked_at   timestamptz
);
CREATE INDEX api_keys_user ON api_keys (user_id);

-- HTTP idempotency: one row per (client, Idempotency-Key). ``request_hash`` is the hash
-- of method, path and canonical body; ``pinned`` keeps values the API derived at the
-- first attempt (e.g. a hold's deadline) so a replay rebuilds the very same command;
-- ``status``/``response`` are NULL while the first attempt is in flight.
CREATE TABLE api_idempotency (
    client        text NOT NULL,
    key           text NOT NULL,
    request_hash  bytea NOT NULL,
    pinned        jsonb NOT NULL DEFAULT '{{}}',
    status        integer,
    response      jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    completed_at  timestamptz,
    PRIMARY KEY (client, key)
);
"""

DOWNGRADE = """
DROP TABLE api_idempotency;
DROP TABLE api_keys;
ALTER TABLE users DROP COLUMN role;
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
