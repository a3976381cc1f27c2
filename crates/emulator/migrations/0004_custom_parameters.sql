-- OPP's `customParameters[NAME]=VALUE` sent with a payment or back-office operation, echoed in
-- every answer about the transaction (as OPP does): JSON object text, NULL when none were sent.
-- paywarden sends its own reference of an idempotency key there, to find an operation whose
-- answer it never heard.
ALTER TABLE transactions ADD COLUMN custom_parameters TEXT;
