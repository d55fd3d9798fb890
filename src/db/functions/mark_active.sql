-- ratelimit_mark_active: the trigger function of the active-number set (migrations 011 and 013):
-- notes a number in the epoch its activity moved into. The triggers' WHEN clauses make it run
-- once per number per epoch; rate_limit_active is indexed by epoch alone (an index that only
-- grows at its right edge), and every reader takes DISTINCT hashes. The current source,
-- re-applied by migrate() (src/db/migrate.ts).

CREATE OR REPLACE FUNCTION ratelimit_mark_active() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
  INSERT INTO rate_limit_active (epoch, phone_hash)
  VALUES (ratelimit_activity_epoch(NEW.last_call_at, NEW.last_denied_at), NEW.phone_hash);
  RETURN NULL;
END
$fn$;
