-- The Stripe emulator's state (Stripe API v1 subset), next to OPP's `transactions`.
-- Every object (customer, payment_intent, charge, refund, product, price, payment_link) is one
-- row holding its Stripe JSON representation (`body`, served as is) plus the columns the list
-- and search endpoints filter and sort on. Amounts inside `body` are integers in the currency's
-- smallest unit, as on Stripe's wire; `created` is unix seconds. `account` is the Stripe account
-- the API key belongs to. No card numbers are stored (only Stripe test payment method ids).
CREATE TABLE IF NOT EXISTS stripe_objects (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    id             TEXT    NOT NULL UNIQUE,
    account        TEXT    NOT NULL,
    object         TEXT    NOT NULL CHECK (object IN
        ('customer', 'payment_intent', 'charge', 'refund', 'product', 'price', 'payment_link')),
    created        INTEGER NOT NULL,
    customer       TEXT,
    payment_intent TEXT,
    charge         TEXT,
    email          TEXT,
    body           TEXT    NOT NULL CHECK (json_valid(body)),
    extra          TEXT    CHECK (extra IS NULL OR json_valid(extra)),
    -- A charge can never be refunded beyond its amount, whatever the application code does.
    CHECK (object <> 'charge'
        OR json_extract(body, '$.amount_refunded') BETWEEN 0 AND json_extract(body, '$.amount'))
);

CREATE INDEX IF NOT EXISTS stripe_objects_list
    ON stripe_objects (account, object, created, seq);
CREATE INDEX IF NOT EXISTS stripe_objects_customer
    ON stripe_objects (account, object, customer, created, seq);
CREATE INDEX IF NOT EXISTS stripe_objects_payment_intent
    ON stripe_objects (account, object, payment_intent, created, seq);
CREATE INDEX IF NOT EXISTS stripe_objects_email
    ON stripe_objects (account, object, email);

-- The first response to each `Idempotency-Key` (per account), replayed for 24 h on Stripe and
-- forever here, with the canonical request it answered (method, path, sorted parameters).
CREATE TABLE IF NOT EXISTS stripe_idempotency (
    account             TEXT    NOT NULL,
    idempotency_key     TEXT    NOT NULL,
    request_fingerprint TEXT    NOT NULL,
    status              INTEGER NOT NULL,
    body                TEXT    NOT NULL,
    created             INTEGER NOT NULL,
    PRIMARY KEY (account, idempotency_key)
);
