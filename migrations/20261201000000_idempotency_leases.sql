-- A request that holds an Idempotency-Key renews this lease while it runs (every few
-- seconds); once it has lapsed, the first request died with its process and a retry
-- may take the key over — seconds after a crash, not minutes.
ALTER TABLE idempotency_keys ADD COLUMN locked_until TIMESTAMPTZ;
UPDATE idempotency_keys SET locked_until = created_at + interval '5 minutes'
    WHERE response_status IS NULL;
