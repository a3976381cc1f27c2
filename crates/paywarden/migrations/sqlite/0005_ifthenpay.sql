-- paywarden's own records of the ifthenpay payment requests it created, and of every callback
-- ifthenpay sent about them (accepted or refused). Scoped by entity: the caller's entity id,
-- or `key:<16 hex of SHA-256(key)>` when an unauthenticated caller used a key of its own.
-- Amounts are integer minor units with their ISO 4217 currency (EUR; BRL for PIX); times are
-- UTC RFC 3339. Keys are never stored: `key_id` is a SHA-256 prefix.
CREATE TABLE IF NOT EXISTS ifthenpay_requests (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    entity_id     TEXT    NOT NULL,
    tool          TEXT    NOT NULL,
    method        TEXT    NOT NULL
        CHECK (method IN ('MB', 'MBWAY', 'PAYSHOP', 'CCARD', 'PINPAY', 'COFIDIS', 'PIX')),
    key_id        TEXT    NOT NULL,
    order_id      TEXT    NOT NULL,
    request_id    TEXT,
    mb_entity     TEXT,
    reference     TEXT,
    amount_minor  INTEGER NOT NULL CHECK (amount_minor > 0),
    currency      TEXT    NOT NULL,
    status        TEXT    NOT NULL
        CHECK (status IN ('pending', 'paid', 'rejected', 'expired', 'declined')),
    created_at    TEXT    NOT NULL,
    paid_at       TEXT
);

CREATE INDEX IF NOT EXISTS ifthenpay_requests_request ON ifthenpay_requests (request_id);
CREATE INDEX IF NOT EXISTS ifthenpay_requests_order ON ifthenpay_requests (order_id, reference);
CREATE INDEX IF NOT EXISTS ifthenpay_requests_entity ON ifthenpay_requests (entity_id, created_at);

CREATE TABLE IF NOT EXISTS ifthenpay_callbacks (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    -- The request it is about, when one matched (NULL for an unknown payment).
    request_row   INTEGER REFERENCES ifthenpay_requests (id),
    entity_id     TEXT,
    order_id      TEXT,
    request_id    TEXT,
    reference     TEXT,
    payment_method TEXT,
    -- The amount as ifthenpay sent it (text), and parsed when it could be.
    amount_text   TEXT,
    amount_minor  INTEGER,
    accepted      INTEGER NOT NULL CHECK (accepted IN (0, 1)),
    -- Why it was refused: wrong_anti_phishing_key, unknown_payment, amount_mismatch, bad_amount.
    reason        TEXT,
    received_at   TEXT    NOT NULL
);

CREATE INDEX IF NOT EXISTS ifthenpay_callbacks_entity ON ifthenpay_callbacks (entity_id, received_at);
