-- The queue's gauges (`outbox::depth`, every two seconds) read only the jobs not done:
-- without this index they scanned every finished job too, kept for a day — at 100
-- orders/s, millions of rows by the evening. Pending and dead jobs are few.
CREATE INDEX outbox_jobs_open_idx ON outbox_jobs (kind, created_at) WHERE status <> 'done';
