-- PostgreSQL: the same meaning as migrations/sqlite/0013_provider_events.sql.
-- Provider events (issue 16, point 3): every Stripe webhook event and OPP webhook notification
-- paywarden accepted, once; `(provider, event_id)` unique, so a replay is ignored.
CREATE TABLE provider_events (
    id            BIGSERIAL PRIMARY KEY,
    provider      TEXT    NOT NULL,
    event_id      TEXT    NOT NULL,
    entity_id     TEXT    NOT NULL,
    payment_id    TEXT,
    event_type    TEXT    NOT NULL,
    object_id     TEXT,
    status        TEXT,
    amount_minor  BIGINT,
    currency      TEXT,
    outcome       TEXT    NOT NULL,
    summary       TEXT    NOT NULL,
    received_at   TEXT    NOT NULL,
    UNIQUE (provider, event_id)
);
CREATE INDEX provider_events_payment ON provider_events (entity_id, payment_id, id);
