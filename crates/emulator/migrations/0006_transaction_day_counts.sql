-- Per-day transaction counts, per entity and payment type: a coarse index over `transactions`
-- that lets the date-range report (`GET /v1/query?date.from=&date.to=`) count its matches and
-- find the start of a deep page without walking every row of the range. A range count is the
-- sum of the whole days inside it plus an index count of the two partial days at its ends; a
-- page starts at the first day whose running count reaches its offset, and only the rows of
-- that day are skipped with OFFSET. Kept exact by triggers (the emulator never updates
-- `entity_id`, `created_at` or `payment_type` of a stored transaction).
CREATE TABLE IF NOT EXISTS transaction_day_counts (
    entity_id    TEXT    NOT NULL,
    -- UTC day, "YYYY-MM-DD" (the first 10 characters of `transactions.created_at`).
    day          TEXT    NOT NULL,
    payment_type TEXT    NOT NULL,
    n            INTEGER NOT NULL CHECK (n >= 0),
    PRIMARY KEY (entity_id, day, payment_type)
) WITHOUT ROWID;

CREATE TRIGGER IF NOT EXISTS transactions_day_count_insert AFTER INSERT ON transactions
BEGIN
    INSERT INTO transaction_day_counts (entity_id, day, payment_type, n)
    VALUES (NEW.entity_id, substr(NEW.created_at, 1, 10), NEW.payment_type, 1)
    ON CONFLICT (entity_id, day, payment_type) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER IF NOT EXISTS transactions_day_count_delete AFTER DELETE ON transactions
BEGIN
    UPDATE transaction_day_counts SET n = n - 1
    WHERE entity_id = OLD.entity_id AND day = substr(OLD.created_at, 1, 10)
      AND payment_type = OLD.payment_type;
END;

INSERT INTO transaction_day_counts (entity_id, day, payment_type, n)
SELECT entity_id, substr(created_at, 1, 10), payment_type, COUNT(*)
FROM transactions WHERE true GROUP BY 1, 2, 3
ON CONFLICT (entity_id, day, payment_type) DO UPDATE SET n = excluded.n;
