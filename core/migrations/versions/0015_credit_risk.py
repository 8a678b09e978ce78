"""Credit lines against crypto collateral: risk parameters, prices, lines, risk events,
interest accruals, repayments and the payment provider's webhook replay guard.

``risk_parameters`` are versioned per collateral asset like policies (DRAFT -> ACTIVE ->
RETIRED, one ACTIVE per asset); ratios are basis points, money is debt-asset minor units.
``price_rounds`` keeps every round each source reported (PRIMARY KEY per source and round: a
round is recorded once); ``risk_assets`` holds the accepted price of a collateral asset and
whether it is frozen (and why). ``credit_lines`` ties a user's credit account (floor = -limit),
collateral account and cushion account together; the risk loop locks a line's row to act on it,
and so do repayments and withdrawals. ``risk_events`` is what the loop did (and the margin
calls it sent, with their delivery state). ``interest_accruals`` makes interest once per line
and day. ``repayments`` and ``provider_events`` (one row per webhook event id) are the fiat
side.

Revision ID: 0015_credit_risk
Revises: 0014_stellar_bridge
Create Date: 2026-11-29
"""

from core.migrations.sql import run_script

revision = "0015_credit_risk"
down_revision = "0014_stellar_bridge"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE risk_parameters (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    asset                text NOT NULL REFERENCES assets (code),
    debt_asset           text NOT NULL REFERENCES assets (code),
    version              integer NOT NULL,
    status               text NOT NULL CHECK (status IN ('DRAFT', 'ACTIVE', 'RETIRED')),
    initial_bps          integer NOT NULL,
    margin_call_bps      integer NOT NULL,
    partial_bps          integer NOT NULL,
    full_bps             integer NOT NULL CHECK (full_bps <= 10000),
    target_bps           integer NOT NULL,
    penalty_bps          integer NOT NULL,
    close_factor_bps     integer NOT NULL,
    close_factor_hf_bps  integer NOT NULL,
    close_factor_min     bigint NOT NULL,
    min_leftover         bigint NOT NULL,
    ewma_lambda          numeric NOT NULL,
    z                    numeric NOT NULL,
    horizon_periods      integer NOT NULL,
    haircut_floor_bps    integer NOT NULL,
    haircut_ceiling_bps  integer NOT NULL,
    haircut_bps          integer NOT NULL,
    buffer               bigint NOT NULL CHECK (buffer >= 0),
    apr_bps              integer NOT NULL CHECK (apr_bps >= 0),
    heartbeat_s          integer NOT NULL CHECK (heartbeat_s > 0),
    max_divergence_bps   integer NOT NULL CHECK (max_divergence_bps > 0),
    created_by           text NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now(),
    activated_at         timestamptz,
    UNIQUE (asset, version),
    CHECK (0 < initial_bps AND initial_bps < margin_call_bps AND margin_call_bps < partial_bps
           AND partial_bps < full_bps),
    CHECK (0 < target_bps AND target_bps < partial_bps AND target_bps < 10000 - penalty_bps)
);
CREATE UNIQUE INDEX risk_parameters_one_active ON risk_parameters (asset)
    WHERE status = 'ACTIVE';

CREATE TABLE risk_assets (
    asset           text PRIMARY KEY REFERENCES assets (code),
    price_answer    numeric(78, 0),
    price_decimals  smallint,
    price_at        timestamptz,
    price_source    text,
    frozen          boolean NOT NULL DEFAULT true,
    frozen_reason   text DEFAULT 'NO_PRICE',
    updated_at      timestamptz NOT NULL DEFAULT now(),
    -- the updated_at the credit limits of the asset's lines were last computed for
    limits_at       timestamptz,
    CHECK (frozen = (frozen_reason IS NOT NULL)),
    CHECK (price_answer IS NULL OR price_answer > 0)
);

CREATE TABLE price_rounds (
    asset        text NOT NULL REFERENCES assets (code),
    source       text NOT NULL,
    round_id     numeric(78, 0) NOT NULL,
    answer       numeric(78, 0) NOT NULL,
    decimals     smallint NOT NULL,
    updated_at   timestamptz NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    verdict      text NOT NULL,
    PRIMARY KEY (asset, source, round_id)
);
CREATE INDEX price_rounds_history ON price_rounds (asset, updated_at);

CREATE TABLE credit_lines (
    id                     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner_id               uuid NOT NULL REFERENCES users (id),
    debt_asset             text NOT NULL REFERENCES assets (code),
    collateral_asset       text NOT NULL REFERENCES assets (code),
    credit_account_id      bigint NOT NULL UNIQUE REFERENCES accounts (id),
    collateral_account_id  bigint NOT NULL REFERENCES accounts (id),
    cushion_account_id     bigint NOT NULL REFERENCES accounts (id),
    available_account_id   bigint NOT NULL REFERENCES accounts (id),
    credit_limit           bigint NOT NULL DEFAULT 0 CHECK (credit_limit >= 0),
    stop_loss_answer       numeric(78, 0) CHECK (stop_loss_answer > 0),
    notified_at            timestamptz,
    interest_carry         numeric(78, 0) NOT NULL DEFAULT 0,
    status                 text NOT NULL DEFAULT 'OPEN' CHECK (status IN ('OPEN', 'CLOSED')),
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    UNIQUE (owner_id, collateral_asset, debt_asset)
);
CREATE INDEX credit_lines_open ON credit_lines (collateral_asset) WHERE status = 'OPEN';

CREATE TABLE risk_events (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    line_id       bigint NOT NULL REFERENCES credit_lines (id),
    kind          text NOT NULL,
    tick          bigint,
    operation_id  bigint REFERENCES operations (id),
    details       jsonb NOT NULL DEFAULT '{}',
    delivered_at  timestamptz,
    attempts      integer NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (line_id, tick)
);
CREATE INDEX risk_events_line ON risk_events (line_id, id);
CREATE INDEX risk_events_undelivered ON risk_events (id)
    WHERE kind = 'NOTIFY' AND delivered_at IS NULL;

CREATE TABLE interest_accruals (
    line_id       bigint NOT NULL REFERENCES credit_lines (id),
    day           date NOT NULL,
    amount        bigint NOT NULL CHECK (amount >= 0),
    operation_id  bigint REFERENCES operations (id),
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (line_id, day)
);

CREATE TABLE repayments (
    id            uuid PRIMARY KEY,
    line_id       bigint NOT NULL REFERENCES credit_lines (id),
    amount        bigint NOT NULL CHECK (amount > 0),
    method        text NOT NULL,
    status        text NOT NULL CHECK (status IN ('INITIATED', 'SUCCEEDED', 'FAILED')),
    provider_ref  text UNIQUE,
    operation_id  bigint REFERENCES operations (id),
    repaid        bigint,
    overpaid      bigint,
    created_by    text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CHECK ((status = 'SUCCEEDED') = (operation_id IS NOT NULL))
);
CREATE INDEX repayments_line ON repayments (line_id, created_at);

CREATE TABLE provider_events (
    event_id     text PRIMARY KEY,
    kind         text NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now()
);
"""

DOWNGRADE = """
DROP TABLE provider_events, repayments, interest_accruals, risk_events, credit_lines,
    price_rounds, risk_assets, risk_parameters;
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
