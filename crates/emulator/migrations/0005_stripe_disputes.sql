-- Stripe disputes (docs.stripe.com/api/disputes/object), made with the sandbox control
-- `POST /__emulator/stripe/disputes`: the cardholder's bank disputes a charge.
CREATE TABLE IF NOT EXISTS stripe_disputes (
    id             TEXT    PRIMARY KEY,
    account        TEXT    NOT NULL,
    charge         TEXT    NOT NULL,
    payment_intent TEXT,
    created        INTEGER NOT NULL,
    body           TEXT    NOT NULL CHECK (json_valid(body))
);
