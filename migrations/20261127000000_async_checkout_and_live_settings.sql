-- The asynchronous checkout: orders wait in `pending` for their payment, and may end in
-- `payment_failed`.
ALTER TABLE orders DROP CONSTRAINT orders_status_check;
ALTER TABLE orders ADD CONSTRAINT orders_status_check CHECK (status IN
    ('pending', 'paid', 'confirmed', 'shipped', 'delivered', 'cancelled', 'payment_failed'));

-- A transactional outbox: a job is written in the same transaction as the order it is
-- about, so it exists exactly when the order does. Workers claim jobs with
-- FOR UPDATE SKIP LOCKED and a lease; a job whose worker died is claimed again when
-- its lease runs out. Done jobs are kept (their history is the queue's telemetry) and
-- purged after a day.
CREATE TABLE outbox_jobs (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind         TEXT NOT NULL CHECK (kind IN ('charge_order', 'send_confirmation')),
    order_id     BIGINT NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    payload      JSONB NOT NULL DEFAULT '{}',
    -- W3C trace context of the request that enqueued the job: its spans continue it.
    traceparent  TEXT,
    status       TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done', 'dead')),
    attempts     INTEGER NOT NULL DEFAULT 0,
    run_after    TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Who holds the job and until when; the token fences a worker whose lease ran out.
    lease_token  UUID,
    locked_until TIMESTAMPTZ,
    last_error   TEXT,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at  TIMESTAMPTZ
);
CREATE INDEX outbox_jobs_ready_idx ON outbox_jobs (run_after, id) WHERE status = 'pending';
CREATE INDEX outbox_jobs_order_id_idx ON outbox_jobs (order_id);

-- Settings an admin changes while the service runs (fault injection, the checkout
-- mode): one row, shared by every replica, which follow it with LISTEN/NOTIFY.
CREATE TABLE live_settings (
    id                   SMALLINT PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    payment_delay_ms     BIGINT NOT NULL,
    payment_success_rate DOUBLE PRECISION NOT NULL,
    email_delay_ms       BIGINT NOT NULL,
    email_outage         BOOLEAN NOT NULL,
    checkout_mode        TEXT NOT NULL CHECK (checkout_mode IN ('blocking', 'async')),
    updated_at           TIMESTAMPTZ NOT NULL DEFAULT now()
);
