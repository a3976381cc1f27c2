-- The ops toolset's orders database (the Payment Ops seed's schema), in paywarden's database.
-- Every row belongs to one entity (tenant): no entity reads or touches another's records.
-- Amounts are integer minor units (`amount_cents` keeps the seed's column name; for a
-- zero-decimal currency it holds whole units); currencies are lower-case ISO 4217 codes as on
-- Stripe's wire; times are UTC RFC 3339 strings.

CREATE TABLE customers (
    id                  TEXT PRIMARY KEY,          -- uuid
    entity_id           TEXT NOT NULL,
    email               TEXT NOT NULL,
    name                TEXT NOT NULL,
    stripe_customer_id  TEXT,                      -- join key to Stripe (cus_...)
    created_at          TEXT NOT NULL,
    UNIQUE (entity_id, email)
);

CREATE TABLE orders (
    id                  TEXT PRIMARY KEY,          -- uuid
    entity_id           TEXT NOT NULL,
    customer_id         TEXT NOT NULL REFERENCES customers (id),
    stripe_charge_id    TEXT,                      -- Stripe PaymentIntent id (pi_...)
    amount_cents        INTEGER NOT NULL CHECK (amount_cents > 0),
    refunded_cents      INTEGER NOT NULL DEFAULT 0 CHECK (refunded_cents >= 0),
    currency            TEXT NOT NULL,
    status              TEXT NOT NULL CHECK (status IN ('paid', 'refunded', 'partially_refunded')),
    created_at          TEXT NOT NULL,
    -- Never refunded beyond the order, whatever the application code does.
    CHECK (refunded_cents <= amount_cents)
);
CREATE INDEX orders_customer ON orders (entity_id, customer_id, created_at);
CREATE INDEX orders_created ON orders (entity_id, created_at);
CREATE UNIQUE INDEX orders_charge ON orders (entity_id, stripe_charge_id);

CREATE TABLE refund_log (
    id                  TEXT PRIMARY KEY,          -- uuid
    entity_id           TEXT NOT NULL,
    order_id            TEXT NOT NULL REFERENCES orders (id),
    stripe_refund_id    TEXT,                      -- re_...; NULL for a review flag
    amount_cents        INTEGER NOT NULL CHECK (amount_cents >= 0),
    reason              TEXT NOT NULL,
    refunded_by         TEXT NOT NULL,             -- which agent or client
    created_at          TEXT NOT NULL
);
CREATE INDEX refund_log_order ON refund_log (order_id, created_at);
CREATE UNIQUE INDEX refund_log_refund ON refund_log (stripe_refund_id)
    WHERE stripe_refund_id IS NOT NULL;

-- flag_for_review: a charge set aside for a person to look at.
CREATE TABLE review_flags (
    id                  TEXT PRIMARY KEY,          -- uuid
    entity_id           TEXT NOT NULL,
    order_id            TEXT NOT NULL REFERENCES orders (id),
    stripe_charge_id    TEXT NOT NULL,
    note                TEXT NOT NULL,
    flagged_by          TEXT NOT NULL,
    status              TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'resolved')),
    created_at          TEXT NOT NULL
);
CREATE INDEX review_flags_entity ON review_flags (entity_id, status, created_at);
