"""Ledger core: assets, accounts, balances, operations, entries, holds, epochs, audit.

Revision ID: 0001_ledger
Revises:
Create Date: 2026-11-21
"""

from alembic import op

from core.migrations.sql import statements

revision = "0001_ledger"
down_revision = None
branch_labels = None
depends_on = None

#: Key of the epoch advisory lock: writers hold it shared, the sealer exclusive.
EPOCH_LOCK_KEY = 0x76616C75656F7331  # "valueos1"

UPGRADE = f"""
CREATE TABLE users (
    id          uuid PRIMARY KEY,
    email       text UNIQUE,
    status      text NOT NULL DEFAULT 'ACTIVE' CHECK (status IN ('ACTIVE', 'SUSPENDED')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE assets (
    code        text PRIMARY KEY CHECK (code ~ '^[A-Z][A-Z0-9_]{{0,31}}$'),
    name        text NOT NULL,
    scale       smallint NOT NULL CHECK (scale BETWEEN 0 AND 18),
    kind        text NOT NULL CHECK (kind IN ('POINTS', 'MILES', 'FIAT_CREDIT', 'COLLATERAL')),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE accounts (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    asset       text NOT NULL REFERENCES assets (code),
    kind        text NOT NULL CHECK (kind IN
                  ('AVAILABLE', 'BLOCKED', 'LOCKED', 'CREDIT', 'COLLATERAL', 'VAULT', 'SYSTEM')),
    owner_id    uuid REFERENCES users (id),
    code        text,
    status      text NOT NULL DEFAULT 'ACTIVE' CHECK (status IN ('ACTIVE', 'FROZEN')),
    metadata    jsonb NOT NULL DEFAULT '{{}}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'SYSTEM') = (owner_id IS NULL)),
    CHECK (kind <> 'SYSTEM' OR code IS NOT NULL)
);
CREATE UNIQUE INDEX accounts_compartment_key ON accounts (owner_id, asset, kind)
    WHERE kind IN ('AVAILABLE', 'BLOCKED', 'LOCKED', 'CREDIT', 'COLLATERAL');
CREATE UNIQUE INDEX accounts_system_key ON accounts (asset, code) WHERE kind = 'SYSTEM';
CREATE INDEX accounts_owner ON accounts (owner_id);

-- The cached balance of every account. ``floor`` NULL means unbounded; the CHECK makes
-- the database itself refuse a write that breaks a floor, whatever the application does.
CREATE TABLE balances (
    account_id  bigint PRIMARY KEY REFERENCES accounts (id),
    posted      bigint NOT NULL DEFAULT 0,
    pending     bigint NOT NULL DEFAULT 0 CHECK (pending >= 0),
    floor       bigint DEFAULT 0,
    last_seq    bigint NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT balances_floor CHECK (floor IS NULL OR posted - pending >= floor)
) WITH (fillfactor = 70);

CREATE TABLE epochs (
    id          bigint PRIMARY KEY,
    status      text NOT NULL CHECK (status IN ('OPEN', 'SEALED')),
    opened_at   timestamptz NOT NULL DEFAULT now(),
    sealed_at   timestamptz
);
CREATE UNIQUE INDEX epochs_one_open ON epochs ((true)) WHERE status = 'OPEN';
INSERT INTO epochs (id, status) VALUES (1, 'OPEN');

-- Writers call this first in every transaction that adds entries: it takes the epoch
-- lock shared (held until commit) and only then reads the open epoch, so the sealer,
-- which takes the lock exclusively, can never close an epoch a writer is still adding to.
CREATE FUNCTION valueos_writer_epoch() RETURNS bigint LANGUAGE plpgsql VOLATILE AS $$
DECLARE e bigint;
BEGIN
    PERFORM pg_advisory_xact_lock_shared({EPOCH_LOCK_KEY});
    SELECT id INTO e FROM epochs WHERE status = 'OPEN';
    IF e IS NULL THEN
        RAISE EXCEPTION 'no open epoch';
    END IF;
    RETURN e;
END $$;

-- The first statement of a posting batch: epoch lock (shared), then every balance row the
-- batch touches locked in account-id order (the same order everywhere: no deadlocks).
CREATE FUNCTION valueos_lock_balances(ids bigint[])
RETURNS TABLE (epoch bigint, account_id bigint, asset text, floor bigint, status text,
               posted bigint, pending bigint)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE e bigint := valueos_writer_epoch();
BEGIN
    RETURN QUERY
        SELECT e, b.account_id, a.asset, b.floor, a.status, b.posted, b.pending
        FROM balances b JOIN accounts a ON a.id = b.account_id
        WHERE b.account_id = ANY(ids) ORDER BY b.account_id FOR UPDATE OF b;
END $$;

CREATE TABLE transactions (
    id                  uuid PRIMARY KEY,
    owner_id            uuid REFERENCES users (id),
    type                text NOT NULL CHECK (type IN ('DEPOSIT', 'WITHDRAWAL', 'INVESTMENT')),
    status              text NOT NULL CHECK (status IN
                          ('INITIATED', 'COMPLIANCE_REVIEW', 'AVAILABLE', 'FAILED', 'CANCELLED')),
    external_reference  text,
    metadata            jsonb NOT NULL DEFAULT '{{}}',
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX transactions_external_ref ON transactions (type, external_reference)
    WHERE external_reference IS NOT NULL;
CREATE INDEX transactions_owner ON transactions (owner_id);

CREATE SEQUENCE operations_id_seq;
CREATE TABLE operations (
    id               bigint PRIMARY KEY,
    type             text NOT NULL,
    status           text NOT NULL CHECK (status IN ('COMPLETED', 'FAILED')),
    epoch            bigint REFERENCES epochs (id),
    idempotency_key  text,
    actor_id         text NOT NULL,
    actor_role       text NOT NULL,
    transaction_id   uuid REFERENCES transactions (id),
    reverses_id      bigint UNIQUE REFERENCES operations (id),
    hold_id          bigint,
    reason           text,
    error            jsonb,
    metadata         jsonb NOT NULL DEFAULT '{{}}',
    created_at       timestamptz NOT NULL,
    CHECK ((status = 'COMPLETED') = (epoch IS NOT NULL))
);
CREATE INDEX operations_transaction ON operations (transaction_id)
    WHERE transaction_id IS NOT NULL;
CREATE INDEX operations_key ON operations (idempotency_key) WHERE idempotency_key IS NOT NULL;

-- Global order of entries. No CACHE: values must rise in allocation order across sessions.
CREATE SEQUENCE ledger_seq CACHE 1;
CREATE TABLE ledger_entries (
    seq            bigint PRIMARY KEY,
    operation_id   bigint NOT NULL REFERENCES operations (id),
    account_id     bigint NOT NULL REFERENCES accounts (id),
    asset          text NOT NULL,
    amount         bigint NOT NULL CHECK (amount <> 0),
    balance_after  bigint NOT NULL,
    epoch          bigint NOT NULL,
    created_at     timestamptz NOT NULL
);
CREATE INDEX ledger_entries_account_seq ON ledger_entries (account_id, seq)
    INCLUDE (balance_after, created_at);
CREATE INDEX ledger_entries_operation ON ledger_entries (operation_id);
CREATE INDEX ledger_entries_epoch ON ledger_entries (epoch, seq);

CREATE SEQUENCE holds_id_seq;
CREATE TABLE holds (
    id               bigint PRIMARY KEY,
    source_id        bigint NOT NULL REFERENCES accounts (id),
    destination_id   bigint NOT NULL REFERENCES accounts (id),
    asset            text NOT NULL,
    amount           bigint NOT NULL CHECK (amount > 0),
    remaining        bigint NOT NULL CHECK (remaining >= 0 AND remaining <= amount),
    captured         bigint NOT NULL DEFAULT 0 CHECK (captured >= 0 AND captured <= amount),
    status           text NOT NULL CHECK (status IN ('PENDING', 'POSTED', 'VOIDED', 'EXPIRED')),
    expires_at       timestamptz NOT NULL,
    idempotency_key  text,
    actor_id         text NOT NULL,
    metadata         jsonb NOT NULL DEFAULT '{{}}',
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    CHECK ((status = 'PENDING') = (remaining > 0))
);
CREATE INDEX holds_pending_expiry ON holds (expires_at) WHERE status = 'PENDING';
CREATE INDEX holds_pending_source ON holds (source_id) WHERE status = 'PENDING';

-- Idempotency: one row per key, with the request's hash and the outcome (result or error).
CREATE TABLE idempotency_keys (
    key           text PRIMARY KEY,
    request_hash  bytea NOT NULL,
    outcome       jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE audit_log (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT now(),
    actor_id     text NOT NULL,
    actor_role   text NOT NULL,
    ip           text,
    action       text NOT NULL,
    entity_type  text NOT NULL,
    entity_id    text,
    before       jsonb,
    after        jsonb,
    reason       text
);
CREATE INDEX audit_log_entity ON audit_log (entity_type, entity_id);
CREATE INDEX audit_log_actor ON audit_log (actor_id, at);

-- Append-only tables: the database itself rejects UPDATE, DELETE and TRUNCATE.
CREATE FUNCTION valueos_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % rejected', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'VO001', HINT = 'post a reversal or adjustment operation instead';
END $$;
"""

APPEND_ONLY = ("ledger_entries", "operations", "audit_log")


def upgrade() -> None:
    for statement in statements(UPGRADE):
        op.execute(statement)
    for table in APPEND_ONLY:
        op.execute(
            f"CREATE TRIGGER {table}_no_change BEFORE UPDATE OR DELETE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION valueos_append_only()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION valueos_append_only()"
        )


def downgrade() -> None:
    op.execute(
        "DROP TABLE audit_log, idempotency_keys, holds, ledger_entries, operations, "
        "transactions, epochs, balances, accounts, assets, users CASCADE"
    )
    op.execute("DROP SEQUENCE IF EXISTS holds_id_seq, ledger_seq, operations_id_seq")
    op.execute(
        "DROP FUNCTION IF EXISTS valueos_append_only(), valueos_lock_balances(bigint[]), "
        "valueos_writer_epoch()"
    )
