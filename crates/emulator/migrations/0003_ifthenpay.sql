-- The ifthenpay emulator's state, next to OPP's `transactions` and Stripe's objects.
--
-- One row per payment request a merchant created (a Multibanco or Payshop reference, an MB WAY
-- request, a card / Cofidis / PIX checkout, a PinPay link). Amounts are integer minor units with
-- their ISO 4217 currency (EUR, or BRL for PIX); times are UTC "YYYY-MM-DD HH:MM:SS" text.
-- `account_key` is the method key the request was made with: only the emulator's public demo
-- keys are ever accepted, so no real secret is stored.
CREATE TABLE IF NOT EXISTS ifthenpay_requests (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id    TEXT    NOT NULL UNIQUE,
    method        TEXT    NOT NULL
        CHECK (method IN ('MB', 'MBWAY', 'PAYSHOP', 'CCARD', 'PINPAY', 'COFIDIS', 'PIX')),
    account_key   TEXT    NOT NULL,
    order_id      TEXT    NOT NULL,
    amount_minor  INTEGER NOT NULL CHECK (amount_minor > 0),
    currency      TEXT    NOT NULL CHECK (currency IN ('EUR', 'BRL')),
    entity        TEXT,
    reference     TEXT,
    pin_code      TEXT    UNIQUE,
    token         TEXT    NOT NULL UNIQUE,
    qr_code       TEXT,
    expiry_date   TEXT,
    status        TEXT    NOT NULL CHECK (status IN ('pending', 'paid', 'rejected', 'expired')),
    -- The method the shopper actually paid with (a PinPay link offers several).
    paid_method   TEXT,
    created_at    TEXT    NOT NULL,
    updated_at    TEXT    NOT NULL,
    paid_at       TEXT,
    -- A reference can be paid at most once, and only a pending one.
    CHECK (status <> 'paid' OR (paid_at IS NOT NULL AND paid_method IS NOT NULL))
);

CREATE INDEX IF NOT EXISTS ifthenpay_requests_reference ON ifthenpay_requests (reference);
CREATE INDEX IF NOT EXISTS ifthenpay_requests_paid ON ifthenpay_requests (status, paid_at, seq);

-- Callback activations (ifthenpay's `endpoint/callback/activation`): per method key, the URL
-- template the emulator calls when a payment completes and the anti-phishing key it puts in it.
CREATE TABLE IF NOT EXISTS ifthenpay_callbacks (
    account_key       TEXT PRIMARY KEY,
    entity            TEXT NOT NULL,
    url               TEXT NOT NULL,
    anti_phishing_key TEXT NOT NULL,
    activated_at      TEXT NOT NULL
);
