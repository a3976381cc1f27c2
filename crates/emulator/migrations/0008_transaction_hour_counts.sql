-- Per-hour transaction counts, per entity and payment type: the finer level under
-- `transaction_day_counts` (0006) for the partial days at the two ends of a date-range report
-- (`GET /v1/query?date.from=&date.to=`). A range is counted as its first partial hour (an index
-- count), the whole hours left in its first day (this table), the whole days inside it (0006),
-- the whole hours of its last day before its last hour (this table) and its last partial hour
-- (an index count); a deep page starts at the first piece whose running count reaches its
-- offset and skips only rows of that piece (at most one hour of rows, or one day when a whole
-- day holds the offset, with OFFSET). Over 1,000,000 transactions in a year (~2,700 a day) this
-- touches a few hundred index entries per page instead of the ~8,000 of two partial days and an
-- offset within a day (docs/performance.md, "Search at scale"). Kept exact by triggers, as 0006
-- (the emulator never updates `entity_id`, `created_at` or `payment_type` of a stored
-- transaction).
CREATE TABLE IF NOT EXISTS transaction_hour_counts (
    entity_id    TEXT    NOT NULL,
    -- UTC hour, "YYYY-MM-DD HH" (the first 13 characters of `transactions.created_at`).
    hour         TEXT    NOT NULL,
    payment_type TEXT    NOT NULL,
    n            INTEGER NOT NULL CHECK (n >= 0),
    PRIMARY KEY (entity_id, hour, payment_type)
) WITHOUT ROWID;

CREATE TRIGGER IF NOT EXISTS transactions_hour_count_insert AFTER INSERT ON transactions
BEGIN
    INSERT INTO transaction_hour_counts (entity_id, hour, payment_type, n)
    VALUES (NEW.entity_id, substr(NEW.created_at, 1, 13), NEW.payment_type, 1)
    ON CONFLICT (entity_id, hour, payment_type) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER IF NOT EXISTS transactions_hour_count_delete AFTER DELETE ON transactions
BEGIN
    UPDATE transaction_hour_counts SET n = n - 1
    WHERE entity_id = OLD.entity_id AND hour = substr(OLD.created_at, 1, 13)
      AND payment_type = OLD.payment_type;
END;

INSERT INTO transaction_hour_counts (entity_id, hour, payment_type, n)
SELECT entity_id, substr(created_at, 1, 13), payment_type, COUNT(*)
FROM transactions WHERE true GROUP BY 1, 2, 3
ON CONFLICT (entity_id, hour, payment_type) DO UPDATE SET n = excluded.n;
