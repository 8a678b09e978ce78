"""Vaults with member roles and P2P requests (issue 3).

A vault is an account of kind VAULT; ``vaults`` holds its name and ``vault_members``
who may do what with it (OWNER manages members and moves funds, CONTRIBUTOR moves
funds in and out, VIEWER reads). ``p2p_requests`` is the state machine of a request
for funds; the database itself refuses a transition the machine does not allow.

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
CREATE TABLE vaults (
    account_id  bigint PRIMARY KEY REFERENCES accounts (id),
    owner_id    uuid NOT NULL REFERENCES users (id),
    asset       text NOT NULL REFERENCES assets (code),
    name        text NOT NULL CHECK (length(btrim(name)) BETWEEN 1 AND 100),
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT vaults_name_key UNIQUE (owner_id, asset, name)
);

CREATE TABLE vault_members (
    vault_id    bigint NOT NULL REFERENCES vaults (account_id),
    user_id     uuid NOT NULL REFERENCES users (id),
    role        text NOT NULL CHECK (role IN ('OWNER', 'CONTRIBUTOR', 'VIEWER')),
    added_by    text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (vault_id, user_id)
);
CREATE INDEX vault_members_user ON vault_members (user_id);

CREATE TABLE p2p_requests (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    requester_id     uuid NOT NULL REFERENCES users (id),
    payer_id         uuid NOT NULL REFERENCES users (id),
    asset            text NOT NULL REFERENCES assets (code),
    amount           bigint NOT NULL CHECK (amount > 0),
    memo             text CHECK (memo IS NULL OR length(memo) <= 280),
    status           text NOT NULL DEFAULT 'PENDING' CHECK (status IN
                       ('PENDING', 'SETTLING', 'SETTLED', 'DECLINED', 'CANCELLED', 'EXPIRED')),
    expires_at       timestamptz,
    -- settlement attempt number, part of the posting's idempotency key
    attempt          integer NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    operation_id     bigint UNIQUE REFERENCES operations (id),
    last_error       jsonb,
    idempotency_key  text,
    request_hash     bytea,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (requester_id <> payer_id),
    CHECK ((status = 'SETTLED') = (operation_id IS NOT NULL))
);
CREATE UNIQUE INDEX p2p_requests_key ON p2p_requests (requester_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX p2p_requests_requester ON p2p_requests (requester_id, id);
CREATE INDEX p2p_requests_payer ON p2p_requests (payer_id, id);
CREATE INDEX p2p_requests_due ON p2p_requests (expires_at)
    WHERE status = 'PENDING' AND expires_at IS NOT NULL;
CREATE INDEX p2p_requests_settling ON p2p_requests (updated_at) WHERE status = 'SETTLING';

-- The request state machine, enforced by the database whatever the application does:
-- PENDING -> SETTLING | DECLINED | CANCELLED | EXPIRED; SETTLING -> SETTLED | PENDING
-- (a failed attempt, with attempt + 1); terminal states never change; the parties, asset
-- and amount of a request never change.
CREATE FUNCTION valueos_p2p_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.requester_id <> OLD.requester_id OR NEW.payer_id <> OLD.payer_id
       OR NEW.asset <> OLD.asset OR NEW.amount <> OLD.amount THEN
        RAISE EXCEPTION 'p2p request %: parties, asset and amount are immutable', OLD.id
            USING ERRCODE = 'VO002';
    END IF;
    IF NEW.status = OLD.status THEN
        IF OLD.status = 'PENDING' AND NEW.attempt = OLD.attempt
           AND NEW.operation_id IS NOT DISTINCT FROM OLD.operation_id THEN
            RETURN NEW;
        END IF;
    ELSIF (OLD.status = 'PENDING'
           AND NEW.status IN ('SETTLING', 'DECLINED', 'CANCELLED', 'EXPIRED')
           AND NEW.attempt = OLD.attempt)
       OR (OLD.status = 'SETTLING' AND NEW.status = 'SETTLED' AND NEW.attempt = OLD.attempt)
       OR (OLD.status = 'SETTLING' AND NEW.status = 'PENDING'
           AND NEW.attempt = OLD.attempt + 1) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'p2p request %: % -> % (attempt % -> %) is not allowed',
        OLD.id, OLD.status, NEW.status, OLD.attempt, NEW.attempt
        USING ERRCODE = 'VO002';
END $$;

CREATE TRIGGER p2p_requests_transition BEFORE UPDATE ON p2p_requests
    FOR EACH ROW EXECUTE FUNCTION valueos_p2p_transition();
CREATE TRIGGER p2p_requests_no_delete BEFORE DELETE ON p2p_requests
    FOR EACH ROW EXECUTE FUNCTION valueos_append_only();
"""

DOWNGRADE = """
DROP TABLE IF EXISTS p2p_requests, vault_members, vaults;
DROP FUNCTION IF EXISTS valueos_p2p_transition();
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
