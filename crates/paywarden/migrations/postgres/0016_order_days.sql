-- Daily totals of orders (issue 15): per entity, UTC day and currency, how many orders there are
-- and what they were paid and refunded, in minor units. `revenue_summary` reads these rows (one
-- per day and currency) instead of aggregating every order of the range with a sort. `day` is
-- the first ten characters of `orders.created_at` (RFC 3339, UTC: `YYYY-MM-DD`), as the summary
-- groups them. A trigger keeps the rows in the same transaction as every insert, change and
-- removal of an order, whoever writes it (paywarden, the seed, or the merchant's own
-- application sharing this database); a day and currency without orders has no row. Orders of
-- one entity, day and currency written concurrently update one row, under its row lock, in
-- their own transactions.
CREATE TABLE order_days (
    entity_id       TEXT    NOT NULL,
    day             TEXT    NOT NULL,
    currency        TEXT    NOT NULL,
    orders          BIGINT  NOT NULL,
    gross_cents     BIGINT  NOT NULL,
    refunded_cents  BIGINT  NOT NULL,
    PRIMARY KEY (entity_id, day, currency)
);

-- Orders written while this migration runs wait for it.
LOCK TABLE orders IN SHARE ROW EXCLUSIVE MODE;

INSERT INTO order_days (entity_id, day, currency, orders, gross_cents, refunded_cents)
SELECT entity_id, substr(created_at, 1, 10), currency, count(*), sum(amount_cents), sum(refunded_cents)
FROM orders GROUP BY entity_id, substr(created_at, 1, 10), currency;

CREATE FUNCTION orders_day_totals() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.entity_id = NEW.entity_id
       AND substr(OLD.created_at, 1, 10) = substr(NEW.created_at, 1, 10)
       AND OLD.currency = NEW.currency THEN
        -- The order stays on its day, currency and entity (a refund): the difference.
        UPDATE order_days SET
            gross_cents = gross_cents + NEW.amount_cents - OLD.amount_cents,
            refunded_cents = refunded_cents + NEW.refunded_cents - OLD.refunded_cents
        WHERE entity_id = NEW.entity_id AND day = substr(NEW.created_at, 1, 10)
          AND currency = NEW.currency;
        RETURN NULL;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        UPDATE order_days SET
            orders = orders - 1,
            gross_cents = gross_cents - OLD.amount_cents,
            refunded_cents = refunded_cents - OLD.refunded_cents
        WHERE entity_id = OLD.entity_id AND day = substr(OLD.created_at, 1, 10)
          AND currency = OLD.currency;
        DELETE FROM order_days
        WHERE entity_id = OLD.entity_id AND day = substr(OLD.created_at, 1, 10)
          AND currency = OLD.currency AND orders = 0;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO order_days (entity_id, day, currency, orders, gross_cents, refunded_cents)
        VALUES (NEW.entity_id, substr(NEW.created_at, 1, 10), NEW.currency, 1, NEW.amount_cents,
                NEW.refunded_cents)
        ON CONFLICT (entity_id, day, currency) DO UPDATE SET
            orders = order_days.orders + 1,
            gross_cents = order_days.gross_cents + excluded.gross_cents,
            refunded_cents = order_days.refunded_cents + excluded.refunded_cents;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER orders_day_totals
    AFTER INSERT OR DELETE OR UPDATE OF entity_id, amount_cents, refunded_cents, currency, created_at
    ON orders FOR EACH ROW EXECUTE FUNCTION orders_day_totals();

-- `TRUNCATE orders` removes every order without row triggers: the totals go with them.
CREATE FUNCTION orders_day_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM order_days;
    RETURN NULL;
END
$$;
CREATE TRIGGER orders_day_truncate AFTER TRUNCATE ON orders
    FOR EACH STATEMENT EXECUTE FUNCTION orders_day_truncate();
