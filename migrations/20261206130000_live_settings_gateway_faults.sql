-- The gateway's two faults that the retries answer: it flaps (a share of its calls
-- fail) and it can be overloaded (beyond its capacity of calls in flight it slows down
-- and turns calls away; 0 is unlimited).
ALTER TABLE live_settings
    ADD COLUMN payment_flap_rate DOUBLE PRECISION NOT NULL DEFAULT 0
        CHECK (payment_flap_rate BETWEEN 0 AND 1),
    ADD COLUMN payment_capacity INTEGER NOT NULL DEFAULT 0
        CHECK (payment_capacity >= 0);
