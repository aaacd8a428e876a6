-- The order a key's checkout committed, written in the order's own transaction: once
-- set, the key's answer is that order, whatever a later run under the same key says
-- (a run that took the key over after a stall, say, and found the cart empty).
ALTER TABLE idempotency_keys ADD COLUMN order_id BIGINT REFERENCES orders (id) ON DELETE SET NULL;

-- A cancelled order's notice goes out through the outbox like its confirmation; a
-- confirmation whose order was cancelled before it ran ends `skipped`.
ALTER TABLE outbox_jobs DROP CONSTRAINT outbox_jobs_kind_check;
ALTER TABLE outbox_jobs ADD CONSTRAINT outbox_jobs_kind_check
    CHECK (kind IN ('charge_order', 'send_confirmation', 'send_cancellation'));
ALTER TABLE outbox_jobs DROP CONSTRAINT outbox_jobs_status_check;
ALTER TABLE outbox_jobs ADD CONSTRAINT outbox_jobs_status_check
    CHECK (status IN ('pending', 'done', 'skipped', 'dead'));
-- The open jobs are pending and dead ones; skipped ones are finished.
DROP INDEX outbox_jobs_open_idx;
CREATE INDEX outbox_jobs_open_idx ON outbox_jobs (kind, created_at)
    WHERE status IN ('pending', 'dead');
