-- The ladder of cures: a mail server that hangs (a fault), and the resilience each
-- dependency's client applies (a timeout so far), kept with the other live settings so
-- that every replica follows the same values. All off by default: the blocking checkout
-- stays the "before" picture.
ALTER TABLE live_settings
    ADD COLUMN email_hang BOOLEAN NOT NULL DEFAULT false,
    ADD COLUMN resilience JSONB NOT NULL DEFAULT '{}';
