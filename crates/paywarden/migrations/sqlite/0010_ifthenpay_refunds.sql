-- Refunds ifthenpay reports by callback (`[STATUS]` = `DEVOLVIDO` on card and PinPay callbacks;
-- webdados/Multibanco-ifthenpay-Gateway-for-WooCommerce). A refund callback is booked as a
-- refund of a paid request, never as another payment: `refunded_minor` is the sum refunded (in
-- minor units of the request's currency, at most its amount); `kind` says what a callback was.
ALTER TABLE ifthenpay_requests ADD COLUMN refunded_minor INTEGER NOT NULL DEFAULT 0;
ALTER TABLE ifthenpay_callbacks ADD COLUMN kind TEXT NOT NULL DEFAULT 'payment';
