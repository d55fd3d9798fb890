-- ratelimit_record_v2: decisions made elsewhere (a daemon answering from memory while the
-- database was unreachable) merged in as facts: nothing is decided and nothing allowed is lost.
-- The current source, re-applied by migrate() (src/db/migrate.ts); called by recordDecisions in
-- src/db/decisions.ts.
--
-- Unlike a decision, a number's log keeps every call still inside its longest window even beyond
-- capacity (with K daemons it may hold up to K×N after an outage; stats count them all, and
-- decisions stay right: evaluate() names the call that must leave first). Counter entries are one
-- per (event, counter): for an allowed event every counter it counted against (its call is
-- added, in time order); for a denied one the counter that denied it, if any (p_c_denial: its
-- denied_total grows, as ratelimit_decide_v3's would have).
--
-- LOCKING ORDER: as ratelimit_decide_v3 (src/db/functions/decide_v3.sql): numbers by hash, then
-- counters by (rule id, key). A number new to the database is written once, by one INSERT … ON
-- CONFLICT DO UPDATE that also merges into existing rows (no decision depends on the state read,
-- so there is nothing to lock ahead).
--
-- ARGUMENTS: per event p_hashes, p_regions, p_masked, p_at (ms), p_allowed; the number rules'
-- p_maxes (limits) and p_windows (ms); per (event, counter) entry p_c_event (1-based event
-- index), p_c_rule, p_c_key, p_c_window (ms), p_c_bucket (calls per bucket), p_c_denial.
-- Returns the number of numbers written. The previous release calls it positionally: the
-- argument names and types stay (docs/self-hosting.md, support window).
--
-- LEGEND: v_total events, v_entries counter entries, v_horizon the longest number window,
-- v_window the first rule's (call_count's) window, v_keys numbers written; per counter row:
-- v_ts/v_n its buckets (times and calls), v_blen their count, v_first the first live bucket,
-- v_eff the instant a call lands in, v_t a call's time; u_* the counters' new state, one element
-- per counter, for the final UPDATE.

CREATE OR REPLACE FUNCTION ratelimit_record_v2(
  p_hashes TEXT[],
  p_regions TEXT[],
  p_masked TEXT[],
  p_at BIGINT[],
  p_allowed BOOLEAN[],
  p_maxes INTEGER[],
  p_windows BIGINT[],
  p_c_event INTEGER[],
  p_c_rule TEXT[],
  p_c_key TEXT[],
  p_c_window BIGINT[],
  p_c_bucket INTEGER[],
  p_c_denial BOOLEAN[]
) RETURNS INTEGER
LANGUAGE plpgsql AS $fn$
DECLARE
  v_total INTEGER := cardinality(p_hashes);
  v_entries INTEGER := coalesce(cardinality(p_c_event), 0);
  v_horizon BIGINT := coalesce((SELECT max(w) FROM unnest(p_windows) AS w), 1);
  v_window BIGINT := coalesce(p_windows[1], (SELECT max(w) FROM unnest(p_c_window) AS w), 1);
  v_keys INTEGER;
  v_row RECORD;
  v_ts BIGINT[];
  v_n INTEGER[];
  v_blen INTEGER;
  v_first INTEGER;
  v_eff BIGINT;
  v_t BIGINT;
  u_rules TEXT[] := '{}';
  u_keys TEXT[] := '{}';
  u_ts TEXT[] := '{}';
  u_n TEXT[] := '{}';
  u_last BIGINT[] := '{}';
  u_denied INTEGER[] := '{}';
BEGIN
  IF v_total IS NULL OR v_total IS DISTINCT FROM cardinality(p_regions) OR v_total IS DISTINCT FROM cardinality(p_masked)
     OR v_total IS DISTINCT FROM cardinality(p_at) OR v_total IS DISTINCT FROM cardinality(p_allowed)
     OR coalesce(cardinality(p_maxes), 0) <> coalesce(cardinality(p_windows), 0)
     OR v_entries <> coalesce(cardinality(p_c_rule), 0) OR v_entries <> coalesce(cardinality(p_c_key), 0)
     OR v_entries <> coalesce(cardinality(p_c_window), 0) OR v_entries <> coalesce(cardinality(p_c_bucket), 0)
     OR v_entries <> coalesce(cardinality(p_c_denial), 0) THEN
    RAISE EXCEPTION 'ratelimit_record_v2: mismatched argument arrays' USING ERRCODE = '22023';
  END IF;
  IF v_total = 0 THEN RETURN 0; END IF;

  -- Per number: its allowed calls and denials in this batch, written as a new row's state or
  -- merged into the existing row's (ratelimit_merge_calls), in hash order (the lock order).
  INSERT INTO phone_rate_limits AS p (phone_hash, region, phone_masked, calls, call_count, window_start, last_call_at,
                                      denied_total, denied_in_window, denied_window_start, last_denied_at)
  SELECT u.h, u.region, u.masked, u.log,
         (SELECT count(*) FROM unnest(u.log) AS t WHERE t > u.newest - v_window),
         COALESCE((SELECT min(t) FROM unnest(u.log) AS t WHERE t > u.newest - v_window), 0),
         u.log[cardinality(u.log)], u.denied, u.denied, COALESCE(u.first_denied, 0), u.last_denied
    FROM (
      SELECT per.*, ratelimit_merge_calls('{}', per.calls, v_horizon) AS log,
             (SELECT max(t) FROM unnest(per.calls) AS t) AS newest
        FROM (SELECT h, max(r) AS region, max(m) AS masked,
                     coalesce(array_agg(t) FILTER (WHERE a), '{}') AS calls,
                     count(*) FILTER (WHERE NOT a)::INTEGER AS denied,
                     max(t) FILTER (WHERE NOT a) AS last_denied,
                     min(t) FILTER (WHERE NOT a) AS first_denied
                FROM unnest(p_hashes, p_regions, p_masked, p_at, p_allowed) AS e(h, r, m, t, a)
               GROUP BY h) AS per
    ) AS u
   ORDER BY u.h
  ON CONFLICT (phone_hash) DO UPDATE SET
    calls = ratelimit_merge_calls(p.calls, EXCLUDED.calls, v_horizon),
    call_count = (SELECT count(*) FROM unnest(ratelimit_merge_calls(p.calls, EXCLUDED.calls, v_horizon)) AS t
                   WHERE t > (SELECT max(x) FROM unnest(p.calls || EXCLUDED.calls) AS x) - v_window),
    window_start = GREATEST(p.window_start, COALESCE(
      (SELECT min(t) FROM unnest(ratelimit_merge_calls(p.calls, EXCLUDED.calls, v_horizon)) AS t
        WHERE t > (SELECT max(x) FROM unnest(p.calls || EXCLUDED.calls) AS x) - v_window), p.window_start)),
    last_call_at = COALESCE((SELECT max(x) FROM unnest(p.calls || EXCLUDED.calls) AS x), p.last_call_at),
    region = COALESCE(p.region, EXCLUDED.region),
    phone_masked = COALESCE(p.phone_masked, EXCLUDED.phone_masked),
    denied_total = p.denied_total + EXCLUDED.denied_total,
    denied_in_window = CASE
      WHEN EXCLUDED.denied_total = 0 THEN p.denied_in_window
      WHEN p.denied_window_start > EXCLUDED.last_denied_at - v_window THEN p.denied_in_window + EXCLUDED.denied_total
      ELSE EXCLUDED.denied_total END,
    denied_window_start = CASE
      WHEN EXCLUDED.denied_total = 0 OR p.denied_window_start > EXCLUDED.last_denied_at - v_window THEN p.denied_window_start
      ELSE EXCLUDED.denied_window_start END,
    last_denied_at = GREATEST(p.last_denied_at, EXCLUDED.last_denied_at),
    updated_at = NOW();
  GET DIAGNOSTICS v_keys = ROW_COUNT;

  IF v_entries > 0 THEN
    INSERT INTO rate_limit_counters AS c (rule_id, key)
    SELECT DISTINCT e.r, e.k FROM unnest(p_c_event, p_c_rule, p_c_key) AS e(ev, r, k) ORDER BY e.r, e.k
    ON CONFLICT (rule_id, key) DO UPDATE SET updated_at = c.updated_at WHERE false;
  END IF;


  IF v_entries > 0 THEN
    -- addCall of src/core/policy/aggregate.ts, once per allowed call, oldest first.
    FOR v_row IN
      SELECT c.rule_id, c.key, c.bucket_ts, c.bucket_n, g.w, g.b, g.times, g.denied
        FROM (SELECT e.r, e.k, max(e.w) AS w, max(e.b) AS b,
                     coalesce(array_agg(p_at[e.ev] ORDER BY p_at[e.ev]) FILTER (WHERE NOT e.d), '{}') AS times,
                     count(*) FILTER (WHERE e.d)::INTEGER AS denied
                FROM unnest(p_c_event, p_c_rule, p_c_key, p_c_window, p_c_bucket, p_c_denial) AS e(ev, r, k, w, b, d)
               GROUP BY e.r, e.k) AS g
        JOIN rate_limit_counters AS c ON c.rule_id = g.r AND c.key = g.k
       ORDER BY c.rule_id, c.key
    LOOP
      v_ts := v_row.bucket_ts;
      v_n := v_row.bucket_n;
      FOREACH v_t IN ARRAY v_row.times LOOP
        v_blen := coalesce(cardinality(v_ts), 0);
        v_eff := v_t;
        IF v_blen > 0 AND v_ts[v_blen] > v_eff THEN v_eff := v_ts[v_blen]; END IF;
        v_first := 1;
        WHILE v_first <= v_blen AND v_ts[v_first] <= v_eff - v_row.w LOOP
          v_first := v_first + 1;
        END LOOP;
        IF v_first > 1 THEN
          v_ts := v_ts[v_first:v_blen];
          v_n := v_n[v_first:v_blen];
          v_blen := v_blen - v_first + 1;
        END IF;
        IF v_blen > 0 AND v_n[v_blen] < v_row.b THEN
          v_n[v_blen] := v_n[v_blen] + 1;
          v_ts[v_blen] := v_eff;
        ELSE
          v_ts := coalesce(v_ts, '{}') || v_eff;
          v_n := coalesce(v_n, '{}') || 1;
        END IF;
      END LOOP;
      u_rules := u_rules || v_row.rule_id;
      u_keys := u_keys || v_row.key;
      u_ts := u_ts || v_ts::TEXT;
      u_n := u_n || v_n::TEXT;
      u_last := u_last || CASE WHEN cardinality(v_row.times) > 0 THEN v_ts[cardinality(v_ts)] END;
      u_denied := u_denied || v_row.denied;
    END LOOP;
    UPDATE rate_limit_counters AS c SET
      bucket_ts = u.ts::BIGINT[],
      bucket_n = u.n::INTEGER[],
      denied_total = c.denied_total + u.denied,
      last_at = GREATEST(c.last_at, u.last),
      updated_at = NOW()
    FROM unnest(u_rules, u_keys, u_ts, u_n, u_last, u_denied) AS u(r, k, ts, n, last, denied)
    WHERE c.rule_id = u.r AND c.key = u.k;
  END IF;
  RETURN v_keys;
END
$fn$;
