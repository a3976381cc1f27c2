-- Daily totals of orders (issue 15): per entity, UTC day and currency, how many orders there are
-- and what they were paid and refunded, in minor units. `revenue_summary` reads these rows (one
-- per day and currency) instead of aggregating every order of the range with a sort. `day` is
-- the first ten characters of `orders.created_at` (RFC 3339, UTC: `YYYY-MM-DD`), as the summary
-- groups them. Triggers keep the rows in the same transaction as every insert, change and
-- removal of an order, whoever writes it (paywarden, the seed, or the merchant's own
-- application sharing this database); a day and currency without orders has no row. A row
-- deleted by `REPLACE` conflict resolution fires `orders_day_delete` only on a connection with
-- `PRAGMA recursive_triggers = ON` (paywarden's connections set it; an application that writes
-- orders with `REPLACE` must set it too).
CREATE TABLE order_days (
    entity_id       TEXT    NOT NULL,
    day             TEXT    NOT NULL,
    currency        TEXT    NOT NULL,
    orders          INTEGER NOT NULL,
    gross_cents     INTEGER NOT NULL,
    refunded_cents  INTEGER NOT NULL,
    PRIMARY KEY (entity_id, day, currency)
) WITHOUT ROWID;

INSERT INTO order_days (entity_id, day, currency, orders, gross_cents, refunded_cents)
SELECT entity_id, substr(created_at, 1, 10), currency, count(*), sum(amount_cents), sum(refunded_cents)
FROM orders GROUP BY entity_id, substr(created_at, 1, 10), currency;

CREATE TRIGGER orders_day_insert AFTER INSERT ON orders
BEGIN
    INSERT INTO order_days (entity_id, day, currency, orders, gross_cents, refunded_cents)
    VALUES (NEW.entity_id, substr(NEW.created_at, 1, 10), NEW.currency, 1, NEW.amount_cents, NEW.refunded_cents)
    ON CONFLICT (entity_id, day, currency) DO UPDATE SET
        orders = orders + 1,
        gross_cents = gross_cents + excluded.gross_cents,
        refunded_cents = refunded_cents + excluded.refunded_cents;
END;

-- An order that stays on its day, currency and entity (a refund): its row takes the difference.
CREATE TRIGGER orders_day_change AFTER UPDATE OF entity_id, amount_cents, refunded_cents, currency, created_at ON orders
WHEN OLD.entity_id = NEW.entity_id AND substr(OLD.created_at, 1, 10) = substr(NEW.created_at, 1, 10)
     AND OLD.currency = NEW.currency
BEGIN
    UPDATE order_days SET
        gross_cents = gross_cents + NEW.amount_cents - OLD.amount_cents,
        refunded_cents = refunded_cents + NEW.refunded_cents - OLD.refunded_cents
    WHERE entity_id = NEW.entity_id AND day = substr(NEW.created_at, 1, 10) AND currency = NEW.currency;
END;

-- An order moved to another day, currency or entity: out of its old row, into its new one.
CREATE TRIGGER orders_day_move AFTER UPDATE OF entity_id, amount_cents, refunded_cents, currency, created_at ON orders
WHEN NOT (OLD.entity_id = NEW.entity_id AND substr(OLD.created_at, 1, 10) = substr(NEW.created_at, 1, 10)
          AND OLD.currency = NEW.currency)
BEGIN
    UPDATE order_days SET
        orders = orders - 1,
        gross_cents = gross_cents - OLD.amount_cents,
        refunded_cents = refunded_cents - OLD.refunded_cents
    WHERE entity_id = OLD.entity_id AND day = substr(OLD.created_at, 1, 10) AND currency = OLD.currency;
    DELETE FROM order_days
    WHERE entity_id = OLD.entity_id AND day = substr(OLD.created_at, 1, 10) AND currency = OLD.currency
      AND orders = 0;
    INSERT INTO order_days (entity_id, day, currency, orders, gross_cents, refunded_cents)
    VALUES (NEW.entity_id, substr(NEW.created_at, 1, 10), NEW.currency, 1, NEW.amount_cents, NEW.refunded_cents)
    ON CONFLICT (entity_id, day, currency) DO UPDATE SET
        orders = orders + 1,
        gross_cents = gross_cents + excluded.gross_cents,
        refunded_cents = refunded_cents + excluded.refunded_cents;
END;

CREATE TRIGGER orders_day_delete AFTER DELETE ON orders
BEGIN
    UPDATE order_days SET
        orders = orders - 1,
        gross_cents = gross_cents - OLD.amount_cents,
        refunded_cents = refunded_cents - OLD.refunded_cents
    WHERE entity_id = OLD.entity_id AND day = substr(OLD.created_at, 1, 10) AND currency = OLD.currency;
    DELETE FROM order_days
    WHERE entity_id = OLD.entity_id AND day = substr(OLD.created_at, 1, 10) AND currency = OLD.currency
      AND orders = 0;
END;
