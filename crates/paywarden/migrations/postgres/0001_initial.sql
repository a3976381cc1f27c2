-- paywarden's own records (PostgreSQL; the same meaning as migrations/sqlite/0001_initial.sql).
-- Amounts are integer minor units; times are UTC RFC 3339 strings (fixed width, so they sort
-- as text), exactly as on SQLite, so both engines store and compare them the same way.

-- Every tool call, appended in order. `hash` = SHA-256 over `prev_hash` and the entry's
-- canonical JSON, so editing or deleting a row breaks the chain. `seq` is assigned by the
-- appender (head + 1) under a transaction-scoped advisory lock, so the chain has no gaps and
-- a concurrent second head is impossible (the primary key refuses it).
CREATE TABLE audit_log (
    seq              BIGINT  PRIMARY KEY,
    at               TEXT    NOT NULL,
    entity_id        TEXT    NOT NULL,
    client_name      TEXT,
    toolset          TEXT    NOT NULL,
    tool             TEXT    NOT NULL,
    arguments        TEXT    NOT NULL,   -- JSON, secrets removed
    outcome          TEXT    NOT NULL,   -- ok | rejected | error | replay
    result_code      TEXT,
    provider_request_id TEXT,
    transaction_id   TEXT,
    message          TEXT,
    duration_ms      BIGINT  NOT NULL,
    sandbox          BOOLEAN NOT NULL,
    prev_hash        TEXT    NOT NULL,
    hash             TEXT    NOT NULL
);
CREATE INDEX audit_log_entity ON audit_log (entity_id, seq);

-- One row per (entity, idempotency key) of a money-moving call.
CREATE TABLE idempotency_keys (
    entity_id        TEXT    NOT NULL,
    idempotency_key  TEXT    NOT NULL,
    tool             TEXT    NOT NULL,
    request_hash     TEXT    NOT NULL,   -- SHA-256 of the canonical arguments
    state            TEXT    NOT NULL,   -- in_progress | completed | unknown
    response         TEXT,               -- JSON of the first outcome
    is_error         BOOLEAN,
    created_at       TEXT    NOT NULL,
    completed_at     TEXT,
    PRIMARY KEY (entity_id, idempotency_key)
);

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
