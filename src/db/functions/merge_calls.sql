-- ratelimit_merge_calls: a number's log after merging calls decided elsewhere: every call still
-- inside the longest window (p_horizon, ms) of the newest one, ascending (none dropped for
-- capacity: see src/db/functions/record_v2.sql). The current source, re-applied by migrate().

CREATE OR REPLACE FUNCTION ratelimit_merge_calls(p_old BIGINT[], p_new BIGINT[], p_horizon BIGINT) RETURNS BIGINT[]
LANGUAGE sql IMMUTABLE AS $fn$
  SELECT coalesce(array_agg(t ORDER BY t), '{}') FROM unnest(p_old || p_new) AS t
   WHERE t > (SELECT max(x) FROM unnest(p_old || p_new) AS x) - p_horizon
$fn$;
