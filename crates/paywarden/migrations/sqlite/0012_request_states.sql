-- MCP 2026-07-28 state kept by the server (issue 16).
--
-- request_states: the single use of every sealed `requestState` paywarden hands out in an
-- `input_required` result (SEP-2322). The sealed value carries a random nonce; only its SHA-256
-- is stored. A retry marks the row used in one statement (`used_at IS NULL`), so a replayed
-- requestState moves nothing, on every replica sharing this database.
CREATE TABLE request_states (
    nonce_hash    TEXT PRIMARY KEY,  -- SHA-256 (hex) of the nonce sealed in the requestState
    entity_id     TEXT NOT NULL,     -- the entity it was issued to
    tool          TEXT NOT NULL,
    request_hash  TEXT NOT NULL,     -- SHA-256 of the canonical arguments it is bound to
    created_at    TEXT NOT NULL,     -- UTC RFC 3339
    expires_at    TEXT NOT NULL,     -- UTC RFC 3339; the sealed value expires then too
    used_at       TEXT
);

-- tasks: calls run as Tasks (the io.modelcontextprotocol/tasks extension, SEP-2663). A task
-- stores what it waits on (`kind`, `subject`); its status is computed from that stored state
-- (the approval row, ifthenpay_requests, refund_log, the OPP transaction) whenever it is read.
CREATE TABLE tasks (
    id            TEXT PRIMARY KEY,  -- "tsk_" + 32 hex (random)
    entity_id     TEXT NOT NULL,     -- only this entity can read or cancel it
    tool          TEXT NOT NULL,
    kind          TEXT NOT NULL
        CHECK (kind IN ('approval', 'ifthenpay', 'stripe_refund', 'opp')),
    subject       TEXT NOT NULL,     -- approval id, ifthenpay_requests.id, Stripe refund id, OPP id
    result        TEXT NOT NULL,     -- JSON: the tool's result when the task was created
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    ttl_ms        INTEGER,
    cancelled_at  TEXT,
    status_note   TEXT               -- why it was cancelled, for tasks/get's statusMessage
);
CREATE INDEX tasks_entity ON tasks (entity_id, created_at);
