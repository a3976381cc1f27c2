-- Daily totals of movements (issue 15): what an entity moved per currency and UTC day, kept by a
-- trigger in the same transaction as each movement, so that a cumulative-limit check reads one
-- row per day instead of summing every movement of the day (three times per money-moving call:
-- the preview's policy input, the call's, and the decision under the limit lock). `day` is the
-- first ten characters of `movements.at` (RFC 3339, UTC: `YYYY-MM-DD`), so `day >= D` counts
-- exactly the movements with `at >= 'DT00:00:00...'`. Movements are only ever inserted.
CREATE TABLE movement_days (
    entity_id     TEXT    NOT NULL,
    currency      TEXT    NOT NULL,
    day           TEXT    NOT NULL,
    amount_minor  BIGINT  NOT NULL,
    PRIMARY KEY (entity_id, currency, day)
);

-- Movements inserted while this migration runs wait for it (the trigger exists before the
-- backfill reads).
LOCK TABLE movements IN SHARE ROW EXCLUSIVE MODE;

INSERT INTO movement_days (entity_id, currency, day, amount_minor)
SELECT entity_id, currency, substr(at, 1, 10), SUM(amount_minor)
FROM movements GROUP BY entity_id, currency, substr(at, 1, 10);

CREATE FUNCTION movements_day_total() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO movement_days (entity_id, currency, day, amount_minor)
    VALUES (NEW.entity_id, NEW.currency, substr(NEW.at, 1, 10), NEW.amount_minor)
    ON CONFLICT (entity_id, currency, day)
    DO UPDATE SET amount_minor = movement_days.amount_minor + excluded.amount_minor;
    RETURN NULL;
END
$$;
CREATE TRIGGER movements_day_total AFTER INSERT ON movements
    FOR EACH ROW EXECUTE FUNCTION movements_day_total();

-- A movement changed or removed would leave its day's total wrong: refused.
CREATE FUNCTION movements_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'movements are append-only (movement_days keeps their daily totals)';
END
$$;
CREATE TRIGGER movements_append_only BEFORE UPDATE OR DELETE ON movements
    FOR EACH ROW EXECUTE FUNCTION movements_append_only();
