-- The lab experiment's phase in progress, as `lab run` announces it: kept with the other
-- live settings so that every replica shows it on its charts and in its shop.
ALTER TABLE live_settings ADD COLUMN lab_phase JSONB;
