-- Issue #12: the active-number set (011) indexed by its epoch alone.
--
-- 011 keyed rate_limit_active on (epoch, phone_hash). Within the current epoch that puts each new
-- number's entry at a random place among the epoch's entries (the hash is random), so every
-- number's first decision of an epoch dirtied a random btree leaf, split pages and wrote a
-- full-page image after each checkpoint: the store path ran ~29% faster with the trigger off
-- (BENCHMARKS.md, #9 section). An index on the epoch alone only ever grows at its right edge,
-- one hot leaf page, and deduplicates the repeated epoch values.
--
-- The primary key only served ON CONFLICT DO NOTHING, and the trigger's WHEN clause already
-- fires once per number per epoch; a duplicate can appear only when a number's activity goes
-- back and forth across epochs (a reset, then a call), and every reader takes DISTINCT hashes.
ALTER TABLE rate_limit_active DROP CONSTRAINT IF EXISTS rate_limit_active_pkey;
CREATE INDEX IF NOT EXISTS rate_limit_active_epoch ON rate_limit_active (epoch);

CREATE OR REPLACE FUNCTION ratelimit_mark_active() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
  INSERT INTO rate_limit_active (epoch, phone_hash)
  VALUES (ratelimit_activity_epoch(NEW.last_call_at, NEW.last_denied_at), NEW.phone_hash);
  RETURN NULL;
END
$fn$;
