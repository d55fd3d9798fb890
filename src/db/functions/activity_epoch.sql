-- ratelimit_activity_epoch: a number's activity epoch: its latest call or denial, whichever is
-- later (0 when neither), divided by ratelimit_active_epoch_ms(). Used in the WHEN clauses of the
-- phone_rate_limits_mark_active triggers (migration 011), so its signature cannot change without
-- recreating them. The current source, re-applied by migrate() (src/db/migrate.ts).

CREATE OR REPLACE FUNCTION ratelimit_activity_epoch(p_last_call BIGINT, p_last_denied BIGINT) RETURNS BIGINT
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT GREATEST(COALESCE(p_last_call, 0), COALESCE(p_last_denied, 0)) / ratelimit_active_epoch_ms()
$$;
