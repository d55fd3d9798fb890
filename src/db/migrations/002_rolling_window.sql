-- A rolling window needs the times of the latest calls, not a counter per fixed window (which
-- lets 2×max through around a boundary). `calls` keeps at most max(limit) timestamps, ascending.
-- call_count and window_start stay meaningful for readers of the seed schema: the calls in the
-- current window and the time of the oldest of them, as of the row's last update.
ALTER TABLE phone_rate_limits
  ADD COLUMN IF NOT EXISTS calls BIGINT[] NOT NULL DEFAULT '{}',
  ADD COLUMN IF NOT EXISTS last_call_at BIGINT,
  ADD COLUMN IF NOT EXISTS denied_total BIGINT NOT NULL DEFAULT 0,
  ADD COLUMN IF NOT EXISTS denied_in_window INTEGER NOT NULL DEFAULT 0,
  ADD COLUMN IF NOT EXISTS denied_window_start BIGINT NOT NULL DEFAULT 0,
  ADD COLUMN IF NOT EXISTS last_denied_at BIGINT,
  -- The masked form (+1415•••••71) docs/protocol.md allows, so dashboards can show which number
  -- is hammered without the clear number ever being stored.
  ADD COLUMN IF NOT EXISTS phone_masked TEXT;

-- Rows written by the original fixed-window design: treat their counted calls as made at the
-- start of their window, the conservative reading (it can only deny more, never less).
UPDATE phone_rate_limits
   SET calls = array_fill(window_start, ARRAY[LEAST(call_count, 1000)]),
       last_call_at = window_start
 WHERE call_count > 0 AND cardinality(calls) = 0;

-- stats and top only look at numbers active within a window.
CREATE INDEX IF NOT EXISTS phone_rate_limits_last_call_at_idx ON phone_rate_limits (last_call_at);
CREATE INDEX IF NOT EXISTS phone_rate_limits_last_denied_at_idx ON phone_rate_limits (last_denied_at);

-- Who cleared which number, when and why. Only hashes, like everything else.
CREATE TABLE IF NOT EXISTS rate_limit_resets (
  id BIGSERIAL PRIMARY KEY,
  phone_hash TEXT NOT NULL,
  reset_by TEXT NOT NULL,
  reason TEXT,
  previous_count INTEGER NOT NULL,
  reset_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW()
);
CREATE INDEX IF NOT EXISTS rate_limit_resets_phone_hash_idx ON rate_limit_resets (phone_hash, reset_at DESC);

-- One decision per request, many requests per call, so a batch costs one round trip and one
-- commit. Rows are locked in hash order: two batches sharing numbers can wait, never deadlock.
-- The clock is the database's, read after the row lock, and never earlier than the key's
-- latest call, so a window cannot move backwards. Mirrors src/core/policy.ts.
CREATE OR REPLACE FUNCTION ratelimit_consume(
  p_hashes TEXT[],
  p_regions TEXT[],
  p_masked TEXT[],
  p_maxes INTEGER[],
  p_windows BIGINT[]
) RETURNS TABLE (r_idx INTEGER, r_allowed BOOLEAN, r_at BIGINT, r_calls BIGINT[])
LANGUAGE plpgsql AS $fn$
DECLARE
  v_capacity INTEGER := (SELECT max(m) FROM unnest(p_maxes) AS m);
  v_horizon BIGINT := (SELECT max(w) FROM unnest(p_windows) AS w);
  v_rules INTEGER := cardinality(p_maxes);
  v_key TEXT;
  v_region TEXT;
  v_masked TEXT;
  v_log BIGINT[];
  v_at BIGINT;
  v_ok BOOLEAN;
  v_used INTEGER;
  v_denied INTEGER;
  v_last_denied BIGINT;
  v_i INTEGER;
  v_r INTEGER;
  v_n INTEGER;
BEGIN
  IF cardinality(p_hashes) IS DISTINCT FROM cardinality(p_regions)
     OR cardinality(p_hashes) IS DISTINCT FROM cardinality(p_masked) OR v_rules IS NULL
     OR v_rules <> cardinality(p_windows) THEN
    RAISE EXCEPTION 'ratelimit_consume: mismatched argument arrays' USING ERRCODE = '22023';
  END IF;
  FOR v_key IN SELECT DISTINCT h FROM unnest(p_hashes) AS h ORDER BY h LOOP
    SELECT r, m INTO v_region, v_masked FROM unnest(p_hashes, p_regions, p_masked) AS t(h, r, m)
     WHERE h = v_key ORDER BY r IS NULL LIMIT 1;
    INSERT INTO phone_rate_limits (phone_hash, window_start, region, phone_masked)
    VALUES (v_key, 0, v_region, v_masked)
    ON CONFLICT (phone_hash) DO NOTHING;
    SELECT calls INTO v_log FROM phone_rate_limits WHERE phone_hash = v_key FOR UPDATE;
    v_denied := 0;
    FOR v_i IN SELECT o::INTEGER FROM unnest(p_hashes) WITH ORDINALITY AS t(h, o)
                WHERE h = v_key ORDER BY o LOOP
      v_n := cardinality(v_log);
      v_at := (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT;
      IF v_n > 0 AND v_log[v_n] > v_at THEN v_at := v_log[v_n]; END IF;
      v_ok := true;
      FOR v_r IN 1 .. v_rules LOOP
        -- v_log is ascending: the rule denies when its max-th most recent call is still in the window.
        IF v_n >= p_maxes[v_r] AND v_log[v_n - p_maxes[v_r] + 1] > v_at - p_windows[v_r] THEN
          v_ok := false;
          EXIT;
        END IF;
      END LOOP;
      IF v_ok THEN
        v_log := ARRAY(
          SELECT t FROM (
            SELECT t FROM unnest(v_log || v_at) AS u(t)
             WHERE t > v_at - v_horizon ORDER BY t DESC LIMIT v_capacity
          ) AS kept ORDER BY t);
      ELSE
        v_denied := v_denied + 1;
        v_last_denied := v_at;
      END IF;
      r_idx := v_i; r_allowed := v_ok; r_at := v_at; r_calls := v_log;
      RETURN NEXT;
    END LOOP;
    v_used := (SELECT count(*) FROM unnest(v_log) AS t WHERE t > v_at - p_windows[1]);
    UPDATE phone_rate_limits SET
      calls = v_log,
      call_count = v_used,
      window_start = GREATEST(window_start,
        COALESCE((SELECT min(t) FROM unnest(v_log) AS t WHERE t > v_at - p_windows[1]), window_start)),
      last_call_at = v_log[cardinality(v_log)],
      region = COALESCE(region, v_region),
      phone_masked = COALESCE(phone_masked, v_masked),
      denied_total = denied_total + v_denied,
      denied_in_window = CASE
        WHEN v_denied = 0 THEN denied_in_window
        WHEN denied_window_start > v_at - p_windows[1] THEN denied_in_window + v_denied
        ELSE v_denied END,
      denied_window_start = CASE
        WHEN v_denied = 0 OR denied_window_start > v_at - p_windows[1] THEN denied_window_start
        ELSE v_at END,
      last_denied_at = CASE WHEN v_denied > 0 THEN v_last_denied ELSE last_denied_at END,
      updated_at = NOW()
    WHERE phone_hash = v_key;
  END LOOP;
END
$fn$;

-- Calls and denials decided elsewhere (by a daemon answering from memory while the database was
-- unreachable) are merged in as facts: nothing is decided, nothing admitted is lost.
CREATE OR REPLACE FUNCTION ratelimit_record(
  p_hashes TEXT[],
  p_regions TEXT[],
  p_masked TEXT[],
  p_at BIGINT[],
  p_allowed BOOLEAN[],
  p_capacity INTEGER,
  p_horizon BIGINT,
  p_window BIGINT
) RETURNS INTEGER
LANGUAGE plpgsql AS $fn$
DECLARE
  v_key TEXT;
  v_region TEXT;
  v_masked TEXT;
  v_log BIGINT[];
  v_newest BIGINT;
  v_denied INTEGER;
  v_last_denied BIGINT;
  v_keys INTEGER := 0;
BEGIN
  FOR v_key IN SELECT DISTINCT h FROM unnest(p_hashes) AS h ORDER BY h LOOP
    SELECT r, m INTO v_region, v_masked FROM unnest(p_hashes, p_regions, p_masked) AS t(h, r, m)
     WHERE h = v_key ORDER BY r IS NULL LIMIT 1;
    INSERT INTO phone_rate_limits (phone_hash, window_start, region, phone_masked)
    VALUES (v_key, 0, v_region, v_masked)
    ON CONFLICT (phone_hash) DO NOTHING;
    SELECT calls INTO v_log FROM phone_rate_limits WHERE phone_hash = v_key FOR UPDATE;
    SELECT count(*) FILTER (WHERE NOT a), max(t) FILTER (WHERE NOT a)
      INTO v_denied, v_last_denied
      FROM unnest(p_hashes, p_at, p_allowed) AS e(h, t, a) WHERE h = v_key;
    v_log := v_log || ARRAY(SELECT t FROM unnest(p_hashes, p_at, p_allowed) AS e(h, t, a)
                             WHERE h = v_key AND a);
    v_newest := (SELECT max(t) FROM unnest(v_log) AS t);
    v_log := ARRAY(
      SELECT t FROM (
        SELECT t FROM unnest(v_log) AS u(t)
         WHERE t > v_newest - p_horizon ORDER BY t DESC LIMIT p_capacity
      ) AS kept ORDER BY t);
    UPDATE phone_rate_limits SET
      calls = v_log,
      call_count = (SELECT count(*) FROM unnest(v_log) AS t WHERE t > v_newest - p_window),
      window_start = GREATEST(window_start,
        COALESCE((SELECT min(t) FROM unnest(v_log) AS t WHERE t > v_newest - p_window), window_start)),
      last_call_at = v_log[cardinality(v_log)],
      region = COALESCE(region, v_region),
      phone_masked = COALESCE(phone_masked, v_masked),
      denied_total = denied_total + v_denied,
      denied_in_window = CASE
        WHEN v_denied = 0 THEN denied_in_window
        WHEN denied_window_start > v_last_denied - p_window THEN denied_in_window + v_denied
        ELSE v_denied END,
      denied_window_start = CASE
        WHEN v_denied = 0 OR denied_window_start > v_last_denied - p_window THEN denied_window_start
        ELSE (SELECT min(t) FROM unnest(p_hashes, p_at, p_allowed) AS e(h, t, a) WHERE h = v_key AND NOT a) END,
      last_denied_at = GREATEST(last_denied_at, v_last_denied),
      updated_at = NOW()
    WHERE phone_hash = v_key;
    v_keys := v_keys + 1;
  END LOOP;
  RETURN v_keys;
END
$fn$;
