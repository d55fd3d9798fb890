-- The policy engine (issue #10, /work/notes/policy-design.md): aggregate counters (prefix,
-- country, global), block_after, stored policies, block/allow lists, an audit trail, and one
-- function deciding a whole batch against every rule at once. Forward-only and re-runnable:
-- every statement is IF NOT EXISTS / OR REPLACE. ratelimit_consume and ratelimit_record stay
-- until every daemon calls the new functions.

-- One row per (rule id, key): `prefix:1h`/`+1415555`, `country:GB:1h`/`GB`, `global:1d`/`*`.
-- The bucket log of src/core/policy/aggregate.ts. Hot rows (the global one is touched by every
-- batch), so room is left on each page for HOT updates, as 005 did for phone_rate_limits.
CREATE TABLE IF NOT EXISTS rate_limit_counters (
  rule_id TEXT NOT NULL,
  key TEXT NOT NULL,
  bucket_ts BIGINT[] NOT NULL DEFAULT '{}',
  bucket_n INTEGER[] NOT NULL DEFAULT '{}',
  -- consumes this counter was the denying rule of
  denied_total BIGINT NOT NULL DEFAULT 0,
  last_at BIGINT,
  updated_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
  PRIMARY KEY (rule_id, key)
) WITH (fillfactor = 80);

-- block_after: the number is denied until blocked_until; `denials` holds its recent denial
-- times (ascending, at most block_after.denials).
ALTER TABLE phone_rate_limits
  ADD COLUMN IF NOT EXISTS blocked_until BIGINT,
  ADD COLUMN IF NOT EXISTS denials BIGINT[] NOT NULL DEFAULT '{}';

-- Applied policies; the active one is the highest version.
CREATE TABLE IF NOT EXISTS rate_limit_policies (
  version SERIAL PRIMARY KEY,
  yaml TEXT NOT NULL,
  applied_by TEXT NOT NULL,
  applied_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
  reason TEXT
);

-- Block and allow entries: a number (by hash) or a prefix (`+1415555`, in the clear: a range
-- is not a phone number).
CREATE TABLE IF NOT EXISTS rate_limit_lists (
  target_type TEXT NOT NULL CHECK (target_type IN ('number', 'prefix')),
  target TEXT NOT NULL,
  kind TEXT NOT NULL CHECK (kind IN ('block', 'allow')),
  masked TEXT,
  expires_at TIMESTAMP WITH TIME ZONE,
  created_by TEXT NOT NULL,
  created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
  reason TEXT,
  PRIMARY KEY (target_type, target)
);

CREATE TABLE IF NOT EXISTS rate_limit_audit (
  id BIGSERIAL PRIMARY KEY,
  at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
  actor TEXT NOT NULL,
  action TEXT NOT NULL,
  target TEXT,
  detail JSONB
);
-- Retention prunes by age.
CREATE INDEX IF NOT EXISTS rate_limit_audit_at_idx ON rate_limit_audit (at);

-- Bumped on every policy or list change; daemons poll it (NOTIFY makes it faster).
CREATE TABLE IF NOT EXISTS rate_limit_changes (
  name TEXT PRIMARY KEY,
  version BIGINT NOT NULL DEFAULT 0
);
INSERT INTO rate_limit_changes (name, version) VALUES ('policy', 0), ('lists', 0)
ON CONFLICT (name) DO NOTHING;

-- One batch of consumes against every rule at once; mirrors decideConsume in
-- src/core/policy/decide.ts request by request, in array order (requests for different numbers
-- share counters, so the order matters and is the callers' arrival order). The whole batch is
-- decided at one instant, read once the rows are locked (decideConsume's `nowMs`); each
-- decision's time is still never before its number's latest call nor, for a counter, before
-- that counter's newest bucket.
--
-- Arguments: per request (hash, region, masked, allowlisted); the number rules (ids, maxes,
-- windows, shadow flags; may be empty: the log then keeps the latest call only); block_after
-- (p_block_denials = 0: none); the aggregate counters of the batch, each once (rule id, key,
-- limit, window, calls per bucket, shadow), and the entries that apply them, one per (request,
-- counter), ordered by request and within a request in evaluation order (request index and
-- counter index, both 1-based). p_now replaces the database clock, for tests only; production
-- passes NULL.
--
-- Locking: numbers first (hash order), then counters ((rule id, key) order). Every path that
-- locks several rows follows this order, so batches may wait for each other but never
-- deadlock. Existing numbers are locked by SELECT … ORDER BY … FOR UPDATE (rows are locked in
-- output order). A number without a row is written once, by an INSERT at the end carrying its
-- final state (an insert to lock it first and an update later would leave a dead tuple per new
-- number); if another transaction inserted it meanwhile, the batch fails with SQLSTATE 40001
-- having written nothing, and decideBatch runs it again, now finding the row. Counters are
-- long-lived, so they are still locked (and created) by INSERT … ON CONFLICT DO UPDATE … WHERE
-- false, which locks existing rows in that order without writing them. Each row is read once
-- and written once per batch.
--
-- State while deciding (plpgsql has no arrays of arrays, and converting arrays to and from text
-- per request was most of the cost): every number's log lives in one flat array, each number
-- owning a segment with room for one more call per request of the batch, its live part between
-- two positions (appending writes past the end, pruning moves the start); the same for
-- counters' buckets, with each counter's running total of its live buckets kept alongside, so
-- a decision walks only the buckets that expired since the last call. block_after's denial
-- logs live in one flat array, p_block_denials slots per number. Results are collected in
-- arrays and returned by one RETURN QUERY; each request's log is a slice of the flat array
-- (positions are never overwritten, only appended to).
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
  r_idx INTEGER, r_allowed BOOLEAN, r_at BIGINT, r_calls BIGINT[], r_rule TEXT, r_shadow TEXT[],
  r_agg_used INTEGER, r_agg_reset BIGINT, r_blocked_until BIGINT
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
         (SELECT array_agg(u.t ORDER BY n.pos, u.o) FROM n, unnest(n.calls || array_fill(NULL::BIGINT, ARRAY[n.cnt])) WITH ORDINALITY AS u(t, o)),
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
      v_bts := v_bts || v_row.bucket_ts || array_fill(NULL::BIGINT, ARRAY[v_row.cnt]);
      v_bn := v_bn || v_row.bucket_n || array_fill(NULL::INTEGER, ARRAY[v_row.cnt]);
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

  RETURN QUERY
    WITH x AS MATERIALIZED (
      SELECT * FROM unnest(o_allowed, o_at, o_lf, o_ll, o_rule, o_sf, o_sl, o_used, o_reset, o_blocked)
                      WITH ORDINALITY AS x(a, t, lf, ll, ru, sf, sl, au, ar, bu, o)
    ), l AS (
      SELECT x.o, array_agg(v_log[g.i] ORDER BY g.i) AS calls FROM x, generate_series(x.lf, x.ll) AS g(i) GROUP BY x.o
    )
    SELECT x.o::INTEGER, x.a, x.t, coalesce(l.calls, '{}'), x.ru, v_sh[x.sf : x.sl], x.au, x.ar, x.bu
      FROM x LEFT JOIN l ON l.o = x.o;
END
$fn$;

-- A number's log after merging calls decided elsewhere: every call still inside the longest
-- window of the newest one, ascending (none dropped for capacity: see ratelimit_record_v2).
CREATE OR REPLACE FUNCTION ratelimit_merge_calls(p_old BIGINT[], p_new BIGINT[], p_horizon BIGINT) RETURNS BIGINT[]
LANGUAGE sql IMMUTABLE AS $fn$
  SELECT coalesce(array_agg(t ORDER BY t), '{}') FROM unnest(p_old || p_new) AS t
   WHERE t > (SELECT max(x) FROM unnest(p_old || p_new) AS x) - p_horizon
$fn$;

-- Decisions made elsewhere (a daemon answering from memory while the database was unreachable)
-- merged in as facts: nothing is decided and nothing allowed is lost. Unlike ratelimit_record,
-- a number's log keeps every call still inside its longest window even beyond capacity (with K
-- daemons it may hold up to K×N after an outage; stats count them all, and decisions stay
-- right: evaluate() names the call that must leave first). Counter entries are one per (event,
-- counter): for an allowed event every counter it counted against (its call is added, in time
-- order); for a denied one the counter that denied it, if any (p_c_denial: its denied_total
-- grows, as ratelimit_decide's would have). Same lock order as ratelimit_decide: numbers by
-- hash, then counters by (rule id, key). A number new to the database is written once, by one
-- INSERT … ON CONFLICT DO UPDATE that also merges into existing rows (no decision depends on
-- the state read, so there is nothing to lock ahead).
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
