-- PostgreSQL: the same meaning as migrations/sqlite/0006_ifthenpay_tenants.sql.
-- ifthenpay tenants (issue 13): every request, reference and payment belongs to the entity that
-- created it, and an order id is unique per entity (and tool).
--
-- 1. Lookups scoped by entity: a request id (mbway_check_status, payments_list with keys the
--    server holds), an order id within a tool (the order-id check before a creation), and a
--    callback's reference with its Multibanco entity.
CREATE INDEX IF NOT EXISTS ifthenpay_requests_entity_request
    ON ifthenpay_requests (entity_id, request_id);
CREATE INDEX IF NOT EXISTS ifthenpay_requests_entity_order
    ON ifthenpay_requests (entity_id, tool, order_id);
CREATE INDEX IF NOT EXISTS ifthenpay_requests_reference
    ON ifthenpay_requests (reference, mb_entity);

-- 2. Idempotency keys of ifthenpay creations were `ifthenpay:<tool>:<16 hex key id>:<order id>`
--    and are now `ifthenpay:<tool>:<entity>:<order id>`, so a retry made after the upgrade still
--    returns the first reference. Rows are rewritten only where that is unambiguous: an entity
--    that used one order id of one tool with two keys keeps both old rows (paywarden then
--    refuses that order id as already used rather than create a third request).
--    Positions: 'ifthenpay:' is 10 characters, then the tool (length L), ':', 16 hex, ':', the
--    order id from position L + 29.
UPDATE idempotency_keys
SET idempotency_key = 'ifthenpay:' || tool || ':' || entity_id || ':'
        || substr(idempotency_key, length(tool) + 29)
WHERE idempotency_key LIKE 'ifthenpay:%'
  AND substr(idempotency_key, 1, length(tool) + 11) = 'ifthenpay:' || tool || ':'
  AND substr(idempotency_key, length(tool) + 28, 1) = ':'
  AND NOT EXISTS (
      SELECT 1 FROM idempotency_keys other
      WHERE other.entity_id = idempotency_keys.entity_id
        AND other.tool = idempotency_keys.tool
        AND other.idempotency_key <> idempotency_keys.idempotency_key
        AND substr(other.idempotency_key, 1, length(other.tool) + 11) = 'ifthenpay:' || other.tool || ':'
        AND substr(other.idempotency_key, length(other.tool) + 28, 1) = ':'
        AND substr(other.idempotency_key, length(other.tool) + 29)
            = substr(idempotency_keys.idempotency_key, length(idempotency_keys.tool) + 29)
  );
