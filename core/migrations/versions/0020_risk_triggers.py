"""Risk triggers: per credit line, the highest price answer at which the line needs a decision
(over margin call, or at its stop-loss), kept with its balances and indexed per collateral
asset, so a risk tick reads only the lines whose trigger is at or above the current price.

``credit_line_triggers`` holds, per line, copies of its inputs (exposure = pending - posted of
the credit account, collateral = posted of the collateral account, stop-loss, open) and
``trigger`` = ``valueos_risk_trigger(...)``: the line needs a decision at price answer ``P``
exactly when ``P <= trigger`` (``-Infinity``: never; ``Infinity``: at any price). The margin
call part depends on the asset's active parameters and price decimals; the ones every line's
trigger was computed with are the asset's ``risk_trigger_basis`` row, and the
``valueos_risk_rebase_*`` functions recompute all of the asset's lines set-based, in chunks,
when the basis moved (a new parameter version, other price decimals).

Maintenance, in the transaction of every change:

* ``balances.credit_line_id`` marks the credit and collateral accounts of a line; a row
  trigger (``WHEN`` the mark is set and posted or pending changed: a plain comparison for every
  other account) notes the line in a transaction-local setting, and a statement trigger then
  recomputes the noted lines: it first locks their trigger rows in line order (two postings
  touching the same lines never deadlock), then reads the balances in a new statement, so it
  sees every change committed by whoever held a row before: the last writer of a row computes
  it from the latest balances.
* inserting lines (statement trigger) marks their accounts and adds their rows; changing a
  line's stop-loss or status recomputes its row.

Revision ID: 0020_risk_triggers
Revises: 0019_offline_revoke_sweep
Create Date: 2026-12-07
"""

from core.migrations.sql import run_script

revision = "0020_risk_triggers"
down_revision = "0019_offline_revoke_sweep"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE balances ADD COLUMN credit_line_id bigint;

CREATE TABLE risk_trigger_basis (
    asset       text PRIMARY KEY REFERENCES assets (code),
    params_id   bigint REFERENCES risk_parameters (id),
    decimals    smallint,
    generation  bigint NOT NULL,
    complete    boolean NOT NULL
);

CREATE TABLE credit_line_triggers (
    line_id           bigint PRIMARY KEY REFERENCES credit_lines (id),
    collateral_asset  text NOT NULL,
    open              boolean NOT NULL,
    exposure          bigint NOT NULL,
    collateral        bigint NOT NULL,
    stop_loss_answer  numeric(78, 0),
    trigger           numeric NOT NULL
);
CREATE INDEX credit_line_triggers_due ON credit_line_triggers (collateral_asset, trigger)
    INCLUDE (line_id) WHERE open;
CREATE INDEX credit_lines_notified ON credit_lines (id) WHERE notified_at IS NOT NULL;

-- The highest price answer P (at ``decimals``) at which a line is over its margin call
-- (exposure * 10000 > floor(collateral * P * 10^debt_scale / 10^(coll_scale + decimals))
-- * margin_call_bps, the loop's exact predicate) or at its stop-loss (P <= stop, with
-- collateral): with V = that floor, over margin call <=> V <= floor((exposure*10000 - 1) /
-- margin_call_bps) =: Vmax <=> collateral * P * 10^debt_scale <= (Vmax + 1) *
-- 10^(coll_scale + decimals) - 1, so P <= floor of that over collateral * 10^debt_scale.
CREATE FUNCTION valueos_risk_trigger(exposure bigint, collateral bigint, stop numeric,
                                     margin_call_bps integer, debt_scale integer,
                                     coll_scale integer, decimals integer)
RETURNS numeric LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT greatest(
        CASE WHEN exposure <= 0 THEN '-Infinity'::numeric
             WHEN margin_call_bps IS NULL OR decimals IS NULL OR collateral <= 0
                 THEN 'Infinity'::numeric
             ELSE div((div(exposure::numeric * 10000 - 1, margin_call_bps) + 1)
                          * power(10::numeric, coll_scale + decimals) - 1,
                      collateral::numeric * power(10::numeric, debt_scale))
        END,
        CASE WHEN stop IS NOT NULL AND collateral > 0 THEN stop
             ELSE '-Infinity'::numeric END)
$$;

-- Recompute the rows of ``ids`` from the lines and their balances (see the module's rule).
CREATE FUNCTION valueos_risk_recompute(ids bigint[]) RETURNS void
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

-- Rebasing an asset: ``_start`` makes its current active parameters and price decimals the
-- basis (a new generation, not complete); ``_chunk`` recomputes the next ``n`` of its lines
-- after ``after`` from their stored inputs with the basis as it is then (their rows locked in
-- line order, in a short transaction of its own: card spends wait for a chunk, not for the
-- asset); ``_finish`` marks the basis complete if no other start came since. Every other
-- computation uses the basis row as it is, so once complete every line is computed with it.
CREATE FUNCTION valueos_risk_rebase_start(asset_code text) RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    g bigint;
BEGIN
    INSERT INTO risk_trigger_basis AS b (asset, params_id, decimals, generation, complete)
    SELECT asset_code,
           (SELECT p.id FROM risk_parameters p
            WHERE p.asset = asset_code AND p.status = 'ACTIVE'),
           (SELECT ra.price_decimals FROM risk_assets ra WHERE ra.asset = asset_code), 1, false
    ON CONFLICT (asset) DO UPDATE SET params_id = excluded.params_id,
        decimals = excluded.decimals, generation = b.generation + 1, complete = false
    RETURNING generation INTO g;
    RETURN g;
END $$;

CREATE FUNCTION valueos_risk_rebase_chunk(asset_code text, after bigint, n integer,
                                          OUT last_id bigint, OUT lines integer)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    ids bigint[];
BEGIN
    SELECT array_agg(x.line_id ORDER BY x.line_id) INTO ids FROM (
        SELECT line_id FROM credit_line_triggers
        WHERE collateral_asset = asset_code AND line_id > after
        ORDER BY line_id LIMIT n FOR UPDATE) x;
    UPDATE credit_line_triggers t
    SET trigger = valueos_risk_trigger(t.exposure, t.collateral, t.stop_loss_answer,
                                       p.margin_call_bps, da.scale, ca.scale, b.decimals)
    FROM credit_lines l
    JOIN assets ca ON ca.code = l.collateral_asset
    JOIN assets da ON da.code = l.debt_asset
    JOIN risk_trigger_basis b ON b.asset = l.collateral_asset
    LEFT JOIN risk_parameters p ON p.id = b.params_id
    WHERE t.line_id = ANY(ids) AND l.id = t.line_id;
    last_id := ids[cardinality(ids)];
    lines := coalesce(cardinality(ids), 0);
END $$;

CREATE FUNCTION valueos_risk_rebase_finish(asset_code text, g bigint) RETURNS boolean
LANGUAGE sql VOLATILE AS $$
    UPDATE risk_trigger_basis SET complete = true
    WHERE asset = asset_code AND generation = g RETURNING true
$$;

CREATE FUNCTION valueos_risk_note() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('valueos.risk_lines',
        coalesce(current_setting('valueos.risk_lines', true), '') || NEW.credit_line_id || ',',
        true);
    RETURN NULL;
END $$;
CREATE TRIGGER balances_risk_note AFTER UPDATE OF posted, pending ON balances FOR EACH ROW
    WHEN (NEW.credit_line_id IS NOT NULL
          AND (OLD.posted <> NEW.posted OR OLD.pending <> NEW.pending))
    EXECUTE FUNCTION valueos_risk_note();

CREATE FUNCTION valueos_risk_noted() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    noted text := current_setting('valueos.risk_lines', true);
BEGIN
    IF noted IS NULL OR noted = '' THEN
        RETURN NULL;
    END IF;
    PERFORM set_config('valueos.risk_lines', '', true);
    PERFORM valueos_risk_recompute(
        ARRAY(SELECT DISTINCT x::bigint FROM unnest(string_to_array(rtrim(noted, ','), ',')) x));
    RETURN NULL;
END $$;
CREATE TRIGGER balances_risk_noted AFTER UPDATE OF posted, pending ON balances
    FOR EACH STATEMENT EXECUTE FUNCTION valueos_risk_noted();

CREATE FUNCTION valueos_risk_lines_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE balances b SET credit_line_id = n.id
    FROM (SELECT id, credit_account_id AS account_id FROM new_lines
          UNION ALL SELECT id, collateral_account_id FROM new_lines) n
    WHERE b.account_id = n.account_id AND b.credit_line_id IS DISTINCT FROM n.id;
    INSERT INTO credit_line_triggers (line_id, collateral_asset, open, exposure, collateral,
                                      stop_loss_answer, trigger)
    SELECT l.id, l.collateral_asset, l.status = 'OPEN', cb.pending - cb.posted, c.posted,
           l.stop_loss_answer,
           valueos_risk_trigger(cb.pending - cb.posted, c.posted, l.stop_loss_answer,
                                p.margin_call_bps, da.scale, ca.scale, b.decimals)
    FROM new_lines l
    JOIN balances cb ON cb.account_id = l.credit_account_id
    JOIN balances c ON c.account_id = l.collateral_account_id
    JOIN assets ca ON ca.code = l.collateral_asset
    JOIN assets da ON da.code = l.debt_asset
    LEFT JOIN risk_trigger_basis b ON b.asset = l.collateral_asset
    LEFT JOIN risk_parameters p ON p.id = b.params_id;
    RETURN NULL;
END $$;
CREATE TRIGGER credit_lines_risk_added AFTER INSERT ON credit_lines
    REFERENCING NEW TABLE AS new_lines
    FOR EACH STATEMENT EXECUTE FUNCTION valueos_risk_lines_added();

CREATE FUNCTION valueos_risk_line_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM valueos_risk_recompute(ARRAY[NEW.id]);
    RETURN NULL;
END $$;
CREATE TRIGGER credit_lines_risk_changed AFTER UPDATE OF stop_loss_answer, status
    ON credit_lines FOR EACH ROW
    WHEN (OLD.stop_loss_answer IS DISTINCT FROM NEW.stop_loss_answer
          OR OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION valueos_risk_line_changed();

-- lines opened before this migration (their trigger is computed by the first rebase)
UPDATE balances b SET credit_line_id = l.id FROM credit_lines l
WHERE b.account_id IN (l.credit_account_id, l.collateral_account_id);
INSERT INTO credit_line_triggers (line_id, collateral_asset, open, exposure, collateral,
                                  stop_loss_answer, trigger)
SELECT l.id, l.collateral_asset, l.status = 'OPEN', cb.pending - cb.posted, c.posted,
       l.stop_loss_answer, 'Infinity'::numeric
FROM credit_lines l
JOIN balances cb ON cb.account_id = l.credit_account_id
JOIN balances c ON c.account_id = l.collateral_account_id;
"""

DOWNGRADE = """
DROP TRIGGER credit_lines_risk_changed ON credit_lines;
DROP TRIGGER credit_lines_risk_added ON credit_lines;
DROP TRIGGER balances_risk_noted ON balances;
DROP TRIGGER balances_risk_note ON balances;
DROP FUNCTION valueos_risk_line_changed(), valueos_risk_lines_added(), valueos_risk_noted(),
    valueos_risk_note(), valueos_risk_rebase_start(text),
    valueos_risk_rebase_chunk(text, bigint, integer), valueos_risk_rebase_finish(text, bigint),
    valueos_risk_recompute(bigint[]),
    valueos_risk_trigger(bigint, bigint, numeric, integer, integer, integer, integer);
DROP INDEX credit_lines_notified;
DROP TABLE credit_line_triggers, risk_trigger_basis;
ALTER TABLE balances DROP COLUMN credit_line_id;
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
