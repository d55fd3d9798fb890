-- ratelimit_mark_active: the trigger function of the active-number set (migrations 011, 013 and
-- 023): notes each number of a statement whose activity moved into another epoch (an inserted
-- number with any activity, an updated one whose epoch changed), in one set-based insert per
-- statement from its transition tables. rate_limit_active is indexed by epoch alone (an index
-- that only grows at its right edge), and every reader takes DISTINCT hashes, so a duplicate is
-- harmless: a row whose hash changed (key rotation) has no old row to compare and is noted
-- again. The current source, re-applied by migrate() (src/db/migrate.ts); migration 023 holds a
-- copy so the triggers it creates never run an older body.

CREATE OR REPLACE FUNCTION ratelimit_mark_active() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
  IF TG_OP = 'INSERT' THEN
    INSERT INTO rate_limit_active (epoch, phone_hash)
    SELECT ratelimit_activity_epoch(n.last_call_at, n.last_denied_at), n.phone_hash
      FROM ratelimit_new_rows AS n
     WHERE n.last_call_at IS NOT NULL OR n.last_denied_at IS NOT NULL;
  ELSE
    INSERT INTO rate_limit_active (epoch, phone_hash)
    SELECT ratelimit_activity_epoch(n.last_call_at, n.last_denied_at), n.phone_hash
      FROM ratelimit_new_rows AS n LEFT JOIN ratelimit_old_rows AS o ON o.phone_hash = n.phone_hash
     WHERE (n.last_call_at IS NOT NULL OR n.last_denied_at IS NOT NULL)
       AND ratelimit_activity_epoch(n.last_call_at, n.last_denied_at)
           IS DISTINCT FROM ratelimit_activity_epoch(o.last_call_at, o.last_denied_at);
  END IF;
  RETURN NULL;
END
$fn$;
