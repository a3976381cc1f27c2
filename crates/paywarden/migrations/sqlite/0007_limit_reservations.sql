-- Cumulative-limit reservations: the amount of a money-moving call that the policy's daily
-- total must count while the call is in flight. A reservation is taken (under a per-entity,
-- per-currency lease) in the same step that re-evaluates the policy on moved + reserved, and
-- released once the call has settled: its movement recorded, or nothing moved. A call whose
-- outcome is unknown, or whose process died, keeps its reservation until `expires_at` (the end
-- of its UTC day), so the daily total never undercounts what may have moved.
CREATE TABLE limit_reservations (
    id            TEXT    PRIMARY KEY,        -- uuid
    entity_id     TEXT    NOT NULL,
    currency      TEXT    NOT NULL,           -- ISO 4217
    amount_minor  INTEGER NOT NULL CHECK (amount_minor >= 0),
    created_at    TEXT    NOT NULL,           -- UTC RFC 3339
    expires_at    TEXT    NOT NULL
);
CREATE INDEX limit_reservations_entity_day ON limit_reservations (entity_id, currency, created_at);
