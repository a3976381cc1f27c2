-- Every transaction the emulator has processed, successful or not.
-- Amounts are integer minor units with their ISO 4217 currency; times are UTC
-- "YYYY-MM-DD HH:MM:SS" text (sorts chronologically). The full card number and the CVV are
-- never stored: only the BIN (first 6 digits) and the last 4 digits.
CREATE TABLE IF NOT EXISTS transactions (
    seq                     INTEGER PRIMARY KEY AUTOINCREMENT,
    id                      TEXT    NOT NULL UNIQUE,
    entity_id               TEXT    NOT NULL,
    root_id                 TEXT    NOT NULL,
    referenced_id           TEXT,
    payment_type            TEXT    NOT NULL
        CHECK (payment_type IN ('PA', 'DB', 'CP', 'RV', 'RF', 'RB', 'CB', 'CR')),
    payment_brand           TEXT    NOT NULL,
    amount_minor            INTEGER NOT NULL CHECK (amount_minor >= 0),
    currency                TEXT    NOT NULL,
    descriptor              TEXT    NOT NULL,
    merchant_transaction_id TEXT,
    succeeded               INTEGER NOT NULL CHECK (succeeded IN (0, 1)),
    result_code             TEXT    NOT NULL,
    result_description      TEXT    NOT NULL,
    result_reason           TEXT,
    card_bin                TEXT,
    card_last4              TEXT,
    card_holder             TEXT,
    card_expiry_month       TEXT,
    card_expiry_year        TEXT,
    connector_tx_id         TEXT    NOT NULL,
    ndc                     TEXT    NOT NULL,
    created_at              TEXT    NOT NULL
);

CREATE INDEX IF NOT EXISTS transactions_entity_time ON transactions (entity_id, created_at, seq);
CREATE INDEX IF NOT EXISTS transactions_entity_mtid ON transactions (entity_id, merchant_transaction_id);
CREATE INDEX IF NOT EXISTS transactions_root ON transactions (root_id, created_at, seq);
