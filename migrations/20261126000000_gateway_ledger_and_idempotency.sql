-- The payment gateway's own ledger. The gateway stands for an external system: it
-- writes here on its own connections, outside any checkout transaction, so what it
-- charged stays charged whatever the shop's transaction later does. No foreign key to
-- orders, on purpose: a charge may belong to an order that was rolled back.
CREATE TABLE gateway_charges (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- One charge per key: a retried call gets the first answer back.
    idempotency_key TEXT NOT NULL,
    order_id        BIGINT NOT NULL,
    amount          NUMERIC(12, 2) NOT NULL CHECK (amount >= 0),
    method          TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('approved', 'declined', 'refunded')),
    -- Set for approved (and later refunded) charges.
    transaction_id  TEXT,
    charged_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    refunded_at     TIMESTAMPTZ,
    CONSTRAINT gateway_charges_idempotency_key_key UNIQUE (idempotency_key),
    CONSTRAINT gateway_charges_transaction_id_key UNIQUE (transaction_id),
    CONSTRAINT gateway_charges_approved_have_transaction
        CHECK ((status = 'declined') = (transaction_id IS NULL))
);

-- Idempotency-Key of POST /api/orders/checkout: the first answer, kept for 24 hours.
CREATE TABLE idempotency_keys (
    user_id         BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key             TEXT NOT NULL,
    -- The request as first received (canonical JSON): the same key with another
    -- request is refused.
    request         TEXT NOT NULL,
    -- NULL while the first request is still being answered.
    response_status SMALLINT,
    response_type   TEXT,
    response_body   TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at      TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (user_id, key)
);
CREATE INDEX idempotency_keys_expires_at_idx ON idempotency_keys (expires_at);
