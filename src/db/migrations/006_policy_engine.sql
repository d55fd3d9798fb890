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
-- share counters, so the order matters and is the callers' arrival order).
--
-- Arguments: per request (hash, region, masked, allowlisted); the number rules (ids, maxes,
-- windows, shadow flags; may be empty: the log then keeps the latest call only); block_after
-- (p_block_denials = 0: none); the aggregate counters flattened, one entry per (request,
-- counter) in evaluation order (request index 1-based, rule id, key, limit, window, calls per
-- bucket, shadow). p_now replaces the database clock, for tests only; production passes NULL.
--
-- Locking, as in 004: numbers first (hash order), then counters ((rule id, key) order), each by
-- one INSERT … ON CONFLICT DO UPDATE … WHERE false, which locks existing rows in that order
-- without writing them. Every path that locks several rows follows this order, so batches may
-- wait for each other but never deadlock. Each row is read once and written once per batch:
-- states live in arrays (as text, since plpgsql has no arrays of arrays) while deciding.
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
  p_c_rule TEXT[],
  p_c_key TEXT[],
  p_c_limit INTEGER[],
  p_c_window BIGINT[],
  p_c_bucket INTEGER[],
  p_c_shadow BOOLEAN[],
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
  v_capacity INTEGER := 1;
  v_horizon BIGINT := 0;
  v_window BIGINT;
  -- numbers, in hash order
  v_keys TEXT[];
  v_logs TEXT[];
  v_blocked BIGINT[];
  v_denlogs TEXT[];
  v_nat BIGINT[];
  v_nden INTEGER[];
  v_nlastden BIGINT[];
  v_kpos INTEGER[];
  -- counters, in (rule id, key) order
  v_crules TEXT[];
  v_ckeys TEXT[];
  v_cts TEXT[];
  v_cn TEXT[];
  v_cden INTEGER[];
  v_clast BIGINT[];
  v_epos INTEGER[];
  v_eorder INTEGER[];
  v_estart INTEGER[];
  -- one request
  v_i INTEGER;
  v_k INTEGER;
  v_e INTEGER;
  v_x INTEGER;
  v_c INTEGER;
  v_agg_c INTEGER;
  v_r INTEGER;
  v_log BIGINT[];
  v_len INTEGER;
  v_at BIGINT;
  v_eff BIGINT;
  v_ok BOOLEAN;
  v_block BOOLEAN;
  v_rule TEXT;
  v_num_rule TEXT;
  v_num_reset BIGINT;
  v_agg_rule TEXT;
  v_agg_used INTEGER;
  v_agg_reset BIGINT;
  v_shadow TEXT[];
  v_ts BIGINT[];
  v_n INTEGER[];
  v_blen INTEGER;
  v_first INTEGER;
  v_sum INTEGER;
  v_left INTEGER;
  v_dl BIGINT[];
BEGIN
  IF v_total IS NULL OR v_total IS DISTINCT FROM cardinality(p_regions) OR v_total IS DISTINCT FROM cardinality(p_masked)
     OR v_total IS DISTINCT FROM cardinality(p_allowlisted)
     OR v_rules <> coalesce(cardinality(p_windows), 0) OR v_rules <> coalesce(cardinality(p_shadow), 0)
     OR v_rules <> coalesce(cardinality(p_rule_ids), 0)
     OR v_entries <> coalesce(cardinality(p_c_rule), 0) OR v_entries <> coalesce(cardinality(p_c_key), 0)
     OR v_entries <> coalesce(cardinality(p_c_limit), 0) OR v_entries <> coalesce(cardinality(p_c_window), 0)
     OR v_entries <> coalesce(cardinality(p_c_bucket), 0) OR v_entries <> coalesce(cardinality(p_c_shadow), 0) THEN
    RAISE EXCEPTION 'ratelimit_decide: mismatched argument arrays' USING ERRCODE = '22023';
  END IF;
  IF v_total = 0 THEN RETURN; END IF;
  IF EXISTS (SELECT 1 FROM unnest(p_c_req) AS q WHERE q IS NULL OR q < 1 OR q > v_total) THEN
    RAISE EXCEPTION 'ratelimit_decide: counter entry for a request that is not in the batch' USING ERRCODE = '22023';
  END IF;
  -- Without number rules the log keeps the latest call only (capacity 1, as decide.ts).
  FOR v_r IN 1 .. v_rules LOOP
    v_capacity := GREATEST(v_capacity, p_maxes[v_r]);
    v_horizon := GREATEST(v_horizon, p_windows[v_r]);
  END LOOP;
  IF v_rules = 0 THEN v_horizon := 1; END IF;
  -- The window call_count, window_start and denied_in_window describe (as in 004).
  v_window := coalesce(p_windows[1], (SELECT max(w) FROM unnest(p_c_window) AS w), 1);

  INSERT INTO phone_rate_limits AS p (phone_hash, window_start, region, phone_masked)
  SELECT DISTINCT ON (h) h, 0, r, m
    FROM unnest(p_hashes, p_regions, p_masked) AS t(h, r, m)
   ORDER BY h, r IS NULL
  ON CONFLICT (phone_hash) DO UPDATE SET updated_at = p.updated_at WHERE false;

  SELECT array_agg(phone_hash ORDER BY phone_hash), array_agg(calls::TEXT ORDER BY phone_hash),
         array_agg(blocked_until ORDER BY phone_hash), array_agg(denials::TEXT ORDER BY phone_hash)
    INTO v_keys, v_logs, v_blocked, v_denlogs
    FROM phone_rate_limits WHERE phone_hash = ANY (p_hashes);
  v_kpos := ARRAY(SELECT k.pos::INTEGER FROM unnest(p_hashes) WITH ORDINALITY AS t(h, o)
                    JOIN unnest(v_keys) WITH ORDINALITY AS k(h, pos) ON k.h = t.h ORDER BY t.o);
  v_nat := array_fill(NULL::BIGINT, ARRAY[cardinality(v_keys)]);
  v_nden := array_fill(0, ARRAY[cardinality(v_keys)]);
  v_nlastden := v_nat;

  IF v_entries > 0 THEN
    INSERT INTO rate_limit_counters AS c (rule_id, key)
    SELECT DISTINCT r, k FROM unnest(p_c_rule, p_c_key) AS t(r, k) ORDER BY r, k
    ON CONFLICT (rule_id, key) DO UPDATE SET updated_at = c.updated_at WHERE false;

    SELECT array_agg(c.rule_id ORDER BY c.rule_id, c.key), array_agg(c.key ORDER BY c.rule_id, c.key),
           array_agg(c.bucket_ts::TEXT ORDER BY c.rule_id, c.key), array_agg(c.bucket_n::TEXT ORDER BY c.rule_id, c.key)
      INTO v_crules, v_ckeys, v_cts, v_cn
      FROM rate_limit_counters AS c
     WHERE (c.rule_id, c.key) IN (SELECT r, k FROM unnest(p_c_rule, p_c_key) AS t(r, k));
    v_cden := array_fill(0, ARRAY[cardinality(v_crules)]);
    v_clast := array_fill(NULL::BIGINT, ARRAY[cardinality(v_crules)]);
    -- Entries in (request, evaluation) order, each with its counter's position.
    SELECT array_agg(e.o::INTEGER ORDER BY e.q, e.o), array_agg(c.pos::INTEGER ORDER BY e.q, e.o)
      INTO v_eorder, v_epos
      FROM unnest(p_c_req, p_c_rule, p_c_key) WITH ORDINALITY AS e(q, r, k, o)
      JOIN unnest(v_crules, v_ckeys) WITH ORDINALITY AS c(r, k, pos) ON c.r = e.r AND c.k = e.k;
    -- v_estart[i]: first position in v_eorder of request i's entries (v_estart[i+1] ends them).
    v_estart := ARRAY(
      SELECT (1 + coalesce(sum(h.n) OVER (ORDER BY g.i ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0))::INTEGER
        FROM generate_series(1, v_total + 1) AS g(i)
        LEFT JOIN (SELECT q, count(*) AS n FROM unnest(p_c_req) AS q GROUP BY q) AS h ON h.q = g.i
       ORDER BY g.i);
  ELSE
    v_estart := array_fill(1, ARRAY[v_total + 1]);
  END IF;

  FOR v_i IN 1 .. v_total LOOP
    v_k := v_kpos[v_i];
    v_log := v_logs[v_k]::BIGINT[];
    v_len := coalesce(cardinality(v_log), 0);
    v_at := coalesce(p_now, (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT);
    IF v_len > 0 AND v_log[v_len] > v_at THEN v_at := v_log[v_len]; END IF;
    v_block := false;
    v_num_rule := NULL;
    v_num_reset := NULL;
    v_agg_rule := NULL;
    v_agg_used := NULL;
    v_agg_reset := NULL;
    v_shadow := '{}';
    IF NOT p_allowlisted[v_i] THEN
      IF v_blocked[v_k] > v_at THEN
        v_block := true;
      ELSE
        FOR v_r IN 1 .. v_rules LOOP
          -- The log is ascending: a rule denies when its max-th most recent call is in its window.
          IF v_len >= p_maxes[v_r] AND v_log[v_len - p_maxes[v_r] + 1] > v_at - p_windows[v_r] THEN
            IF p_shadow[v_r] THEN
              v_shadow := v_shadow || p_rule_ids[v_r];
            -- Among denying rules, the one that frees up last is named (evaluate() in policy.ts).
            ELSIF v_num_rule IS NULL OR v_log[v_len - p_maxes[v_r] + 1] + p_windows[v_r] > v_num_reset THEN
              v_num_rule := p_rule_ids[v_r];
              v_num_reset := v_log[v_len - p_maxes[v_r] + 1] + p_windows[v_r];
            END IF;
          END IF;
        END LOOP;
        FOR v_e IN v_estart[v_i] .. v_estart[v_i + 1] - 1 LOOP
          v_c := v_epos[v_e];
          v_x := v_eorder[v_e];
          v_ts := v_cts[v_c]::BIGINT[];
          v_n := v_cn[v_c]::INTEGER[];
          v_blen := coalesce(cardinality(v_ts), 0);
          v_eff := v_at;
          IF v_blen > 0 AND v_ts[v_blen] > v_eff THEN v_eff := v_ts[v_blen]; END IF;
          v_first := v_blen + 1;
          v_sum := 0;
          WHILE v_first > 1 AND v_ts[v_first - 1] > v_eff - p_c_window[v_x] LOOP
            v_first := v_first - 1;
            v_sum := v_sum + v_n[v_first];
          END LOOP;
          IF v_sum + 1 > p_c_limit[v_x] THEN
            IF p_c_shadow[v_x] THEN
              v_shadow := v_shadow || p_c_rule[v_x];
            ELSIF v_agg_rule IS NULL THEN
              v_agg_rule := p_c_rule[v_x];
              v_agg_used := v_sum;
              v_left := v_sum;
              WHILE v_first < v_blen AND v_left - v_n[v_first] >= p_c_limit[v_x] LOOP
                v_left := v_left - v_n[v_first];
                v_first := v_first + 1;
              END LOOP;
              v_agg_reset := v_ts[v_first] + p_c_window[v_x];
              v_agg_c := v_c;
            END IF;
          END IF;
        END LOOP;
      END IF;
    END IF;
    v_rule := CASE WHEN v_block THEN 'number:block_after' ELSE coalesce(v_num_rule, v_agg_rule) END;
    v_ok := v_rule IS NULL;
    -- A counter's denials are the consumes it was named for (a number rule is named first).
    IF v_num_rule IS NULL AND v_agg_rule IS NOT NULL THEN v_cden[v_agg_c] := v_cden[v_agg_c] + 1; END IF;
    IF v_ok THEN
      v_log := v_log || v_at;
      v_len := v_len + 1;
      v_first := GREATEST(1, v_len - v_capacity + 1);
      WHILE v_first < v_len AND v_log[v_first] <= v_at - v_horizon LOOP
        v_first := v_first + 1;
      END LOOP;
      IF v_first > 1 THEN v_log := v_log[v_first:v_len]; END IF;
      v_logs[v_k] := v_log::TEXT;
      v_nat[v_k] := v_at;
      FOR v_e IN v_estart[v_i] .. v_estart[v_i + 1] - 1 LOOP
        v_c := v_epos[v_e];
        v_x := v_eorder[v_e];
        v_ts := v_cts[v_c]::BIGINT[];
        v_n := v_cn[v_c]::INTEGER[];
        v_blen := coalesce(cardinality(v_ts), 0);
        v_eff := v_at;
        IF v_blen > 0 AND v_ts[v_blen] > v_eff THEN v_eff := v_ts[v_blen]; END IF;
        v_first := 1;
        WHILE v_first <= v_blen AND v_ts[v_first] <= v_eff - p_c_window[v_x] LOOP
          v_first := v_first + 1;
        END LOOP;
        IF v_first > 1 THEN
          v_ts := v_ts[v_first:v_blen];
          v_n := v_n[v_first:v_blen];
          v_blen := v_blen - v_first + 1;
        END IF;
        IF v_blen > 0 AND v_n[v_blen] < p_c_bucket[v_x] THEN
          v_n[v_blen] := v_n[v_blen] + 1;
          v_ts[v_blen] := v_eff;
        ELSE
          v_ts := coalesce(v_ts, '{}') || v_eff;
          v_n := coalesce(v_n, '{}') || 1;
        END IF;
        v_cts[v_c] := v_ts::TEXT;
        v_cn[v_c] := v_n::TEXT;
        v_clast[v_c] := v_eff;
      END LOOP;
    ELSE
      v_nden[v_k] := v_nden[v_k] + 1;
      v_nlastden[v_k] := v_at;
      v_nat[v_k] := v_at;
      IF p_block_denials > 0 AND NOT v_block THEN
        -- block_after: the denials-th denial within the window blocks and starts a fresh count;
        -- denials while blocked are not remembered, so a block lasts exactly p_block_for.
        -- The log is ascending and short: drop its expired head without an SQL statement.
        v_dl := v_denlogs[v_k]::BIGINT[];
        v_first := 1;
        WHILE v_first <= coalesce(cardinality(v_dl), 0) AND v_dl[v_first] <= v_at - p_block_within LOOP
          v_first := v_first + 1;
        END LOOP;
        v_dl := coalesce(v_dl[v_first:cardinality(v_dl)], '{}') || v_at;
        IF cardinality(v_dl) >= p_block_denials THEN
          v_blocked[v_k] := v_at + p_block_for;
          v_dl := '{}';
        END IF;
        v_denlogs[v_k] := v_dl::TEXT;
      END IF;
    END IF;
    r_idx := v_i; r_allowed := v_ok; r_at := v_at; r_calls := v_log; r_rule := v_rule; r_shadow := v_shadow;
    r_agg_used := CASE WHEN v_num_rule IS NULL AND NOT v_block THEN v_agg_used END;
    r_agg_reset := CASE WHEN v_num_rule IS NULL AND NOT v_block THEN v_agg_reset END;
    r_blocked_until := CASE WHEN v_blocked[v_k] > v_at THEN v_blocked[v_k] END;
    RETURN NEXT;
  END LOOP;

  UPDATE phone_rate_limits AS p SET
    calls = u.calls::BIGINT[],
    call_count = (SELECT count(*) FROM unnest(u.calls::BIGINT[]) AS t WHERE t > u.at - v_window),
    window_start = GREATEST(p.window_start,
      COALESCE((SELECT min(t) FROM unnest(u.calls::BIGINT[]) AS t WHERE t > u.at - v_window), p.window_start)),
    last_call_at = COALESCE((u.calls::BIGINT[])[cardinality(u.calls::BIGINT[])], p.last_call_at),
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
    denials = u.denlog::BIGINT[],
    updated_at = NOW()
  FROM unnest(v_keys, v_logs, v_nat, v_nden, v_nlastden, v_blocked, v_denlogs)
       AS u(h, calls, at, denied, last_denied, blocked, denlog)
  WHERE p.phone_hash = u.h;

  IF v_entries > 0 THEN
    UPDATE rate_limit_counters AS c SET
      bucket_ts = u.ts::BIGINT[],
      bucket_n = u.n::INTEGER[],
      denied_total = c.denied_total + u.denied,
      last_at = GREATEST(c.last_at, u.last),
      updated_at = NOW()
    FROM unnest(v_crules, v_ckeys, v_cts, v_cn, v_cden, v_clast) AS u(r, k, ts, n, denied, last)
    WHERE c.rule_id = u.r AND c.key = u.k;
  END IF;
END
$fn$;

-- Decisions made elsewhere (a daemon answering from memory while the database was unreachable)
-- merged in as facts: nothing is decided and nothing allowed is lost. Unlike ratelimit_record,
-- a number's log keeps every call still inside its longest window even beyond capacity (with K
-- daemons it may hold up to K×N after an outage; stats count them all, and decisions stay
-- right: evaluate() names the call that must leave first). Allowed calls are added to every
-- counter entry given for them (one per (event, counter), like ratelimit_decide's), in time
-- order. Same lock order as ratelimit_decide: numbers by hash, then counters by (rule id, key).
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
  p_c_bucket INTEGER[]
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
BEGIN
  IF v_total IS NULL OR v_total IS DISTINCT FROM cardinality(p_regions) OR v_total IS DISTINCT FROM cardinality(p_masked)
     OR v_total IS DISTINCT FROM cardinality(p_at) OR v_total IS DISTINCT FROM cardinality(p_allowed)
     OR coalesce(cardinality(p_maxes), 0) <> coalesce(cardinality(p_windows), 0)
     OR v_entries <> coalesce(cardinality(p_c_rule), 0) OR v_entries <> coalesce(cardinality(p_c_key), 0)
     OR v_entries <> coalesce(cardinality(p_c_window), 0) OR v_entries <> coalesce(cardinality(p_c_bucket), 0) THEN
    RAISE EXCEPTION 'ratelimit_record_v2: mismatched argument arrays' USING ERRCODE = '22023';
  END IF;
  IF v_total = 0 THEN RETURN 0; END IF;

  INSERT INTO phone_rate_limits AS p (phone_hash, window_start, region, phone_masked)
  SELECT DISTINCT ON (h) h, 0, r, m
    FROM unnest(p_hashes, p_regions, p_masked) AS t(h, r, m)
   ORDER BY h, r IS NULL
  ON CONFLICT (phone_hash) DO UPDATE SET updated_at = p.updated_at WHERE false;

  IF v_entries > 0 THEN
    INSERT INTO rate_limit_counters AS c (rule_id, key)
    SELECT DISTINCT e.r, e.k FROM unnest(p_c_event, p_c_rule, p_c_key) AS e(ev, r, k)
     WHERE p_allowed[e.ev] ORDER BY e.r, e.k
    ON CONFLICT (rule_id, key) DO UPDATE SET updated_at = c.updated_at WHERE false;
  END IF;

  WITH ev AS (
    SELECT h, r, m, t, a FROM unnest(p_hashes, p_regions, p_masked, p_at, p_allowed) AS e(h, r, m, t, a)
  ), per AS (
    SELECT h, max(r) AS region, max(m) AS masked,
           coalesce(array_agg(t) FILTER (WHERE a), '{}') AS calls,
           count(*) FILTER (WHERE NOT a)::INTEGER AS denied,
           max(t) FILTER (WHERE NOT a) AS last_denied,
           min(t) FILTER (WHERE NOT a) AS first_denied
      FROM ev GROUP BY h
  ), merged AS (
    SELECT per.*, m.newest,
           ARRAY(SELECT t FROM unnest(p.calls || per.calls) AS t WHERE t > m.newest - v_horizon ORDER BY t) AS log
      FROM per JOIN phone_rate_limits AS p ON p.phone_hash = per.h,
           LATERAL (SELECT max(t) AS newest FROM unnest(p.calls || per.calls) AS t) AS m
  )
  UPDATE phone_rate_limits AS p SET
    calls = u.log,
    call_count = (SELECT count(*) FROM unnest(u.log) AS t WHERE t > u.newest - v_window),
    window_start = GREATEST(p.window_start,
      COALESCE((SELECT min(t) FROM unnest(u.log) AS t WHERE t > u.newest - v_window), p.window_start)),
    last_call_at = COALESCE(u.log[cardinality(u.log)], p.last_call_at),
    region = COALESCE(p.region, u.region),
    phone_masked = COALESCE(p.phone_masked, u.masked),
    denied_total = p.denied_total + u.denied,
    denied_in_window = CASE
      WHEN u.denied = 0 THEN p.denied_in_window
      WHEN p.denied_window_start > u.last_denied - v_window THEN p.denied_in_window + u.denied
      ELSE u.denied END,
    denied_window_start = CASE
      WHEN u.denied = 0 OR p.denied_window_start > u.last_denied - v_window THEN p.denied_window_start
      ELSE u.first_denied END,
    last_denied_at = GREATEST(p.last_denied_at, u.last_denied),
    updated_at = NOW()
  FROM merged AS u
  WHERE p.phone_hash = u.h;
  GET DIAGNOSTICS v_keys = ROW_COUNT;

  IF v_entries > 0 THEN
    -- addCall of src/core/policy/aggregate.ts, once per allowed call, oldest first.
    FOR v_row IN
      SELECT c.rule_id, c.key, c.bucket_ts, c.bucket_n, g.w, g.b, g.times
        FROM (SELECT e.r, e.k, max(e.w) AS w, max(e.b) AS b, array_agg(p_at[e.ev] ORDER BY p_at[e.ev]) AS times
                FROM unnest(p_c_event, p_c_rule, p_c_key, p_c_window, p_c_bucket) AS e(ev, r, k, w, b)
               WHERE p_allowed[e.ev] GROUP BY e.r, e.k) AS g
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
      u_last := u_last || v_ts[cardinality(v_ts)];
    END LOOP;
    UPDATE rate_limit_counters AS c SET
      bucket_ts = u.ts::BIGINT[],
      bucket_n = u.n::INTEGER[],
      last_at = GREATEST(c.last_at, u.last),
      updated_at = NOW()
    FROM unnest(u_rules, u_keys, u_ts, u_n, u_last) AS u(r, k, ts, n, last)
    WHERE c.rule_id = u.r AND c.key = u.k;
  END IF;
  RETURN v_keys;
END
$fn$;
