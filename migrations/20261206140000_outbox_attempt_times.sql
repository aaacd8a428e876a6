-- When each attempt of a job began: an order's timeline shows every try of its
-- background work, not only the last. Appended by the claim's own UPDATE (no statement
-- more per attempt); kept when dead letters are put back in the queue.
ALTER TABLE outbox_jobs ADD COLUMN attempted_at TIMESTAMPTZ[] NOT NULL DEFAULT '{}';
