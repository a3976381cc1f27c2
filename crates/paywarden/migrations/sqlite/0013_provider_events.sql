-- Provider events (issue 16, point 3): every Stripe webhook event and OPP webhook notification
-- paywarden accepted, once. `(provider, event_id)` is unique, so a replayed event (Stripe
-- resends an event with the same `evt_` id; OPP may deliver a notification twice) is
-- acknowledged and ignored. `entity_id` is the entity whose payment the event is about (`''`
-- when paywarden has no record of it); `payment_id` the payment as the entity knows it (Stripe
-- PaymentIntent `pi_...`, OPP payment id). Amounts are integer minor units of `currency`
-- (ISO 4217, upper case). `summary` is what paywarden keeps of the event: no card data, no
-- personal data, no secrets. Times are UTC RFC 3339.
CREATE TABLE provider_events (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    provider      TEXT    NOT NULL,   -- stripe | opp
    event_id      TEXT    NOT NULL,   -- Stripe evt_...; OPP: SHA-256 (hex) of the decrypted notification
    entity_id     TEXT    NOT NULL,
    payment_id    TEXT,
    event_type    TEXT    NOT NULL,   -- Stripe `type`; OPP `PAYMENT` (or its other types)
    object_id     TEXT,               -- re_, ch_, dp_, pi_ or the OPP transaction id
    status        TEXT,               -- the object's status (Stripe) or result code (OPP)
    amount_minor  INTEGER,
    currency      TEXT,
    outcome       TEXT    NOT NULL,   -- applied | recorded | ignored | unmatched
    summary       TEXT    NOT NULL,   -- JSON
    received_at   TEXT    NOT NULL,
    UNIQUE (provider, event_id)
);
CREATE INDEX provider_events_payment ON provider_events (entity_id, payment_id, id);
