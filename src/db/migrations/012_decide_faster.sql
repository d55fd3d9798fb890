-- Issue #12: ratelimit_decide (006) made faster where its cost grew with the batch or the limit;
-- same arguments, same results, same locking (006's comments hold for everything else).
--
-- 1. The flat arrays of logs and buckets had their empty slots filled with NULL. An array with a
--    NULL carries a null bitmap, and PostgreSQL finds an element of such a (flat) array by
--    counting the bitmap up to it: O(position) per access. The statements that read the logs
--    back (array_agg(v_log[i]) per call of every number) were therefore quadratic in the batch's
--    total log length: at limit 1000, 256 numbers with long logs, one batch did not finish in
--    five minutes; with 0 in the empty slots it takes ~0.5 s (bench/sql-decide.ts, limits).
--    Empty slots are never read (only positions between a segment's first and last are live).
-- 2. The reply sliced three arrays per request (v_sh[a:b], o_rused[a:b], o_rreset[a:b]). A
--    slice of a plpgsql array inside a query flattens the whole array first, once per row:
--    quadratic in the batch size, ~25% of a 256-decision batch's server time. Elements are read
--    one by one instead (an element of an expanded array is O(1)).
CREATE OR REPLACE FUNCTION ratelimit_decide(
  p_hashes TEXT[],
  p_regions TEXT[],
  p_masked TEXT[],
  p_allowlisted BOOLEAN[],
  p_rule_ids TEXT[],
  p_maxes INTEGER[],
  p_windows BIGINT[],
  p_shadow BOOLEAN[],
  p_block_denials INTEGER,
  p_block_within BIGINT,
  p_block_for BIGINT,
  p_c_req INTEGER[],
  p_c_counter INTEGER[],
  p_k_rule TEXT[],
  p_k_key TEXT[],
  p_k_limit INTEGER[],
  p_k_window BIGINT[],
  p_k_bucket INTEGER[],
  p_k_shadow BOOLEAN[],
  p_now BIGINT DEFAULT NULL
) RETURNS TABLE (
  r_idx INTEGER, r_allowed BOOLEAN, r_at BIGINT, r_calls BIGINT[], r_counts INTEGER[], r_rule TEXT, r_shadow TEXT[],
  r_used INTEGER[], r_reset BIGINT[], r_agg_used INTEGER, r_agg_reset BIGINT, r_blocked_until BIGINT
)
LANGUAGE plpgsql AS $fn$
DECLARE
  v_total INTEGER := cardinality(p_hashes);
  v_rules INTEGER := coalesce(cardinality(p_maxes), 0);
  v_entries INTEGER := coalesce(cardinality(p_c_req), 0);
  v_kc INTEGER := coalesce(cardinality(p_k_rule), 0);
  v_dn INTEGER := GREATEST(coalesce(p_block_denials, 0), 0);
  v_capacity INTEGER := 1;
  v_horizon BIGINT := 0;
  v_window BIGINT;
  v_now BIGINT;
  -- numbers, in hash order
  v_keys TEXT[];
  v_nregion TEXT[];
  v_nmasked TEXT[];
  v_nex BOOLEAN[];
  v_nlen INTEGER[];
  v_ncnt INTEGER[];
  v_lfirst INTEGER[];
  v_llast INTEGER[];
  v_log BIGINT[];
  v_blocked BIGINT[];
  v_dlog BIGINT[];
  v_dlen INTEGER[];
  v_dtouched BOOLEAN[];
  v_nat BIGINT[];
  v_nden INTEGER[];
  v_nlastden BIGINT[];
  v_kpos INTEGER[];
  v_nkeys INTEGER;
  v_new INTEGER := 0;
  v_inserted INTEGER;
  -- counters, in the caller's order (locked in (rule id, key) order)
  v_csum INTEGER[];
  v_cfirst INTEGER[];
  v_clast INTEGER[];
  v_bts BIGINT[];
  v_bn INTEGER[];
  v_cden INTEGER[];
  v_clastat BIGINT[];
  v_estart INTEGER[];
  -- results
  o_allowed BOOLEAN[];
  o_at BIGINT[];
  o_lf INTEGER[];
  o_ll INTEGER[];
  o_rule TEXT[];
  o_sf INTEGER[];
  o_sl INTEGER[];
  o_used INTEGER[];
  o_reset BIGINT[];
  o_blocked BIGINT[];
  -- each number rule's state after each request, v_rules per request
  o_rused INTEGER[];
  o_rreset BIGINT[];
  v_lo INTEGER;
  v_hi INTEGER;
  v_mid INTEGER;
  v_sh TEXT[] := '{}';
  v_shn INTEGER := 0;
  -- one request
  v_i INTEGER;
  v_k INTEGER;
  v_e INTEGER;
  v_c INTEGER;
  v_agg_c INTEGER;
  v_r INTEGER;
  v_lf INTEGER;
  v_ll INTEGER;
  v_at BIGINT;
  v_eff BIGINT;
  v_since BIGINT;
  v_block BOOLEAN;
  v_rule TEXT;
  v_num_rule TEXT;
  v_num_reset BIGINT;
  v_agg_rule TEXT;
  v_agg_used INTEGER;
  v_agg_reset BIGINT;
  v_sh0 INTEGER;
  v_f INTEGER;
  v_l INTEGER;
  v_sum INTEGER;
  v_base INTEGER;
  v_m INTEGER;
  v_seg INTEGER;
  v_row RECORD;
BEGIN
  IF v_total IS NULL OR v_total IS DISTINCT FROM cardinality(p_regions) OR v_total IS DISTINCT FROM cardinality(p_masked)
     OR v_total IS DISTINCT FROM cardinality(p_allowlisted)
     OR v_rules <> coalesce(cardinality(p_windows), 0) OR v_rules <> coalesce(cardinality(p_shadow), 0)
     OR v_rules <> coalesce(cardinality(p_rule_ids), 0)
     OR v_entries <> coalesce(cardinality(p_c_counter), 0)
     OR v_kc <> coalesce(cardinality(p_k_key), 0) OR v_kc <> coalesce(cardinality(p_k_limit), 0)
     OR v_kc <> coalesce(cardinality(p_k_window), 0) OR v_kc <> coalesce(cardinality(p_k_bucket), 0)
     OR v_kc <> coalesce(cardinality(p_k_shadow), 0) THEN
    RAISE EXCEPTION 'ratelimit_decide: mismatched argument arrays' USING ERRCODE = '22023';
  END IF;
  IF v_total = 0 THEN RETURN; END IF;
  -- v_estart[i]: request i's first entry (v_estart[i+1] ends them); entries out of request
  -- order, or naming a request or counter that is not in the batch, are refused.
  v_estart := array_fill(1, ARRAY[v_total + 1]);
  v_e := 1;
  FOR v_i IN 1 .. CASE WHEN v_entries > 0 THEN v_total ELSE 0 END LOOP
    v_estart[v_i] := v_e;
    WHILE v_e <= v_entries AND p_c_req[v_e] = v_i LOOP
      IF p_c_counter[v_e] IS NULL OR p_c_counter[v_e] < 1 OR p_c_counter[v_e] > v_kc THEN
        RAISE EXCEPTION 'ratelimit_decide: counter entry for a counter that is not in the batch' USING ERRCODE = '22023';
      END IF;
      v_e := v_e + 1;
    END LOOP;
  END LOOP;
  v_estart[v_total + 1] := v_e;
  IF v_e <= v_entries THEN
    RAISE EXCEPTION 'ratelimit_decide: counter entry for a request that is not in the batch, or out of request order' USING ERRCODE = '22023';
  END IF;
  IF v_kc > 0 AND (SELECT count(DISTINCT (r, k)) FROM unnest(p_k_rule, p_k_key) AS t(r, k)) <> v_kc THEN
    RAISE EXCEPTION 'ratelimit_decide: a counter is listed twice' USING ERRCODE = '22023';
  END IF;
  -- Without number rules the log keeps the latest call only (capacity 1, as decide.ts).
  FOR v_r IN 1 .. v_rules LOOP
    v_capacity := GREATEST(v_capacity, p_maxes[v_r]);
    v_horizon := GREATEST(v_horizon, p_windows[v_r]);
  END LOOP;
  IF v_rules = 0 THEN v_horizon := 1; END IF;
  -- The window call_count, window_start and denied_in_window describe (as in 004).
  IF v_rules > 0 THEN
    v_window := p_windows[1];
  ELSE
    v_window := coalesce((SELECT max(w) FROM unnest(p_k_window) AS w), 1);
  END IF;

  -- Lock and read the numbers that have a row; the others are new. Each number's log segment
  -- is followed by one empty slot per request for it; its denial log is the last
  -- p_block_denials denials (all a decision can use), in as many slots.
  WITH q AS MATERIALIZED (
    SELECT DISTINCT ON (h) h, r, m, (count(*) OVER (PARTITION BY h))::INTEGER AS cnt
      FROM unnest(p_hashes, p_regions, p_masked) AS t(h, r, m)
     ORDER BY h, r IS NULL
  ), p AS MATERIALIZED (
    SELECT phone_hash, calls, blocked_until, denials FROM phone_rate_limits
     WHERE phone_hash = ANY (p_hashes) ORDER BY phone_hash FOR UPDATE
  ), n AS MATERIALIZED (
    SELECT q.h, q.r, q.m, q.cnt, p.phone_hash IS NOT NULL AS ex, coalesce(p.calls, '{}') AS calls, p.blocked_until,
           coalesce(p.denials, '{}') AS denials, row_number() OVER (ORDER BY q.h) AS pos
      FROM q LEFT JOIN p ON p.phone_hash = q.h
  )
  SELECT a.*,
         (SELECT array_agg(n.pos::INTEGER ORDER BY t.o) FROM unnest(p_hashes) WITH ORDINALITY AS t(h, o) JOIN n ON n.h = t.h),
         (SELECT array_agg(u.t ORDER BY n.pos, u.o) FROM n, unnest(n.calls || array_fill(0::BIGINT, ARRAY[n.cnt])) WITH ORDINALITY AS u(t, o)),
         (SELECT array_agg(n.denials[GREATEST(0, cardinality(n.denials) - v_dn) + g.j] ORDER BY n.pos, g.j)
            FROM n, generate_series(1, v_dn) AS g(j))
    FROM (SELECT array_agg(h ORDER BY pos), array_agg(r ORDER BY pos), array_agg(m ORDER BY pos), array_agg(ex ORDER BY pos),
                 array_agg(cardinality(calls) ORDER BY pos), array_agg(cnt ORDER BY pos), array_agg(blocked_until ORDER BY pos),
                 array_agg(LEAST(cardinality(denials), v_dn) ORDER BY pos)
            FROM n) AS a
    INTO v_keys, v_nregion, v_nmasked, v_nex, v_nlen, v_ncnt, v_blocked, v_dlen, v_kpos, v_log, v_dlog;
  v_nkeys := cardinality(v_keys);
  v_lfirst := array_fill(0, ARRAY[v_nkeys]);
  v_llast := v_lfirst;
  v_seg := 1;
  FOR v_k IN 1 .. v_nkeys LOOP
    v_lfirst[v_k] := v_seg;
    v_llast[v_k] := v_seg + v_nlen[v_k] - 1;
    v_seg := v_seg + v_nlen[v_k] + v_ncnt[v_k];
    IF NOT v_nex[v_k] THEN v_new := v_new + 1; END IF;
  END LOOP;
  v_nat := array_fill(NULL::BIGINT, ARRAY[v_nkeys]);
  v_nden := array_fill(0, ARRAY[v_nkeys]);
  v_nlastden := v_nat;
  v_dtouched := array_fill(false, ARRAY[v_nkeys]);
  IF v_dlog IS NULL THEN v_dlog := '{}'; END IF;

  IF v_kc > 0 THEN
    INSERT INTO rate_limit_counters AS c (rule_id, key)
    SELECT r, k FROM unnest(p_k_rule, p_k_key) AS t(r, k) ORDER BY r, k
    ON CONFLICT (rule_id, key) DO UPDATE SET updated_at = c.updated_at WHERE false;

    -- Each counter (in the caller's order): its buckets, followed by one empty slot per entry
    -- for it (a call adds at most one bucket), and the sum of its calls. Built row by row: a
    -- batch has few counters, and one SQL aggregate over all their buckets would sort them.
    v_bts := '{}';
    v_bn := '{}';
    v_cfirst := array_fill(0, ARRAY[v_kc]);
    v_clast := v_cfirst;
    v_csum := v_cfirst;
    FOR v_row IN
      SELECT w.i, c.bucket_ts, c.bucket_n, coalesce(e.cnt, 0) AS cnt,
             (SELECT coalesce(sum(x), 0)::INTEGER FROM unnest(c.bucket_n) AS x) AS total
        FROM unnest(p_k_rule, p_k_key) WITH ORDINALITY AS w(r, k, i)
        JOIN rate_limit_counters AS c ON c.rule_id = w.r AND c.key = w.k
        LEFT JOIN (SELECT x, count(*)::INTEGER AS cnt FROM unnest(p_c_counter) AS x GROUP BY x) AS e ON e.x = w.i
       ORDER BY w.i
    LOOP
      v_cfirst[v_row.i] := cardinality(v_bts) + 1;
      v_clast[v_row.i] := cardinality(v_bts) + cardinality(v_row.bucket_ts);
      v_csum[v_row.i] := v_row.total;
      v_bts := v_bts || v_row.bucket_ts || array_fill(0::BIGINT, ARRAY[v_row.cnt]);
      v_bn := v_bn || v_row.bucket_n || array_fill(0, ARRAY[v_row.cnt]);
    END LOOP;
    v_cden := array_fill(0, ARRAY[v_kc]);
    v_clastat := array_fill(NULL::BIGINT, ARRAY[v_kc]);
  END IF;

  -- One instant for the whole batch, taken once every row it depends on is locked.
  v_now := coalesce(p_now, (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT);
  o_allowed := array_fill(NULL::BOOLEAN, ARRAY[v_total]);
  o_at := array_fill(NULL::BIGINT, ARRAY[v_total]);
  o_lf := array_fill(NULL::INTEGER, ARRAY[v_total]);
  o_ll := o_lf;
  o_rule := array_fill(NULL::TEXT, ARRAY[v_total]);
  o_sf := o_lf;
  o_sl := o_lf;
  o_used := o_lf;
  o_reset := o_at;
  o_blocked := o_at;
  o_rused := array_fill(NULL::INTEGER, ARRAY[GREATEST(v_total * v_rules, 1)]);
  o_rreset := array_fill(NULL::BIGINT, ARRAY[GREATEST(v_total * v_rules, 1)]);

  FOR v_i IN 1 .. v_total LOOP
    v_k := v_kpos[v_i];
    v_lf := v_lfirst[v_k];
    v_ll := v_llast[v_k];
    v_at := v_now;
    IF v_ll >= v_lf AND v_log[v_ll] > v_at THEN v_at := v_log[v_ll]; END IF;
    v_block := false;
    v_num_rule := NULL;
    v_num_reset := NULL;
    v_agg_rule := NULL;
    v_agg_used := NULL;
    v_agg_reset := NULL;
    v_sh0 := v_shn + 1;
    IF NOT p_allowlisted[v_i] THEN
      IF v_blocked[v_k] > v_at THEN
        v_block := true;
      ELSE
        FOR v_r IN 1 .. v_rules LOOP
          -- The log is ascending: a rule denies when its max-th most recent call is in its window.
          IF v_ll - v_lf + 1 >= p_maxes[v_r] AND v_log[v_ll - p_maxes[v_r] + 1] > v_at - p_windows[v_r] THEN
            IF p_shadow[v_r] THEN
              v_shn := v_shn + 1;
              v_sh[v_shn] := p_rule_ids[v_r];
            -- Among denying rules, the one that frees up last is named (evaluate() in policy.ts).
            ELSIF v_num_rule IS NULL OR v_log[v_ll - p_maxes[v_r] + 1] + p_windows[v_r] > v_num_reset THEN
              v_num_rule := p_rule_ids[v_r];
              v_num_reset := v_log[v_ll - p_maxes[v_r] + 1] + p_windows[v_r];
            END IF;
          END IF;
        END LOOP;
        FOR v_e IN v_estart[v_i] .. v_estart[v_i + 1] - 1 LOOP
          v_c := p_c_counter[v_e];
          v_f := v_cfirst[v_c];
          v_l := v_clast[v_c];
          v_sum := v_csum[v_c];
          v_eff := v_at;
          IF v_l >= v_f AND v_bts[v_l] > v_eff THEN v_eff := v_bts[v_l]; END IF;
          -- Buckets that left the window since the counter's last call: not counted, not dropped
          -- (a later request of the batch may decide at an earlier instant).
          v_since := v_eff - p_k_window[v_c];
          WHILE v_f <= v_l AND v_bts[v_f] <= v_since LOOP
            v_sum := v_sum - v_bn[v_f];
            v_f := v_f + 1;
          END LOOP;
          IF v_sum + 1 > p_k_limit[v_c] THEN
            IF p_k_shadow[v_c] THEN
              v_shn := v_shn + 1;
              v_sh[v_shn] := p_k_rule[v_c];
            ELSIF v_agg_rule IS NULL THEN
              v_agg_rule := p_k_rule[v_c];
              v_agg_used := v_sum;
              WHILE v_f < v_l AND v_sum - v_bn[v_f] >= p_k_limit[v_c] LOOP
                v_sum := v_sum - v_bn[v_f];
                v_f := v_f + 1;
              END LOOP;
              v_agg_reset := v_bts[v_f] + p_k_window[v_c];
              v_agg_c := v_c;
            END IF;
          END IF;
        END LOOP;
      END IF;
    END IF;
    v_rule := CASE WHEN v_block THEN 'number:block_after' ELSE coalesce(v_num_rule, v_agg_rule) END;
    -- A counter's denials are the consumes it was named for (a number rule is named first).
    IF v_num_rule IS NULL AND v_agg_rule IS NOT NULL THEN v_cden[v_agg_c] := v_cden[v_agg_c] + 1; END IF;
    IF v_rule IS NULL THEN
      -- appendCall: the new call, then drop what exceeds capacity or the longest window.
      v_ll := v_ll + 1;
      v_log[v_ll] := v_at;
      v_lf := GREATEST(v_lf, v_ll - v_capacity + 1);
      WHILE v_lf < v_ll AND v_log[v_lf] <= v_at - v_horizon LOOP
        v_lf := v_lf + 1;
      END LOOP;
      v_lfirst[v_k] := v_lf;
      v_llast[v_k] := v_ll;
      v_nat[v_k] := v_at;
      -- addCall on every counter: drop expired buckets, then fill the newest or open one.
      FOR v_e IN v_estart[v_i] .. v_estart[v_i + 1] - 1 LOOP
        v_c := p_c_counter[v_e];
        v_f := v_cfirst[v_c];
        v_l := v_clast[v_c];
        v_sum := v_csum[v_c];
        v_eff := v_at;
        IF v_l >= v_f AND v_bts[v_l] > v_eff THEN v_eff := v_bts[v_l]; END IF;
        v_since := v_eff - p_k_window[v_c];
        WHILE v_f <= v_l AND v_bts[v_f] <= v_since LOOP
          v_sum := v_sum - v_bn[v_f];
          v_f := v_f + 1;
        END LOOP;
        IF v_l >= v_f AND v_bn[v_l] < p_k_bucket[v_c] THEN
          v_bn[v_l] := v_bn[v_l] + 1;
        ELSE
          v_l := v_l + 1;
          v_bn[v_l] := 1;
        END IF;
        v_bts[v_l] := v_eff;
        v_cfirst[v_c] := v_f;
        v_clast[v_c] := v_l;
        v_csum[v_c] := v_sum + 1;
        v_clastat[v_c] := v_eff;
      END LOOP;
    ELSE
      v_nden[v_k] := v_nden[v_k] + 1;
      v_nlastden[v_k] := v_at;
      v_nat[v_k] := v_at;
      -- block_after counts the number's own denials only: a prefix, country or global budget
      -- running out must not block the innocent numbers it denies. The denials-th denial within
      -- the window blocks and starts a fresh count; denials while blocked are not remembered,
      -- so a block lasts exactly p_block_for.
      IF v_dn > 0 AND v_num_rule IS NOT NULL AND NOT v_block THEN
        v_base := (v_k - 1) * v_dn;
        v_m := 0;
        WHILE v_m < v_dlen[v_k] AND v_dlog[v_base + v_m + 1] <= v_at - p_block_within LOOP
          v_m := v_m + 1;
        END LOOP;
        IF v_m > 0 THEN
          FOR v_r IN 1 .. v_dlen[v_k] - v_m LOOP
            v_dlog[v_base + v_r] := v_dlog[v_base + v_r + v_m];
          END LOOP;
          v_dlen[v_k] := v_dlen[v_k] - v_m;
        END IF;
        IF v_dlen[v_k] + 1 >= v_dn THEN
          v_blocked[v_k] := v_at + p_block_for;
          v_dlen[v_k] := 0;
        ELSE
          v_dlen[v_k] := v_dlen[v_k] + 1;
          v_dlog[v_base + v_dlen[v_k]] := v_at;
        END IF;
        v_dtouched[v_k] := true;
      END IF;
    END IF;
    o_allowed[v_i] := v_rule IS NULL;
    o_at[v_i] := v_at;
    o_lf[v_i] := v_lf;
    o_ll[v_i] := v_ll;
    o_rule[v_i] := v_rule;
    o_sf[v_i] := v_sh0;
    o_sl[v_i] := v_shn;
    IF v_num_rule IS NULL AND NOT v_block THEN
      o_used[v_i] := v_agg_used;
      o_reset[v_i] := v_agg_reset;
    END IF;
    IF v_blocked[v_k] > v_at THEN o_blocked[v_i] := v_blocked[v_k]; END IF;
    -- ruleState() of each number rule on the log after the request: the first call inside the
    -- window by binary search (the log is ascending), then used and resetTime from positions.
    FOR v_r IN 1 .. v_rules LOOP
      v_lo := v_lf;
      v_hi := v_ll + 1;
      WHILE v_lo < v_hi LOOP
        v_mid := (v_lo + v_hi) / 2;
        IF v_log[v_mid] > v_at - p_windows[v_r] THEN v_hi := v_mid; ELSE v_lo := v_mid + 1; END IF;
      END LOOP;
      v_m := (v_i - 1) * v_rules + v_r;
      o_rused[v_m] := v_ll - v_lo + 1;
      IF v_ll - v_lo + 1 < p_maxes[v_r] THEN
        o_rreset[v_m] := CASE WHEN v_lo <= v_ll THEN v_log[v_lo] + p_windows[v_r] ELSE v_at END;
      ELSE
        o_rreset[v_m] := v_log[v_ll - p_maxes[v_r] + 1] + p_windows[v_r];
      END IF;
    END LOOP;
  END LOOP;

  -- New numbers, written once with their final state; any of them inserted meanwhile by
  -- another transaction means this batch decided on a stale (empty) state: fail, write nothing.
  -- Logs are gathered element by element: a slice of the flat array would copy all of it per
  -- number.
  IF v_new > 0 THEN
    WITH u AS MATERIALIZED (
      SELECT * FROM unnest(v_keys, v_nregion, v_nmasked, v_nex, v_lfirst, v_llast, v_nat, v_nden, v_nlastden, v_blocked, v_dlen)
               WITH ORDINALITY AS u(h, r, m, ex, lf, ll, at, denied, last_denied, blocked, dlen, k)
       WHERE NOT u.ex
    ), l AS (
      SELECT u.k, array_agg(v_log[g.i] ORDER BY g.i) AS calls,
             count(*) FILTER (WHERE v_log[g.i] > u.at - v_window) AS n,
             min(v_log[g.i]) FILTER (WHERE v_log[g.i] > u.at - v_window) AS start
        FROM u, generate_series(u.lf, u.ll) AS g(i) GROUP BY u.k
    ), d AS (
      SELECT u.k, array_agg(v_dlog[(u.k - 1) * v_dn + g.j] ORDER BY g.j) AS denials
        FROM u, generate_series(1, u.dlen) AS g(j) GROUP BY u.k
    )
    INSERT INTO phone_rate_limits AS p (phone_hash, region, phone_masked, calls, call_count, window_start, last_call_at,
                                        denied_total, denied_in_window, denied_window_start, last_denied_at, blocked_until, denials)
    SELECT u.h, u.r, u.m, coalesce(l.calls, '{}'), coalesce(l.n, 0), coalesce(l.start, 0), l.calls[cardinality(l.calls)],
           u.denied, u.denied, CASE WHEN u.denied > 0 THEN u.at ELSE 0 END, u.last_denied, u.blocked, coalesce(d.denials, '{}')
      FROM u LEFT JOIN l ON l.k = u.k LEFT JOIN d ON d.k = u.k
     ORDER BY u.h
    ON CONFLICT (phone_hash) DO NOTHING;
    GET DIAGNOSTICS v_inserted = ROW_COUNT;
    IF v_inserted < v_new THEN
      RAISE EXCEPTION 'ratelimit_decide: a new number of this batch was created concurrently; run the batch again'
        USING ERRCODE = '40001';
    END IF;
  END IF;

  IF v_new < v_nkeys THEN
    WITH u AS MATERIALIZED (
      SELECT * FROM unnest(v_keys, v_nex, v_lfirst, v_llast, v_nat, v_nden, v_nlastden, v_blocked, v_dlen, v_dtouched)
               WITH ORDINALITY AS u(h, ex, lf, ll, at, denied, last_denied, blocked, dlen, dtouched, k)
       WHERE u.ex
    ), l AS (
      SELECT u.k, array_agg(v_log[g.i] ORDER BY g.i) AS calls,
             count(*) FILTER (WHERE v_log[g.i] > u.at - v_window) AS n,
             min(v_log[g.i]) FILTER (WHERE v_log[g.i] > u.at - v_window) AS start
        FROM u, generate_series(u.lf, u.ll) AS g(i) GROUP BY u.k
    ), d AS (
      SELECT u.k, array_agg(v_dlog[(u.k - 1) * v_dn + g.j] ORDER BY g.j) AS denials
        FROM u, generate_series(1, u.dlen) AS g(j) WHERE u.dtouched GROUP BY u.k
    )
    UPDATE phone_rate_limits AS p SET
      calls = coalesce(l.calls, '{}'),
      call_count = coalesce(l.n, 0),
      window_start = GREATEST(p.window_start, COALESCE(l.start, p.window_start)),
      last_call_at = COALESCE(l.calls[cardinality(l.calls)], p.last_call_at),
      denied_total = p.denied_total + u.denied,
      denied_in_window = CASE
        WHEN u.denied = 0 THEN p.denied_in_window
        WHEN p.denied_window_start > u.at - v_window THEN p.denied_in_window + u.denied
        ELSE u.denied END,
      denied_window_start = CASE
        WHEN u.denied = 0 OR p.denied_window_start > u.at - v_window THEN p.denied_window_start
        ELSE u.at END,
      last_denied_at = COALESCE(u.last_denied, p.last_denied_at),
      blocked_until = u.blocked,
      -- Untouched when this batch recorded no denial for block_after (it may hold more than
      -- p_block_denials entries after a policy change; decide.ts leaves it as it is too).
      denials = CASE WHEN u.dtouched THEN coalesce(d.denials, '{}') ELSE p.denials END,
      updated_at = NOW()
    FROM u LEFT JOIN l ON l.k = u.k LEFT JOIN d ON d.k = u.k
    WHERE p.phone_hash = u.h;
  END IF;

  IF v_kc > 0 THEN
    UPDATE rate_limit_counters AS c SET
      bucket_ts = v_bts[u.f : u.l],
      bucket_n = v_bn[u.f : u.l],
      denied_total = c.denied_total + u.denied,
      last_at = GREATEST(c.last_at, u.last),
      updated_at = NOW()
    FROM unnest(p_k_rule, p_k_key, v_cfirst, v_clast, v_cden, v_clastat) AS u(r, k, f, l, denied, last)
    WHERE c.rule_id = u.r AND c.key = u.k AND (u.last IS NOT NULL OR u.denied > 0);
  END IF;

  -- The log after each request in runs of `run` calls (1 when it has at most 16), each run as
  -- its newest call and its length: summarizeLog() of src/core/policy/log-summary.ts.
  RETURN QUERY
    WITH x AS MATERIALIZED (
      SELECT x.*, GREATEST(1, (x.ll - x.lf + 16) / 16) AS run
        FROM unnest(o_allowed, o_at, o_lf, o_ll, o_rule, o_sf, o_sl, o_used, o_reset, o_blocked)
               WITH ORDINALITY AS x(a, t, lf, ll, ru, sf, sl, au, ar, bu, o)
    ), l AS (
      SELECT x.o, array_agg(v_log[LEAST(x.lf + g.j * x.run - 1, x.ll)] ORDER BY g.j) AS calls,
             array_agg(LEAST(x.lf + g.j * x.run - 1, x.ll) - (x.lf + (g.j - 1) * x.run) + 1 ORDER BY g.j) AS counts
        FROM x, generate_series(1, (x.ll - x.lf + x.run) / x.run) AS g(j) GROUP BY x.o
    )
    SELECT x.o::INTEGER, x.a, x.t, coalesce(l.calls, '{}'), CASE WHEN x.run > 1 THEN l.counts END, x.ru,
           coalesce((SELECT array_agg(v_sh[g.s] ORDER BY g.s) FROM generate_series(x.sf, x.sl) AS g(s)), '{}'),
           coalesce((SELECT array_agg(o_rused[(x.o - 1) * v_rules + g.r] ORDER BY g.r) FROM generate_series(1, v_rules) AS g(r)), '{}'),
           coalesce((SELECT array_agg(o_rreset[(x.o - 1) * v_rules + g.r] ORDER BY g.r) FROM generate_series(1, v_rules) AS g(r)), '{}'),
           x.au, x.ar, x.bu
      FROM x LEFT JOIN l ON l.o = x.o;
END
$fn$;
