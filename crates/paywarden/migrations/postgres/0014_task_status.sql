-- tasks.last_status (issue 16): the status tasks/get last reported (working, input_required,
-- completed, failed; cancelled is cancelled_at). A change of status moves updated_at (the
-- task's lastUpdatedAt) and is audited once, not every poll. Once it is completed or failed,
-- `result` holds the final result, served as is afterwards (nothing is looked up again).
ALTER TABLE tasks ADD COLUMN last_status TEXT;
