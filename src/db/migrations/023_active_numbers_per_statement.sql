-- Issue #22: the active-number set (011, 013) noted per statement instead of per row. The row
-- triggers ran a plpgsql function and a one-row INSERT (its own executor start) for every number
-- whose activity entered a new epoch, which is every decision on a number seen for the first time
-- in 10 minutes, and their WHEN clause (two inlined SQL functions) was planned again for every
-- UPDATE statement, a cost a one-decision statement pays in full. Statement triggers with
-- transition tables cover every writer as before (ratelimit_decide_v3, v0.1.0's
-- ratelimit_decide_v2, ratelimit_record_v2, key rotation, resets) with one set-based insert per
-- statement. Transition tables cannot go with a column list, so the UPDATE trigger fires for
-- every UPDATE and compares the epochs itself. The function is src/db/functions/mark_active.sql
-- (copied here so the new triggers never run the row-level body).
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

DROP TRIGGER IF EXISTS phone_rate_limits_mark_active ON phone_rate_limits;
DROP TRIGGER IF EXISTS phone_rate_limits_mark_active_insert ON phone_rate_limits;
CREATE TRIGGER phone_rate_limits_mark_active
  AFTER UPDATE ON phone_rate_limits
  REFERENCING OLD TABLE AS ratelimit_old_rows NEW TABLE AS ratelimit_new_rows
  FOR EACH STATEMENT
  EXECUTE FUNCTION ratelimit_mark_active();
CREATE TRIGGER phone_rate_limits_mark_active_insert
  AFTER INSERT ON phone_rate_limits
  REFERENCING NEW TABLE AS ratelimit_new_rows
  FOR EACH STATEMENT
  EXECUTE FUNCTION ratelimit_mark_active();
