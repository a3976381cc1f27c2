-- PostgreSQL: the same meaning as migrations/sqlite/0009_unknown_outcomes.sql.
-- Unknown outcomes and crash recovery of money-moving calls (docs/architecture.md, "Unknown
-- outcomes"). Times are UTC RFC 3339 strings (microseconds, `Z`), so they also sort as text.

-- A key `in_progress` is held by one call (`holder`) until `lease_until`, which the call renews
-- while it runs: past it, the call's process died. `intent` (JSON) is what the call was about to
-- send, written before it was sent: without one, nothing was sent. A key `unknown` waits for the
-- provider to show the operation until `settle_after` (the provider's settle window after the
-- request could last have been sent); after it, the provider's silence means it never happened.
-- `reservation_id` and `approval_id` are the cumulative-limit reservation and the approval the
-- call holds, settled with the key; `transaction_id` is the provider transaction the key settled on.
-- `toolset` is the call's toolset (NULL for keys from before this migration): only toolsets that
-- record intents (opp, ops) have a dead key without one released as "nothing was sent".
ALTER TABLE idempotency_keys ADD COLUMN toolset TEXT;
ALTER TABLE idempotency_keys ADD COLUMN holder TEXT;
ALTER TABLE idempotency_keys ADD COLUMN lease_until TEXT;
ALTER TABLE idempotency_keys ADD COLUMN settle_after TEXT;
ALTER TABLE idempotency_keys ADD COLUMN intent TEXT;
ALTER TABLE idempotency_keys ADD COLUMN reservation_id TEXT;
ALTER TABLE idempotency_keys ADD COLUMN approval_id TEXT;
ALTER TABLE idempotency_keys ADD COLUMN transaction_id TEXT;
CREATE INDEX idempotency_keys_open ON idempotency_keys (state, lease_until);
CREATE INDEX idempotency_keys_transaction ON idempotency_keys (entity_id, transaction_id);
CREATE INDEX idempotency_keys_approval ON idempotency_keys (approval_id);

-- An approval `executing` is held until `executing_until`; past it, with no call's key holding
-- it, the process that claimed it died before sending anything and it is `approved` again.
ALTER TABLE approvals ADD COLUMN executing_until TEXT;

CREATE INDEX movements_transaction ON movements (entity_id, transaction_id);
CREATE INDEX audit_log_transaction ON audit_log (entity_id, transaction_id);

-- Keys released after their settle window with the provider showing nothing, watched until
-- `watch_until` in case the operation still arrives. A late arrival is recorded (movement, audit
-- row) and reported (`/readyz`, `paywarden reconcile`) until an operator acknowledges it.
CREATE TABLE late_outcomes (
    id               TEXT PRIMARY KEY,   -- uuid
    entity_id        TEXT NOT NULL,
    idempotency_key  TEXT NOT NULL,
    toolset          TEXT NOT NULL,
    tool             TEXT NOT NULL,
    request_hash     TEXT NOT NULL,      -- the key's request binding
    intent           TEXT NOT NULL,      -- JSON: what had been sent
    released_at      TEXT NOT NULL,
    watch_until      TEXT NOT NULL,
    kind             TEXT,               -- late_duplicate | late_arrival, once found
    transaction_id   TEXT,               -- the provider transaction that arrived late
    found_at         TEXT,
    acknowledged_at  TEXT,
    acknowledged_by  TEXT
);
CREATE INDEX late_outcomes_entity ON late_outcomes (entity_id, toolset, watch_until);
