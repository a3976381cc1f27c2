-- Stripe refund status (issue 14): a card refund can be `pending` and later `succeeded`,
-- `failed` or `canceled`. refund_log keeps the status paywarden last saw; a `pending` row is
-- polled until Stripe settles it, and a `failed` or `canceled` one has been undone (the order's
-- refunded amount and the movement, reversed by a compensating movement `<refund id>:reversed`).
ALTER TABLE refund_log ADD COLUMN status TEXT NOT NULL DEFAULT 'succeeded';
