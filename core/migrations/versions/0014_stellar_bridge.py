"""The Stellar bridge shares the ERC-20 bridge's tables.

* ``bridge_tokens`` gains ``chain`` (``evm`` or ``stellar``): a Stellar row's ``address`` is
  the asset's Stellar Asset Contract (``C...``), with the classic asset's ``asset_code`` and
  ``issuer`` (``G...``) and 7 decimals; its ``chain_id`` is derived from the network
  passphrase (:func:`core.bridges.stellar.stellar_chain_id`). One bridge token per asset.
* ``chain_txs`` gains the status EXPIRED: a Stellar transaction signed and sent but provably
  never applied (a closed ledger passed its ``maxTime`` and it is absent); its sequence
  number is released (``nonce`` cleared), its envelope and hash kept.
* ``bridge_redemptions`` gains ``event_id``: the Soroban event id of a Stellar ``burn`` (unique per network).
  Its key is (chain id, transaction hash, operation << 16 | event index).
* ``stellar_mint_events``: every ``mint`` event the watcher read from a bridged SAC (ours and
  anyone else's), for the supply invariant (minted - burned by events).
* ``stellar_links``: a Stellar address linked to a user by a signed challenge
  (``stellar_link_challenges``, single use, short-lived); a burn is attributed by its ``from``.

Revision ID: 0014_stellar_bridge
Revises: 0013_integrity_alarms
Create Date: 2026-11-29
"""

from core.migrations.sql import run_script

revision = "0014_stellar_bridge"
down_revision = "0013_integrity_alarms"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE chain_txs DROP CONSTRAINT chain_txs_status_check;
ALTER TABLE chain_txs ADD CONSTRAINT chain_txs_status_check CHECK (status IN
    ('BUILT', 'SIGNED', 'BROADCAST', 'CONFIRMED', 'FINALIZED', 'FAILED', 'REJECTED', 'BATCHED',
     'EXPIRED'));
DROP INDEX chain_txs_unfinished;
CREATE INDEX chain_txs_unfinished ON chain_txs (purpose, id)
    WHERE status NOT IN ('FINALIZED', 'FAILED', 'REJECTED', 'EXPIRED');

ALTER TABLE bridge_tokens
    ADD COLUMN chain text NOT NULL DEFAULT 'evm' CHECK (chain IN ('evm', 'stellar')),
    ADD COLUMN asset_code text,
    ADD COLUMN issuer text;
ALTER TABLE bridge_tokens DROP CONSTRAINT bridge_tokens_address_check;
ALTER TABLE bridge_tokens ADD CONSTRAINT bridge_tokens_address_check CHECK (
    (chain = 'evm' AND address ~ '^0x[0-9a-fA-F]{40}$' AND issuer IS NULL
     AND asset_code IS NULL)
    OR (chain = 'stellar' AND address ~ '^C[A-Z2-7]{55}$' AND issuer ~ '^G[A-Z2-7]{55}$'
        AND asset_code ~ '^[A-Za-z0-9]{1,12}$' AND decimals = 7));

ALTER TABLE bridge_redemptions ADD COLUMN event_id text;
CREATE UNIQUE INDEX bridge_redemptions_event ON bridge_redemptions (chain_id, event_id)
    WHERE event_id IS NOT NULL;

CREATE TABLE stellar_mint_events (
    event_id    text NOT NULL,
    chain_id    bigint NOT NULL,
    token       text NOT NULL,
    ledger      bigint NOT NULL,
    tx_hash     bytea NOT NULL CHECK (length(tx_hash) = 32),
    to_address  text NOT NULL,
    amount      numeric(39, 0) NOT NULL CHECK (amount >= 0),
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (chain_id, event_id),
    FOREIGN KEY (chain_id, token) REFERENCES bridge_tokens (chain_id, address)
);
CREATE INDEX stellar_mint_events_token ON stellar_mint_events (chain_id, token, ledger);

CREATE TABLE stellar_link_challenges (
    id          uuid PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users (id),
    address     text NOT NULL CHECK (address ~ '^G[A-Z2-7]{55}$'),
    challenge   text NOT NULL,
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE stellar_links (
    address       text PRIMARY KEY CHECK (address ~ '^G[A-Z2-7]{55}$'),
    user_id       uuid NOT NULL REFERENCES users (id),
    challenge_id  uuid NOT NULL UNIQUE REFERENCES stellar_link_challenges (id),
    linked_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stellar_links_user ON stellar_links (user_id);
"""

DOWNGRADE = """
DROP TABLE stellar_links;
DROP TABLE stellar_link_challenges;
DROP TABLE stellar_mint_events;
ALTER TABLE bridge_redemptions DROP COLUMN event_id;
DELETE FROM bridge_cursors c USING bridge_tokens t
    WHERE t.chain = 'stellar' AND c.chain_id = t.chain_id AND c.token = t.address;
DELETE FROM bridge_tokens WHERE chain = 'stellar';
ALTER TABLE bridge_tokens DROP CONSTRAINT bridge_tokens_address_check;
ALTER TABLE bridge_tokens ADD CONSTRAINT bridge_tokens_address_check
    CHECK (address ~ '^0x[0-9a-fA-F]{40}$');
ALTER TABLE bridge_tokens DROP COLUMN issuer, DROP COLUMN asset_code, DROP COLUMN chain;
DROP INDEX chain_txs_unfinished;
CREATE INDEX chain_txs_unfinished ON chain_txs (purpose, id)
    WHERE status NOT IN ('FINALIZED', 'FAILED', 'REJECTED');
ALTER TABLE chain_txs DROP CONSTRAINT chain_txs_status_check;
ALTER TABLE chain_txs ADD CONSTRAINT chain_txs_status_check CHECK (status IN
    ('BUILT', 'SIGNED', 'BROADCAST', 'CONFIRMED', 'FINALIZED', 'FAILED', 'REJECTED', 'BATCHED'));
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
