-- A merchant-reference query (`GET /v1/query?merchantTransactionId=`, and paywarden's credential
-- check, which asks for a reference no transaction carries) answers its matches oldest first
-- (`ORDER BY created_at, seq`). With an index on `(entity_id, merchant_transaction_id)` only,
-- SQLite's planner (no ANALYZE statistics) chose the `(entity_id, created_at, seq)` index
-- instead, to avoid sorting, and walked every transaction of the entity for each such query:
-- 0.46 s over 1,000,000 transactions, seconds under concurrent load (docs/performance.md,
-- "Search at scale"). This index serves the filter and the order together: a seek to the
-- reference's first row, its matches already in order.
DROP INDEX IF EXISTS transactions_entity_mtid;
CREATE INDEX IF NOT EXISTS transactions_entity_mtid_time
    ON transactions (entity_id, merchant_transaction_id, created_at, seq);
