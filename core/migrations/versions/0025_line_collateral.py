"""Credit lines holding several collateral assets.

A line keeps its own collateral asset and account (``credit_lines.collateral_asset`` and
``collateral_account_id``, whose parameters give the line's debt asset, buffer, APR and the
position's sale rules); ``credit_line_collateral`` holds the further assets it was given, each
in its own COLLATERAL account, with its own stop-loss. ``credit_lines.multi_collateral`` marks a
line with any: the value of such a line depends on several prices, so its row in
``credit_line_triggers`` (one price per line) is kept closed and the line has a row in
``credit_line_multi`` instead.

``credit_line_multi``: per line of several assets, its exposure, its margin-call capacity
``cap_ref`` = sum of floor(value_i) * margin_call_i computed at the **reference** prices of
``risk_multi_basis`` (one answer, decimals and parameter version per asset, taken together by
a rebase), and ``key`` = floor((exposure + holdings) * 10^4 * 10^20 / cap_ref) + 1 (-Infinity
without exposure; +Infinity when a held asset has no reference or the capacity is 0). If every
asset's price is at least ``m`` times its reference, each rounded-down value is more than
``m * value_ref - 1``, so a line over its margin call has ``key > m * 10^20``: the tick reads
the lines with ``key >= floor(m * 10^20)`` through an index and checks only those exactly
(``core.risk.loop``). The rows are kept like the trigger rows: the further collateral accounts
are marked with ``balances.credit_line_id`` too, and ``valueos_risk_recompute`` updates both
kinds of row, in line order, from balances read after the row locks.

A user may now hold several COLLATERAL accounts of one asset (the line's own wBTC, and wBTC
given to another line): the accounts belong to their lines, which the two tables record with
UNIQUE account ids.

Revision ID: 0025_line_collateral
Revises: 0024_commitments_by_epoch
Create Date: 2026-12-07
"""

from core.migrations.sql import run_script

revision = "0025_line_collateral"
down_revision = "0024_commitments_by_epoch"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE credit_lines ADD COLUMN multi_collateral boolean NOT NULL DEFAULT false;

CREATE TABLE credit_line_collateral (
    line_id           bigint NOT NULL REFERENCES credit_lines (id),
    asset             text NOT NULL REFERENCES assets (code),
    account_id        bigint NOT NULL UNIQUE REFERENCES accounts (id),
    stop_loss_answer  numeric(78, 0) CHECK (stop_loss_answer > 0),
    created_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (line_id, asset)
);
CREATE INDEX credit_line_collateral_asset ON credit_line_collateral (asset, line_id);
CREATE INDEX credit_line_collateral_stops ON credit_line_collateral (asset, stop_loss_answer)
    INCLUDE (line_id) WHERE stop_loss_answer IS NOT NULL;
CREATE INDEX credit_lines_multi ON credit_lines (id) WHERE multi_collateral;
CREATE INDEX credit_lines_multi_stops ON credit_lines (collateral_asset, stop_loss_answer)
    INCLUDE (id) WHERE multi_collateral AND stop_loss_answer IS NOT NULL;

DROP INDEX accounts_compartment_key;
CREATE UNIQUE INDEX accounts_compartment_key ON accounts (owner_id, asset, kind)
    WHERE kind IN ('AVAILABLE', 'BLOCKED', 'LOCKED', 'CREDIT');

CREATE TABLE risk_multi_basis (
    asset      text PRIMARY KEY REFERENCES assets (code),
    answer     numeric(78, 0),
    decimals   smallint,
    params_id  bigint REFERENCES risk_parameters (id)
);
CREATE TABLE risk_multi_state (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    generation  bigint NOT NULL,
    complete    boolean NOT NULL
);
INSERT INTO risk_multi_state VALUES (true, 0, true);

CREATE TABLE credit_line_multi (
    line_id   bigint PRIMARY KEY REFERENCES credit_lines (id),
    open      boolean NOT NULL,
    exposure  bigint NOT NULL,
    cap_ref   numeric NOT NULL,
    holdings  integer NOT NULL,
    key       numeric NOT NULL
);
CREATE INDEX credit_line_multi_due ON credit_line_multi (key) INCLUDE (line_id) WHERE open;

-- the rows of ``ids`` (lines of several assets) as their balances and the basis give them now
CREATE FUNCTION valueos_risk_multi_rows(ids bigint[])
RETURNS TABLE (line_id bigint, open boolean, exposure bigint, cap_ref numeric,
               holdings integer, key numeric)
LANGUAGE sql STABLE AS $$
    WITH h AS (
        SELECT l.id AS line_id, l.debt_asset, l.collateral_asset AS asset,
               l.collateral_account_id AS account_id
        FROM credit_lines l WHERE l.id = ANY(ids)
        UNION ALL
        SELECT x.line_id, l.debt_asset, x.asset, x.account_id
        FROM credit_line_collateral x JOIN credit_lines l ON l.id = x.line_id
        WHERE x.line_id = ANY(ids)
    ), v AS (
        SELECT h.line_id, count(*)::integer AS n,
               bool_or(c.posted > 0 AND (b.answer IS NULL OR b.answer <= 0
                                         OR p.id IS NULL)) AS unknown,
               coalesce(sum(CASE WHEN c.posted > 0 AND b.answer > 0 AND p.id IS NOT NULL
                   THEN div(c.posted::numeric * b.answer * power(10::numeric, da.scale),
                            power(10::numeric, ca.scale + b.decimals)) * p.margin_call_bps
                   ELSE 0 END), 0) AS cap
        FROM h
        JOIN balances c ON c.account_id = h.account_id
        JOIN assets ca ON ca.code = h.asset
        JOIN assets da ON da.code = h.debt_asset
        LEFT JOIN risk_multi_basis b ON b.asset = h.asset
        LEFT JOIN risk_parameters p ON p.id = b.params_id
        GROUP BY h.line_id
    )
    SELECT l.id, l.status = 'OPEN' AND l.multi_collateral, cb.pending - cb.posted, v.cap, v.n,
           CASE WHEN cb.pending - cb.posted <= 0 THEN '-Infinity'::numeric
                WHEN v.unknown OR v.cap <= 0 THEN 'Infinity'::numeric
                ELSE div((cb.pending - cb.posted + v.n)::numeric * 10000
                         * power(10::numeric, 20), v.cap) + 1
           END
    FROM credit_lines l
    JOIN v ON v.line_id = l.id
    JOIN balances cb ON cb.account_id = l.credit_account_id
$$;

-- both kinds of row of ``ids``: a line of one asset's trigger row (closed for a line of several),
-- and a line of several assets' multi row (added the first time)
CREATE OR REPLACE FUNCTION valueos_risk_recompute(ids bigint[]) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    multi bigint[];
BEGIN
    PERFORM 1 FROM credit_line_triggers WHERE line_id = ANY(ids) ORDER BY line_id FOR UPDATE;
    UPDATE credit_line_triggers t
    SET open = l.status = 'OPEN' AND NOT l.multi_collateral,
        exposure = cb.pending - cb.posted, collateral = c.posted,
        stop_loss_answer = l.stop_loss_answer,
        trigger = valueos_risk_trigger(cb.pending - cb.posted, c.posted, l.stop_loss_answer,
                                       p.margin_call_bps, da.scale, ca.scale, b.decimals)
    FROM credit_lines l
    JOIN balances cb ON cb.account_id = l.credit_account_id
    JOIN balances c ON c.account_id = l.collateral_account_id
    JOIN assets ca ON ca.code = l.collateral_asset
    JOIN assets da ON da.code = l.debt_asset
    LEFT JOIN risk_trigger_basis b ON b.asset = l.collateral_asset
    LEFT JOIN risk_parameters p ON p.id = b.params_id
    WHERE t.line_id = l.id AND l.id = ANY(ids);
    multi := ARRAY(SELECT id FROM credit_lines WHERE id = ANY(ids) AND multi_collateral
                   ORDER BY id);
    IF cardinality(multi) = 0 THEN
        RETURN;
    END IF;
    INSERT INTO credit_line_multi (line_id, open, exposure, cap_ref, holdings, key)
    SELECT x, false, 0, 0, 0, 'Infinity'::numeric FROM unnest(multi) x
    ON CONFLICT (line_id) DO NOTHING;
    PERFORM 1 FROM credit_line_multi WHERE line_id = ANY(multi) ORDER BY line_id FOR UPDATE;
    UPDATE credit_line_multi m
    SET open = r.open, exposure = r.exposure, cap_ref = r.cap_ref, holdings = r.holdings,
        key = r.key
    FROM valueos_risk_multi_rows(multi) r
    WHERE m.line_id = r.line_id;
END $$;

DROP TRIGGER credit_lines_risk_changed ON credit_lines;
CREATE TRIGGER credit_lines_risk_changed
    AFTER UPDATE OF stop_loss_answer, status, multi_collateral ON credit_lines FOR EACH ROW
    WHEN (OLD.stop_loss_answer IS DISTINCT FROM NEW.stop_loss_answer
          OR OLD.status IS DISTINCT FROM NEW.status
          OR OLD.multi_collateral IS DISTINCT FROM NEW.multi_collateral)
    EXECUTE FUNCTION valueos_risk_line_changed();

-- a further collateral account is a line's account: its balance changes recompute the line
CREATE FUNCTION valueos_risk_collateral_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE balances SET credit_line_id = NEW.line_id WHERE account_id = NEW.account_id;
    PERFORM valueos_risk_recompute(ARRAY[NEW.line_id]);
    RETURN NULL;
END $$;
CREATE TRIGGER credit_line_collateral_added AFTER INSERT ON credit_line_collateral
    FOR EACH ROW EXECUTE FUNCTION valueos_risk_collateral_added();

-- Rebasing the multi rows: ``_start`` makes every asset's current price, decimals and active
-- parameters the reference (a new generation, not complete); ``_chunk`` recomputes the next
-- ``n`` lines of several assets after ``after``; ``_finish`` marks the basis complete if no
-- other start came since. Until then the tick reads every line of several assets.
CREATE FUNCTION valueos_risk_multi_rebase_start() RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    g bigint;
BEGIN
    UPDATE risk_multi_state SET generation = generation + 1, complete = false
    RETURNING generation INTO g;
    DELETE FROM risk_multi_basis;
    INSERT INTO risk_multi_basis (asset, answer, decimals, params_id)
    SELECT ra.asset, ra.price_answer, ra.price_decimals,
           (SELECT p.id FROM risk_parameters p WHERE p.asset = ra.asset AND p.status = 'ACTIVE')
    FROM risk_assets ra;
    RETURN g;
END $$;

CREATE FUNCTION valueos_risk_multi_rebase_chunk(after bigint, n integer,
                                                OUT last_id bigint, OUT lines integer)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    ids bigint[];
BEGIN
    SELECT array_agg(x.line_id ORDER BY x.line_id) INTO ids FROM (
        SELECT line_id FROM credit_line_multi WHERE line_id > after
        ORDER BY line_id LIMIT n FOR UPDATE) x;
    UPDATE credit_line_multi m
    SET open = r.open, exposure = r.exposure, cap_ref = r.cap_ref, holdings = r.holdings,
        key = r.key
    FROM valueos_risk_multi_rows(ids) r
    WHERE m.line_id = r.line_id;
    last_id := ids[cardinality(ids)];
    lines := coalesce(cardinality(ids), 0);
END $$;

CREATE FUNCTION valueos_risk_multi_rebase_finish(g bigint) RETURNS boolean
LANGUAGE sql VOLATILE AS $$
    UPDATE risk_multi_state SET complete = true WHERE generation = g RETURNING true
$$;
"""

DOWNGRADE = """
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM credit_line_collateral) THEN
        RAISE EXCEPTION 'credit lines hold further collateral assets: withdraw them first';
    END IF;
END $$;

DROP TRIGGER credit_lines_risk_changed ON credit_lines;
CREATE TRIGGER credit_lines_risk_changed AFTER UPDATE OF stop_loss_answer, status
    ON credit_lines FOR EACH ROW
    WHEN (OLD.stop_loss_answer IS DISTINCT FROM NEW.stop_loss_answer
          OR OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION valueos_risk_line_changed();

CREATE OR REPLACE FUNCTION valueos_risk_recompute(ids bigint[]) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM 1 FROM credit_line_triggers WHERE line_id = ANY(ids) ORDER BY line_id FOR UPDATE;
    UPDATE credit_line_triggers t
    SET open = l.status = 'OPEN', exposure = cb.pending - cb.posted, collateral = c.posted,
        stop_loss_answer = l.stop_loss_answer,
        trigger = valueos_risk_trigger(cb.pending - cb.posted, c.posted, l.stop_loss_answer,
                                       p.margin_call_bps, da.scale, ca.scale, b.decimals)
    FROM credit_lines l
    JOIN balances cb ON cb.account_id = l.credit_account_id
    JOIN balances c ON c.account_id = l.collateral_account_id
    JOIN assets ca ON ca.code = l.collateral_asset
    JOIN assets da ON da.code = l.debt_asset
    LEFT JOIN risk_trigger_basis b ON b.asset = l.collateral_asset
    LEFT JOIN risk_parameters p ON p.id = b.params_id
    WHERE t.line_id = l.id AND l.id = ANY(ids);
END $$;

-- fails while a user holds two COLLATERAL accounts of one asset (move them first)
DROP INDEX accounts_compartment_key;
CREATE UNIQUE INDEX accounts_compartment_key ON accounts (owner_id, asset, kind)
    WHERE kind IN ('AVAILABLE', 'BLOCKED', 'LOCKED', 'CREDIT', 'COLLATERAL');

DROP FUNCTION valueos_risk_multi_rebase_finish(bigint),
    valueos_risk_multi_rebase_chunk(bigint, integer), valueos_risk_multi_rebase_start(),
    valueos_risk_multi_rows(bigint[]);
DROP TRIGGER credit_line_collateral_added ON credit_line_collateral;
DROP FUNCTION valueos_risk_collateral_added();
DROP TABLE credit_line_multi, risk_multi_state, risk_multi_basis;
DROP INDEX credit_lines_multi_stops, credit_lines_multi;
DROP TABLE credit_line_collateral;
ALTER TABLE credit_lines DROP COLUMN multi_collateral;
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
