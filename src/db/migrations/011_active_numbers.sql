-- Issue #12: `stats` and `top` in time independent of how many numbers were ever seen. They only
-- report numbers active in a window (at most a day), yet without an index on the activity
-- columns they had to read every row, and such an index would end HOT updates on the decision
-- path (005). Instead: one row per (number, 10-minute epoch in which it was active), written by
-- a trigger only when a number's latest activity moves into another epoch, so a number busy
-- every second costs one small insert per 10 minutes and the decision's own row update stays
-- HOT. A reader of window W takes the numbers of the epochs since now - W (a superset: at most
-- one epoch older), then checks each one's own row. Rows are immutable facts, so pruning old
-- epochs (src/db/active-numbers.ts, from the heartbeats) races with nothing.
CREATE TABLE IF NOT EXISTS rate_limit_active (
  epoch BIGINT NOT NULL,
  phone_hash TEXT NOT NULL,
  PRIMARY KEY (epoch, phone_hash)
);

-- The epoch length, in one place for the trigger and the readers (an inlined constant).
CREATE OR REPLACE FUNCTION ratelimit_active_epoch_ms() RETURNS BIGINT
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT 600000::BIGINT $$;

-- A number's activity: its latest call or denial, whichever is later (0 when neither).
CREATE OR REPLACE FUNCTION ratelimit_activity_epoch(p_last_call BIGINT, p_last_denied BIGINT) RETURNS BIGINT
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT GREATEST(COALESCE(p_last_call, 0), COALESCE(p_last_denied, 0)) / ratelimit_active_epoch_ms()
$$;

CREATE OR REPLACE FUNCTION ratelimit_mark_active() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
  INSERT INTO rate_limit_active (epoch, phone_hash)
  VALUES (ratelimit_activity_epoch(NEW.last_call_at, NEW.last_denied_at), NEW.phone_hash)
  ON CONFLICT DO NOTHING;
  RETURN NULL;
END
$fn$;

-- The WHEN clause is evaluated in C for every updated row; the function runs only when the
-- epoch changes. Any path that moves a number's activity (decide, record, a test's UPDATE) is
-- covered, whoever wrote it.
DROP TRIGGER IF EXISTS phone_rate_limits_mark_active ON phone_rate_limits;
CREATE TRIGGER phone_rate_limits_mark_active
  AFTER UPDATE OF last_call_at, last_denied_at ON phone_rate_limits
  FOR EACH ROW
  WHEN (ratelimit_activity_epoch(NEW.last_call_at, NEW.last_denied_at)
        IS DISTINCT FROM ratelimit_activity_epoch(OLD.last_call_at, OLD.last_denied_at))
  EXECUTE FUNCTION ratelimit_mark_active();
DROP TRIGGER IF EXISTS phone_rate_limits_mark_active_insert ON phone_rate_limits;
CREATE TRIGGER phone_rate_limits_mark_active_insert
  AFTER INSERT ON phone_rate_limits
  FOR EACH ROW
  WHEN (NEW.last_call_at IS NOT NULL OR NEW.last_denied_at IS NOT NULL)
  EXECUTE FUNCTION ratelimit_mark_active();

-- Numbers already active when this migration runs (one pass over the table, once).
INSERT INTO rate_limit_active (epoch, phone_hash)
SELECT ratelimit_activity_epoch(last_call_at, last_denied_at), phone_hash
  FROM phone_rate_limits
 WHERE GREATEST(COALESCE(last_call_at, 0), COALESCE(last_denied_at, 0))
       > (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT - 25 * 3600000
ON CONFLICT DO NOTHING;
