-- PostgreSQL: the same table as migrations/sqlite/0002_approvals.sql (portable SQL).
-- Approval requests: operations the policy marks `human` wait here until an operator approves
-- or denies them. Times are UTC RFC 3339 strings (microseconds, `Z`), so they also sort as text.

CREATE TABLE approvals (
    id             TEXT PRIMARY KEY,    -- "apr_" + 32 hex (random)
    entity_id      TEXT NOT NULL,       -- the entity that asked; only it can execute
    client_name    TEXT,                -- MCP clientInfo.name, when known
    toolset        TEXT NOT NULL,
    tool           TEXT NOT NULL,
    arguments      TEXT NOT NULL,       -- JSON, secrets removed
    request_hash   TEXT NOT NULL,       -- SHA-256 of the canonical request; execution must match
    preview        TEXT NOT NULL,       -- JSON: what will move (operation, amount, parties)
    rule           TEXT NOT NULL,       -- the policy rule that asked for a human
    message        TEXT NOT NULL,       -- that rule's message
    status         TEXT NOT NULL,       -- pending | approved | denied | expired | executing | executed
    created_at     TEXT NOT NULL,
    expires_at     TEXT NOT NULL,
    decided_by     TEXT,                -- operator name
    decided_at     TEXT,
    decision_note  TEXT,
    executed_at    TEXT,
    outcome        TEXT                 -- JSON of the execution's outcome
);
CREATE INDEX approvals_status ON approvals (status, created_at);
CREATE INDEX approvals_entity ON approvals (entity_id, created_at);
