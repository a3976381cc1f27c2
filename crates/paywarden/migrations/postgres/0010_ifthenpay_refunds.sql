-- PostgreSQL: the same meaning as migrations/sqlite/0010_ifthenpay_refunds.sql.
-- Refunds ifthenpay reports by callback (`[STATUS]` = `DEVOLVIDO`), booked as refunds of a paid
-- request: `refunded_minor` (minor units, at most the amount); `kind` of each callback.
ALTER TABLE ifthenpay_requests ADD COLUMN refunded_minor BIGINT NOT NULL DEFAULT 0;
ALTER TABLE ifthenpay_callbacks ADD COLUMN kind TEXT NOT NULL DEFAULT 'payment';
