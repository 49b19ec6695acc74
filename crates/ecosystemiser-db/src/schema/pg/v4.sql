-- Version 4 on PostgreSQL: an error message for optimization runs and studies (a column
-- someone added under that name already is kept as it is).

ALTER TABLE optimization_runs ADD COLUMN IF NOT EXISTS error_message TEXT;
ALTER TABLE studies ADD COLUMN IF NOT EXISTS error_message TEXT;
