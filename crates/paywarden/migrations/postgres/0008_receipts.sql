-- PostgreSQL: the same meaning as migrations/sqlite/0008_receipts.sql.
-- Signed receipts (crate::receipts): one per executed money movement, returned in the tool's
-- result and kept here so an operator can show or export it later (`paywarden receipt show`).
-- `body` is the whole signed receipt as JSON; the other columns index it. Scoped by entity:
-- every lookup names the entity (or is an operator's export of all of them).
CREATE TABLE receipts (
    id              TEXT    PRIMARY KEY,      -- rcpt_<uuid>
    entity_id       TEXT    NOT NULL,
    issued_at       TEXT    NOT NULL,         -- UTC RFC 3339
    tool            TEXT    NOT NULL,
    transaction_id  TEXT,                     -- the provider's id of what moved
    audit_seq       BIGINT  NOT NULL,         -- the audit row of the execution
    body            TEXT    NOT NULL          -- the signed receipt (JSON)
);
CREATE INDEX receipts_entity ON receipts (entity_id, issued_at);
