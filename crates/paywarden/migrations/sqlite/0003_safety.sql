-- Single-use confirmation tokens. Only the SHA-256 of a token is stored.
CREATE TABLE confirmations (
    token_hash    TEXT PRIMARY KEY,
    entity_id     TEXT NOT NULL,
    tool          TEXT NOT NULL,
    request_hash  TEXT NOT NULL,     -- canonical arguments the token is bound to
    preview       TEXT NOT NULL,     -- JSON shown to the caller
    rule          TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    expires_at    TEXT NOT NULL,
    used_at       TEXT
);

-- One money-moving operation at a time per referenced transaction, across processes: a lease.
CREATE TABLE transaction_locks (
    entity_id     TEXT NOT NULL,
    reference_id  TEXT NOT NULL,
    holder        TEXT NOT NULL,
    expires_at    TEXT NOT NULL,
    PRIMARY KEY (entity_id, reference_id)
);

-- Money paywarden has moved (executed operations), for per-entity daily totals.
CREATE TABLE movements (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    entity_id       TEXT    NOT NULL,
    toolset         TEXT    NOT NULL,
    tool            TEXT    NOT NULL,
    reference_id    TEXT    NOT NULL,
    transaction_id  TEXT    NOT NULL,
    amount_minor    INTEGER NOT NULL,
    currency        TEXT    NOT NULL,
    at              TEXT    NOT NULL
);
CREATE INDEX movements_entity_day ON movements (entity_id, currency, at);
