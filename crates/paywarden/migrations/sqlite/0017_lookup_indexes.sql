-- Indexes that cannot be mistaken for a key's lookup (issue 15); the PostgreSQL migration of
-- the same number says why. SQLite plans each statement on its own parameters and took the
-- primary key for a key's lookup already; the two idempotency indexes are redefined the same
-- way so that both engines hold the same indexes (and the partial ones are smaller: a key is
-- indexed by transaction only once it names one, as open only while it is open).
--
-- * customers found by e-mail (`lower(email) = lower(?)`: issue_refund, the reconciliation
--   and the ops reads) read every customer of the entity: the unique (entity_id, email) cannot
--   serve `lower(email)`.
DROP INDEX idempotency_keys_transaction;
CREATE INDEX idempotency_keys_transaction ON idempotency_keys (entity_id, transaction_id)
    WHERE transaction_id IS NOT NULL;
DROP INDEX idempotency_keys_open;
CREATE INDEX idempotency_keys_open ON idempotency_keys (created_at) WHERE state <> 'completed';
CREATE INDEX customers_entity_email_lower ON customers (entity_id, lower(email));
