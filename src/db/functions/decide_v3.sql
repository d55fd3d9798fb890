-- ratelimit_decide_v3: one batch of consumes decided against every rule of the policy at once,
-- counter kinds (calls, unconverted, distinct), automatic blocks and safe numbers included. It
-- decides exactly as ratelimit_decide_v2 (decide_v2.sql, kept for v0.1.0's daemons during a
-- rolling upgrade) and writes the same rows; what changed is the cost (issue #22: a lone decision
-- was mostly planning, and the default policy's per-request sweep counter made counters the hot
-- spot of a batch), the argument layout (each counter rule's settings once, not per counter) and
-- the reply (one row of flat arrays instead of a row per request). The current source: migrate()
-- (src/db/migrate.ts) re-applies this file after the pending migrations whenever it changes.
--
-- WHAT IT DECIDES. It mirrors decideConsume in src/core/policy/decide.ts request by request, in
-- array order (requests for different numbers share counters, so the order matters: it is the
-- callers' arrival order). The whole batch is decided at one instant, read once the rows are
-- locked (decideConsume's `nowMs`); each decision's instant is still never before its number's
-- latest call nor, for a counter, before that counter's newest bucket.
-- test/db/policy-decisions.test.ts holds it to the TypeScript model with property tests;
-- docs/architecture.md pairs each part.
--
-- ARGUMENTS (call by name, as src/db/decisions.ts does):
--   per request:   p_hashes, p_regions, p_masked, p_allowlisted, p_safe (same length; safe:
--                  block_after never blocks the number, automatic range blocks never deny it;
--                  the caller gives it no conversion or sweep entries)
--   number rules:  p_rule_ids, p_rule_limits, p_rule_windows (ms), p_rule_shadow (same length;
--                  may be empty: the log then keeps the latest call only)
--   block_after:   p_block_denials (0: none), p_block_within (ms), p_block_for (ms: without
--                  escalation steps, the block's length; with them, the cap on each step
--                  (block_after's `for`), NULL or 0: no cap)
--   blocks:        p_block_steps (each escalation step's length, ms; empty: no `blocks` group,
--                  so no automatic range blocks and block_after blocks for p_block_for),
--                  p_block_decay (ms: a block ending longer ago than this restarts at step 1)
--   counter rules: each (rule, limit) of the batch's counters once (a baseline rule has one id
--                  and a limit per country): p_crule_ids, p_crule_limits, p_crule_windows (ms),
--                  p_crule_bucket_calls (calls per bucket), p_crule_shadow, p_crule_kinds
--                  ('calls', 'unconverted' or 'distinct': counterKind() in
--                  src/core/policy/types.ts; 'unconverted' decides like 'calls', outcomes take
--                  calls back elsewhere). A counter blocks its range when its kind is not 'calls'
--                  and its key is a prefix (blocksRange() in src/core/policy/counters.ts).
--   counters:      each aggregate counter of the batch once: p_counter_rule (1-based index into
--                  the counter rule arrays), p_counter_keys
--   entries:       one per (request, counter that applies to it), ordered by request and within
--                  a request in evaluation order: p_entry_request, p_entry_counter (1-based
--                  indexes into the request and counter arrays)
--   p_now:         replaces the database clock, for tests only; production passes NULL.
--
-- REPLY: one row of flat arrays (a row per request cost a query joining three per-request
-- subqueries; src/db/decisions.ts cuts the arrays per request), small whatever the limits
-- (shapes of src/core/policy/log-summary.ts):
--   per request: r_allowed, r_at (the decision instant), r_log_len (the number's
--     log length after the request),
--   r_used[], r_reset[]: v_rule_count per request, each number rule's state after the request
--     (calls in its window and its reset time, as ruleState() in src/core/policy/log.ts; the
--     first call inside the window is found by binary search in the ascending log, so the cost
--     does not grow with the limit),
--   r_calls[]: per request, one after the other, the log after the request for the daemon's
--     in-memory fallback: the log itself when it holds at most {{LOG_SUMMARY_ENTRIES}} calls, else at most
--     {{LOG_SUMMARY_ENTRIES}} runs of it, each run's newest call (the runs' lengths follow from r_log_len as
--     summarizeLog() cuts them),
--   r_shadow[], r_shadow_ends[]: every shadow rule that would have denied, request after
--     request; request i's end in r_shadow (NULL when no shadow rule would have denied at all),
--   and, NULL as a whole when no request of the batch has one, else per request:
--   r_rule (the denying rule, NULL when allowed),
--   r_agg_used, r_agg_reset: when an aggregate counter denied, its count and when a call fits
--     (for `auto:block`: the blocked counter's count and the later of the block's end and
--     when that counter itself fits a call),
--   r_blocked_until: block_after's block, or NULL,
--   r_blocked_by: for `auto:block`, the rule id of the counter whose range block denied (its
--     group gives the reply's reason), else NULL.
--
-- LOCKING ORDER. Numbers first (hash order), then counters ((rule id, key) order). Every path
-- that locks several rows follows this order, so batches may wait for each other but never
-- deadlock. Existing numbers are locked by SELECT … ORDER BY … FOR UPDATE (rows are locked in
-- output order). A number without a row is written once, by an INSERT at the end carrying its
-- final state (an insert to lock it first and an update later would leave a dead tuple per new
-- number); if another transaction inserted it meanwhile, the batch fails with SQLSTATE 40001
-- having written nothing, and decideBatch runs it again, now finding the row. Counters are
-- long-lived, so they are still locked (and created) by INSERT … ON CONFLICT DO UPDATE … WHERE
-- false, which locks existing rows in that order without writing them (DISTINCT: a counter
-- listed twice is refused by the read that follows, with this function's own error). Each row
-- is read once and written once per batch.
--
-- PLANS. `enable_seqscan = off`: the row reads are keyed by primary key, but a plan made while
-- phone_rate_limits is nearly empty (every fresh database) may read it sequentially, and a pooled
-- backend keeps a cached plan until long after the table has grown. With sequential scans
-- disabled for this function's statements, every plan uses the primary keys.
-- The plan cache mode is left at its default (custom plans first, a generic plan once its cost
-- compares well), measured against `force_generic_plan` end to end: forced generic plans saved
-- ~12% of PostgreSQL's CPU per decision for the default policy's uniform traffic, but doubled it
-- for a full policy (number, prefix, country, global) whose country counter denies, where some
-- statement's generic plan is a poor one. Lone decisions need neither: a batch of one number and
-- one counter takes the scalar by-key statements below, which are cheap to plan. With sequential
-- scans off every plan stays keyed; test/db/plans.test.ts fails if the decision path scans the
-- table, and bench/sql-single.ts measures a lone decision under each mode.
--
-- ARRAY LAYOUT (plpgsql has no arrays of arrays, and converting arrays to and from text per
-- request costs more than the decision). Every number's log lives in one flat array, v_logs:
-- each number owns a segment with room for one more call per request of the batch for it, its
-- live part between v_log_first and v_log_last (appending writes past the end, pruning moves the
-- start). The same for counters' buckets (v_bucket_ts, v_bucket_n), with each counter's calls in
-- its window kept alongside (v_ctr_calls), so a decision walks only the buckets that expired
-- since the counter's last call. block_after's denial logs live in one flat array, v_denial_logs,
-- p_block_denials slots per number. Empty slots hold 0, never NULL: an array with a NULL carries a
-- null bitmap, and finding an element then costs O(position), which made reading the logs back
-- quadratic. Each flat array is built by one set-based SELECT (never by appending row by row:
-- `a := a || b` copies all of `a` each time, quadratic in the batch's counters). Elements are
-- read one by one, never sliced inside a query: a slice of a plpgsql array in a query flattens
-- the whole array once per row; the writes gather each row's elements over generate_series,
-- per row (a LATERAL or correlated aggregate), never with GROUP BY (a grouped ordered aggregate
-- sorts every group apart). The reads aggregate a MATERIALIZED CTE whose rows were written in
-- position order (a window's ORDER BY sorted them) and the unnest of each of its rows, so they
-- need no ORDER BY inside the aggregates (each such ORDER BY sorted its input again);
-- test/db/policy-decisions.test.ts would see a misplaced log.
-- The reply's arrays are filled in the loop over requests, element by element (in place).
--
-- ONE NUMBER, ONE COUNTER. A batch whose requests are all for one number (every lone decision,
-- and the pattern of one number hammered) reads and writes that number's row by key, with scalar
-- statements; a batch with one counter (a lone decision under most policies) locks, reads and
-- writes it the same way. The set-based statements give the same state for any batch but cost
-- a fixed amount to start that a lone decision would pay in full. test/db/policy-decisions.test.ts
-- holds the paths to the same rows and decisions (and to ratelimit_decide_v2's).
--
-- SKIPPED WHEN ABSENT. No counter statement runs for a batch without counters; a counter's
-- buckets are written back only when it took a call; the denial logs are read only when
-- block_after is on; the reply's per-request arrays that are mostly NULL (denying rule,
-- aggregate, blocks) are made only when a request needs them.
--
-- LEGEND of the locals (arrays indexed by number position are in hash order, the lock order):
--   v_request_count, v_rule_count, v_entry_count, v_counter_count, v_crule_count: the argument
--     arrays' lengths
--   v_denial_slots      block_after's denials per number (0: block_after is off)
--   v_log_capacity      the largest rule limit: the most calls a log keeps
--   v_log_horizon       the longest rule window: calls older than that are dropped
--   v_stats_window      the window of call_count/window_start/denied_in_window (the first rule's)
--   v_now               the batch's instant (ms)
--   per number position: v_num_hash, v_num_region, v_num_masked, v_num_exists (has a row), v_num_block_level
--     (the escalation step of its latest block, 0: never blocked),
--     v_num_stored_calls (calls read from its row), v_num_requests (requests for it in the batch),
--     v_log_first/v_log_last (live part of its segment of v_logs), v_num_blocked_until,
--     v_denial_count (live denials in its v_denial_logs slots), v_denials_changed,
--     v_num_last_at (its latest decision instant), v_num_denied, v_num_last_denied
--   v_request_num_pos   request i's number position
--   v_request_entries   request i's first entry (v_request_entries[i + 1] ends them)
--   per counter: v_ctr_rule/v_ctr_limit/v_ctr_window/v_ctr_bucket/v_ctr_shadow/v_ctr_kind (its
--     rule's), v_ctr_range (it blocks its range), v_ctr_slots (entries for it: empty bucket
--     slots), v_ctr_first/v_ctr_last (live buckets in v_bucket_ts/v_bucket_n), v_ctr_calls
--     (calls in its live buckets), v_ctr_denied, v_ctr_last_at, v_ctr_blocked_until/
--     v_ctr_block_level (its range's latest automatic block, kept after it ends), v_ctr_block_changed
--   v_block_steps       the escalation steps given (0: no `blocks` group)
--   v_shadow_count      entries of r_shadow so far
--   v_calls_count       entries of r_calls so far; v_run: the current request's run length
--   v_one_ts/v_one_cn/v_one_cblocked/v_one_clevel: the one counter's row (ONE COUNTER), then
--     its buckets as written
--   v_single            every request is for one number (ONE NUMBER); v_one_calls/v_one_denials/
--     v_one_blocked/v_one_level its row as read, then v_one_calls/v_one_n/v_one_start/
--     v_one_denials what is written (its log, calls and first call in the stats window, denials)
--   in the loop over requests: v_i (request), v_num_pos, v_log_from/v_log_to (its number's live
--     log), v_at (the decision instant), v_entry and v_ctr (an entry and its counter),
--     v_bucket_from/v_bucket_to/v_window_calls/v_ctr_at/v_ctr_since (that counter's live buckets,
--     calls, instant and window start), v_num_rule/v_num_reset (the denying number rule and when
--     it frees up), v_agg_rule/v_agg_used/v_agg_reset/v_agg_ctr (the denying counter),
--     v_is_blocked (block_after), v_denial_base (the number's first denial slot), v_idx (a slot
--     or a count of expired denials), v_lo/v_hi/v_mid (binary search), v_prev_call (the number's
--     latest call before this request, NULL when none: what a distinct counter counted),
--     v_moves (per entry of the request: its distinct counter already counts the number, so the
--     call moves it), v_trips (per entry: its range counter's limit denied, so the range blocks),
--     v_range (the entry's counter may block or be blocked for this request), v_block_by (the
--     counter whose automatic block denied), v_level (an escalation step)
--
-- ROLLING UPGRADES. A daemon of this release calls this function by name with these argument
-- types and reads these result columns: keep both, or add a new name (ratelimit_decide_v4) and
-- drop this one a release later (docs/self-hosting.md, support window).

CREATE OR REPLACE FUNCTION ratelimit_decide_v3(
  p_hashes TEXT[],
  p_regions TEXT[],
  p_masked TEXT[],
  p_allowlisted BOOLEAN[],
  p_safe BOOLEAN[],
  p_rule_ids TEXT[],
  p_rule_limits INTEGER[],
  p_rule_windows BIGINT[],
  p_rule_shadow BOOLEAN[],
  p_block_denials INTEGER,
  p_block_within BIGINT,
  p_block_for BIGINT,
  p_block_steps BIGINT[],
  p_block_decay BIGINT,
  p_entry_request INTEGER[],
  p_entry_counter INTEGER[],
  p_counter_rule INTEGER[],
  p_counter_keys TEXT[],
  p_crule_ids TEXT[],
  p_crule_limits INTEGER[],
  p_crule_windows BIGINT[],
  p_crule_bucket_calls INTEGER[],
  p_crule_shadow BOOLEAN[],
  p_crule_kinds TEXT[],
  p_now BIGINT DEFAULT NULL,
  OUT r_allowed BOOLEAN[],
  OUT r_at BIGINT[],
  OUT r_rule TEXT[],
  OUT r_shadow TEXT[],
  OUT r_shadow_ends INTEGER[],
  OUT r_used INTEGER[],
  OUT r_reset BIGINT[],
  OUT r_log_len INTEGER[],
  OUT r_calls BIGINT[],
  OUT r_agg_used INTEGER[],
  OUT r_agg_reset BIGINT[],
  OUT r_blocked_until BIGINT[],
  OUT r_blocked_by TEXT[]
)
LANGUAGE plpgsql
SET enable_seqscan = off
AS $fn$
DECLARE
  v_request_count INTEGER := cardinality(p_hashes);
  v_rule_count INTEGER := coalesce(cardinality(p_rule_limits), 0);
  v_entry_count INTEGER := coalesce(cardinality(p_entry_request), 0);
  v_counter_count INTEGER := coalesce(cardinality(p_counter_rule), 0);
  v_crule_count INTEGER := coalesce(cardinality(p_crule_ids), 0);
  v_denial_slots INTEGER := GREATEST(coalesce(p_block_denials, 0), 0);
  v_block_steps INTEGER := coalesce(cardinality(p_block_steps), 0);
  v_log_capacity INTEGER := 1;
  v_log_horizon BIGINT := 0;
  v_stats_window BIGINT;
  v_now BIGINT;
  -- numbers, in hash order
  v_num_hash TEXT[];
  v_num_region TEXT[];
  v_num_masked TEXT[];
  v_num_exists BOOLEAN[];
  v_num_stored_calls INTEGER[];
  v_num_requests INTEGER[];
  v_log_first INTEGER[];
  v_log_last INTEGER[];
  v_logs BIGINT[];
  v_num_blocked_until BIGINT[];
  v_num_block_level INTEGER[];
  v_denial_logs BIGINT[];
  v_denial_count INTEGER[];
  v_denials_changed BOOLEAN[];
  v_num_last_at BIGINT[];
  v_num_denied INTEGER[];
  v_num_last_denied BIGINT[];
  v_request_num_pos INTEGER[];
  v_num_count INTEGER;
  v_new_count INTEGER := 0;
  v_inserted INTEGER;
  -- counters, in the caller's order (locked in (rule id, key) order)
  v_ctr_calls INTEGER[];
  v_ctr_slots INTEGER[];
  v_ctr_rule TEXT[];
  v_ctr_limit INTEGER[];
  v_ctr_window BIGINT[];
  v_ctr_bucket INTEGER[];
  v_ctr_shadow BOOLEAN[];
  v_ctr_kind TEXT[];
  v_ctr_range BOOLEAN[];
  v_ctr_first INTEGER[];
  v_ctr_last INTEGER[];
  v_bucket_ts BIGINT[];
  v_bucket_n INTEGER[];
  v_ctr_denied INTEGER[];
  v_ctr_last_at BIGINT[];
  v_ctr_blocked_until BIGINT[];
  v_ctr_block_level INTEGER[];
  v_ctr_block_changed BOOLEAN[];
  v_request_entries INTEGER[];
  v_calls_count INTEGER := 0;
  -- the one number of a single-number batch
  v_single BOOLEAN := true;
  v_one_calls BIGINT[];
  v_one_denials BIGINT[];
  v_one_blocked BIGINT;
  v_one_level INTEGER;
  v_one_n INTEGER;
  v_one_start BIGINT;
  -- the one counter of a one-counter batch
  v_one_ts BIGINT[];
  v_one_cn INTEGER[];
  v_one_cblocked BIGINT;
  v_one_clevel INTEGER;
  v_run INTEGER;
  v_lo INTEGER;
  v_hi INTEGER;
  v_mid INTEGER;
  v_shadow_count INTEGER := 0;
  -- one request
  v_i INTEGER;
  v_num_pos INTEGER;
  v_entry INTEGER;
  v_ctr INTEGER;
  v_agg_ctr INTEGER;
  v_r INTEGER;
  v_log_from INTEGER;
  v_log_to INTEGER;
  v_at BIGINT;
  v_ctr_at BIGINT;
  v_ctr_since BIGINT;
  v_is_blocked BOOLEAN;
  v_rule TEXT;
  v_num_rule TEXT;
  v_num_reset BIGINT;
  v_agg_rule TEXT;
  v_agg_used INTEGER;
  v_agg_reset BIGINT;
  v_bucket_from INTEGER;
  v_bucket_to INTEGER;
  v_window_calls INTEGER;
  v_denial_base INTEGER;
  v_idx INTEGER;
  v_seg_start INTEGER;
  v_prev_call BIGINT;
  v_moves BOOLEAN[];
  v_trips BOOLEAN[];
  v_range BOOLEAN;
  v_block_by INTEGER;
  v_level INTEGER;
BEGIN
  IF v_request_count IS NULL OR v_request_count IS DISTINCT FROM cardinality(p_regions) OR v_request_count IS DISTINCT FROM cardinality(p_masked)
     OR v_request_count IS DISTINCT FROM cardinality(p_allowlisted) OR v_request_count IS DISTINCT FROM cardinality(p_safe)
     OR v_rule_count <> coalesce(cardinality(p_rule_windows), 0) OR v_rule_count <> coalesce(cardinality(p_rule_shadow), 0)
     OR v_rule_count <> coalesce(cardinality(p_rule_ids), 0)
     OR v_entry_count <> coalesce(cardinality(p_entry_counter), 0)
     OR v_counter_count <> coalesce(cardinality(p_counter_keys), 0)
     OR v_crule_count <> coalesce(cardinality(p_crule_limits), 0) OR v_crule_count <> coalesce(cardinality(p_crule_windows), 0)
     OR v_crule_count <> coalesce(cardinality(p_crule_bucket_calls), 0) OR v_crule_count <> coalesce(cardinality(p_crule_shadow), 0)
     OR v_crule_count <> coalesce(cardinality(p_crule_kinds), 0) THEN
    RAISE EXCEPTION 'ratelimit_decide_v3: mismatched argument arrays' USING ERRCODE = '22023';
  END IF;
  IF v_request_count = 0 THEN RETURN; END IF;
  -- v_request_entries[i]: request i's first entry (v_request_entries[i+1] ends them); entries out of request
  -- order, or naming a request or counter that is not in the batch, are refused.
  v_request_entries := array_fill(1, ARRAY[v_request_count + 1]);
  v_entry := 1;
  FOR v_i IN 1 .. CASE WHEN v_entry_count > 0 THEN v_request_count ELSE 0 END LOOP
    v_request_entries[v_i] := v_entry;
    WHILE v_entry <= v_entry_count AND p_entry_request[v_entry] = v_i LOOP
      IF p_entry_counter[v_entry] IS NULL OR p_entry_counter[v_entry] < 1 OR p_entry_counter[v_entry] > v_counter_count THEN
        RAISE EXCEPTION 'ratelimit_decide_v3: counter entry for a counter that is not in the batch' USING ERRCODE = '22023';
      END IF;
      v_entry := v_entry + 1;
    END LOOP;
  END LOOP;
  v_request_entries[v_request_count + 1] := v_entry;
  IF v_entry <= v_entry_count THEN
    RAISE EXCEPTION 'ratelimit_decide_v3: counter entry for a request that is not in the batch, or out of request order' USING ERRCODE = '22023';
  END IF;
  FOR v_ctr IN 1 .. v_counter_count LOOP
    IF p_counter_rule[v_ctr] IS NULL OR p_counter_rule[v_ctr] < 1 OR p_counter_rule[v_ctr] > v_crule_count THEN
      RAISE EXCEPTION 'ratelimit_decide_v3: a counter of a rule that is not in the batch' USING ERRCODE = '22023';
    END IF;
  END LOOP;
  -- Without number rules the log keeps the latest call only (capacity 1, as src/core/policy/decide.ts).
  FOR v_r IN 1 .. v_rule_count LOOP
    v_log_capacity := GREATEST(v_log_capacity, p_rule_limits[v_r]);
    v_log_horizon := GREATEST(v_log_horizon, p_rule_windows[v_r]);
  END LOOP;
  IF v_rule_count = 0 THEN v_log_horizon := 1; END IF;
  -- The window call_count, window_start and denied_in_window describe (as in 004).
  IF v_rule_count > 0 THEN
    v_stats_window := p_rule_windows[1];
  ELSE
    v_stats_window := 1;
    FOR v_r IN 1 .. v_crule_count LOOP
      v_stats_window := GREATEST(v_stats_window, p_crule_windows[v_r]);
    END LOOP;
  END IF;

  -- A batch of one number (a lone decision, or every request for one number) reads it with one
  -- primary-key lookup; the set-based statement below gives the same state for any batch, at a
  -- fixed cost a lone decision would pay in full. Its region and mask: the first request's that
  -- has a region (the statement's DISTINCT ON keeps one that has a region).
  FOR v_i IN 2 .. v_request_count LOOP
    IF p_hashes[v_i] IS DISTINCT FROM p_hashes[1] THEN
      v_single := false;
      EXIT;
    END IF;
  END LOOP;
  IF v_single THEN
    v_i := 1;
    FOR v_idx IN 1 .. v_request_count LOOP
      IF p_regions[v_idx] IS NOT NULL THEN
        v_i := v_idx;
        EXIT;
      END IF;
    END LOOP;
    SELECT p.calls, p.blocked_until, p.block_level, p.denials INTO v_one_calls, v_one_blocked, v_one_level, v_one_denials
      FROM phone_rate_limits AS p WHERE p.phone_hash = p_hashes[1] FOR UPDATE;
    v_num_exists := ARRAY[FOUND];
    v_one_calls := coalesce(v_one_calls, '{}');
    v_one_denials := coalesce(v_one_denials, '{}');
    v_num_hash := ARRAY[p_hashes[1]];
    v_num_region := ARRAY[p_regions[v_i]];
    v_num_masked := ARRAY[p_masked[v_i]];
    v_num_stored_calls := ARRAY[cardinality(v_one_calls)];
    v_num_requests := ARRAY[v_request_count];
    v_num_blocked_until := ARRAY[v_one_blocked];
    v_num_block_level := ARRAY[coalesce(v_one_level, 0)];
    v_denial_count := ARRAY[LEAST(cardinality(v_one_denials), v_denial_slots)];
    v_request_num_pos := array_fill(1, ARRAY[v_request_count]);
    v_logs := v_one_calls || array_fill(0::BIGINT, ARRAY[v_request_count]);
    v_idx := GREATEST(0, cardinality(v_one_denials) - v_denial_slots);
    v_denial_logs := '{}';
    FOR v_r IN 1 .. v_denial_slots LOOP
      v_denial_logs[v_r] := v_one_denials[v_idx + v_r];
    END LOOP;
  ELSE
    -- Lock and read the numbers that have a row; the others are new. Each number's log segment
    -- is followed by one empty slot per request for it; its denial log is the last
    -- p_block_denials denials (all a decision can use), in as many slots.
    WITH q AS MATERIALIZED (
      SELECT DISTINCT ON (h) h, r, m, (count(*) OVER (PARTITION BY h))::INTEGER AS cnt
        FROM unnest(p_hashes, p_regions, p_masked) AS t(h, r, m)
       ORDER BY h, r IS NULL
    ), p AS MATERIALIZED (
      SELECT phone_hash, calls, blocked_until, block_level, denials FROM phone_rate_limits
       WHERE phone_hash = ANY (p_hashes) ORDER BY phone_hash FOR UPDATE
    ), n AS MATERIALIZED (
      SELECT q.h, q.r, q.m, q.cnt, p.phone_hash IS NOT NULL AS ex, coalesce(p.calls, '{}') AS calls, p.blocked_until,
             coalesce(p.block_level, 0) AS block_level,
             coalesce(p.denials, '{}') AS denials, row_number() OVER (ORDER BY q.h) AS pos
        FROM q LEFT JOIN p ON p.phone_hash = q.h
    )
    SELECT a.*,
           (SELECT array_agg(n.pos::INTEGER ORDER BY t.o) FROM unnest(p_hashes) WITH ORDINALITY AS t(h, o) JOIN n ON n.h = t.h),
           (SELECT array_agg(u.t) FROM n, unnest(n.calls || array_fill(0::BIGINT, ARRAY[n.cnt])) AS u(t)),
           CASE WHEN v_denial_slots > 0 THEN
             -- Ordered explicitly: generate_series does not depend on n, so the planner may
             -- put it outside the join and visit slots before numbers.
             (SELECT array_agg(n.denials[GREATEST(0, cardinality(n.denials) - v_denial_slots) + g.j] ORDER BY n.pos, g.j)
                FROM n, generate_series(1, v_denial_slots) AS g(j)) END
      FROM (SELECT array_agg(h), array_agg(r), array_agg(m), array_agg(ex),
                   array_agg(cardinality(calls)), array_agg(cnt), array_agg(blocked_until),
                   array_agg(block_level), array_agg(LEAST(cardinality(denials), v_denial_slots))
              FROM n) AS a
      INTO v_num_hash, v_num_region, v_num_masked, v_num_exists, v_num_stored_calls, v_num_requests, v_num_blocked_until, v_num_block_level, v_denial_count, v_request_num_pos, v_logs, v_denial_logs;
  END IF;
  v_num_count := cardinality(v_num_hash);
  v_log_first := array_fill(0, ARRAY[v_num_count]);
  v_log_last := v_log_first;
  v_seg_start := 1;
  FOR v_num_pos IN 1 .. v_num_count LOOP
    v_log_first[v_num_pos] := v_seg_start;
    v_log_last[v_num_pos] := v_seg_start + v_num_stored_calls[v_num_pos] - 1;
    v_seg_start := v_seg_start + v_num_stored_calls[v_num_pos] + v_num_requests[v_num_pos];
    IF NOT v_num_exists[v_num_pos] THEN v_new_count := v_new_count + 1; END IF;
  END LOOP;
  v_num_last_at := array_fill(NULL::BIGINT, ARRAY[v_num_count]);
  v_num_denied := array_fill(0, ARRAY[v_num_count]);
  v_num_last_denied := v_num_last_at;
  v_denials_changed := array_fill(false, ARRAY[v_num_count]);
  IF v_denial_logs IS NULL THEN v_denial_logs := '{}'; END IF;

  IF v_counter_count > 0 THEN
    -- Each counter's segment of v_bucket_ts / v_bucket_n has one empty slot per entry for it
    -- (a call adds at most one bucket).
    v_ctr_slots := array_fill(0, ARRAY[v_counter_count]);
    FOR v_entry IN 1 .. v_entry_count LOOP
      v_ctr_slots[p_entry_counter[v_entry]] := v_ctr_slots[p_entry_counter[v_entry]] + 1;
    END LOOP;
  END IF;
  -- A batch of one counter (a lone decision under most policies) locks, reads and writes it by
  -- key with scalar statements, as ONE NUMBER does for numbers.
  IF v_counter_count = 1 THEN
    INSERT INTO rate_limit_counters AS c (rule_id, key) VALUES (p_crule_ids[p_counter_rule[1]], p_counter_keys[1])
    ON CONFLICT (rule_id, key) DO UPDATE SET updated_at = c.updated_at WHERE false;
    SELECT c.bucket_ts, c.bucket_n, c.blocked_until, c.block_level INTO v_one_ts, v_one_cn, v_one_cblocked, v_one_clevel
      FROM rate_limit_counters AS c WHERE c.rule_id = p_crule_ids[p_counter_rule[1]] AND c.key = p_counter_keys[1];
    v_r := p_counter_rule[1];
    v_ctr_rule := ARRAY[p_crule_ids[v_r]];
    v_ctr_limit := ARRAY[p_crule_limits[v_r]];
    v_ctr_window := ARRAY[p_crule_windows[v_r]];
    v_ctr_bucket := ARRAY[p_crule_bucket_calls[v_r]];
    v_ctr_shadow := ARRAY[p_crule_shadow[v_r]];
    v_ctr_kind := ARRAY[p_crule_kinds[v_r]];
    -- blocksRange() in src/core/policy/counters.ts
    v_ctr_range := ARRAY[p_crule_kinds[v_r] <> 'calls' AND left(p_counter_keys[1], 1) = '+'];
    v_ctr_first := ARRAY[1];
    v_ctr_last := ARRAY[cardinality(v_one_ts)];
    v_idx := 0;
    FOR v_r IN 1 .. cardinality(v_one_cn) LOOP
      v_idx := v_idx + v_one_cn[v_r];
    END LOOP;
    v_ctr_calls := ARRAY[v_idx];
    v_ctr_blocked_until := ARRAY[v_one_cblocked];
    v_ctr_block_level := ARRAY[v_one_clevel];
    v_bucket_ts := v_one_ts || array_fill(0::BIGINT, ARRAY[v_ctr_slots[1]]);
    v_bucket_n := v_one_cn || array_fill(0, ARRAY[v_ctr_slots[1]]);
  ELSIF v_counter_count > 1 THEN
    -- DISTINCT: a counter listed twice is refused below, not by this statement.
    INSERT INTO rate_limit_counters AS c (rule_id, key)
    SELECT DISTINCT p_crule_ids[t.ri], t.k FROM unnest(p_counter_rule, p_counter_keys) AS t(ri, k) ORDER BY 1, 2
    ON CONFLICT (rule_id, key) DO UPDATE SET updated_at = c.updated_at WHERE false;

    -- Every counter (in the caller's order) in one statement: its rule's settings, its state,
    -- and its buckets laid end to end, each counter's followed by its empty slots.
    WITH w AS MATERIALIZED (
      SELECT w.i, w.ri, c.rule_id AS r, w.k, c.bucket_ts, c.bucket_n, c.blocked_until, c.block_level, v_ctr_slots[w.i] AS slots,
             (SELECT coalesce(sum(x), 0)::INTEGER FROM unnest(c.bucket_n) AS x) AS total
        FROM unnest(p_counter_rule, p_counter_keys) WITH ORDINALITY AS w(ri, k, i)
        JOIN rate_limit_counters AS c ON c.rule_id = p_crule_ids[w.ri] AND c.key = w.k
    ), s AS MATERIALIZED (
      SELECT w.*, (sum(cardinality(w.bucket_ts) + w.slots) OVER (ORDER BY w.i) - cardinality(w.bucket_ts) - w.slots)::INTEGER AS base FROM w
    )
    SELECT a.*, b.*
      FROM (SELECT count(DISTINCT (s.r, s.k))::INTEGER,
                   array_agg(s.r), array_agg(p_crule_limits[s.ri]), array_agg(p_crule_windows[s.ri]),
                   array_agg(p_crule_bucket_calls[s.ri]), array_agg(p_crule_shadow[s.ri]), array_agg(p_crule_kinds[s.ri]),
                   -- blocksRange() in src/core/policy/counters.ts
                   array_agg(p_crule_kinds[s.ri] <> 'calls' AND left(s.k, 1) = '+'),
                   array_agg(s.base + 1), array_agg(s.base + cardinality(s.bucket_ts)),
                   array_agg(s.total), array_agg(s.blocked_until), array_agg(s.block_level)
              FROM s) AS a,
           (SELECT array_agg(u.t), array_agg(u.n)
              FROM s, unnest(s.bucket_ts || array_fill(0::BIGINT, ARRAY[s.slots]), s.bucket_n || array_fill(0, ARRAY[s.slots])) AS u(t, n)) AS b
      INTO v_idx, v_ctr_rule, v_ctr_limit, v_ctr_window, v_ctr_bucket, v_ctr_shadow, v_ctr_kind, v_ctr_range,
           v_ctr_first, v_ctr_last, v_ctr_calls, v_ctr_blocked_until, v_ctr_block_level, v_bucket_ts, v_bucket_n;
    IF v_idx <> v_counter_count THEN
      RAISE EXCEPTION 'ratelimit_decide_v3: a counter is listed twice' USING ERRCODE = '22023';
    END IF;
  END IF;
  IF v_counter_count > 0 THEN
    v_ctr_block_changed := array_fill(false, ARRAY[v_counter_count]);
    v_ctr_denied := array_fill(0, ARRAY[v_counter_count]);
    v_ctr_last_at := array_fill(NULL::BIGINT, ARRAY[v_counter_count]);
  END IF;

  -- One instant for the whole batch, taken once every row it depends on is locked.
  v_now := coalesce(p_now, {{NOW_MS}});
  r_allowed := array_fill(NULL::BOOLEAN, ARRAY[v_request_count]);
  r_at := array_fill(NULL::BIGINT, ARRAY[v_request_count]);
  r_log_len := array_fill(NULL::INTEGER, ARRAY[v_request_count]);
  r_shadow := '{}';
  r_shadow_ends := r_log_len;
  r_used := CASE WHEN v_rule_count > 0 THEN array_fill(NULL::INTEGER, ARRAY[v_request_count * v_rule_count]) ELSE '{}' END;
  r_reset := CASE WHEN v_rule_count > 0 THEN array_fill(NULL::BIGINT, ARRAY[v_request_count * v_rule_count]) ELSE '{}' END;
  r_calls := '{}';

  FOR v_i IN 1 .. v_request_count LOOP
    v_num_pos := v_request_num_pos[v_i];
    v_log_from := v_log_first[v_num_pos];
    v_log_to := v_log_last[v_num_pos];
    v_at := v_now;
    IF v_log_to >= v_log_from AND v_logs[v_log_to] > v_at THEN v_at := v_logs[v_log_to]; END IF;
    v_prev_call := CASE WHEN v_log_to >= v_log_from THEN v_logs[v_log_to] END;
    v_moves := '{}';
    v_trips := '{}';
    v_block_by := NULL;
    v_is_blocked := false;
    v_num_rule := NULL;
    v_num_reset := NULL;
    v_agg_rule := NULL;
    v_agg_used := NULL;
    v_agg_reset := NULL;
    IF NOT p_allowlisted[v_i] THEN
      IF NOT p_safe[v_i] AND v_num_blocked_until[v_num_pos] > v_at THEN
        v_is_blocked := true;
      ELSE
        FOR v_r IN 1 .. v_rule_count LOOP
          -- The log is ascending: a rule denies when its max-th most recent call is in its window.
          IF v_log_to - v_log_from + 1 >= p_rule_limits[v_r] AND v_logs[v_log_to - p_rule_limits[v_r] + 1] > v_at - p_rule_windows[v_r] THEN
            IF p_rule_shadow[v_r] THEN
              v_shadow_count := v_shadow_count + 1;
              r_shadow[v_shadow_count] := p_rule_ids[v_r];
            -- Among denying rules, the one that frees up last is named (evaluate() in policy.ts).
            ELSIF v_num_rule IS NULL OR v_logs[v_log_to - p_rule_limits[v_r] + 1] + p_rule_windows[v_r] > v_num_reset THEN
              v_num_rule := p_rule_ids[v_r];
              v_num_reset := v_logs[v_log_to - p_rule_limits[v_r] + 1] + p_rule_windows[v_r];
            END IF;
          END IF;
        END LOOP;
        FOR v_entry IN v_request_entries[v_i] .. v_request_entries[v_i + 1] - 1 LOOP
          v_ctr := p_entry_counter[v_entry];
          v_moves[v_entry] := false;
          v_trips[v_entry] := false;
          v_bucket_from := v_ctr_first[v_ctr];
          v_bucket_to := v_ctr_last[v_ctr];
          v_window_calls := v_ctr_calls[v_ctr];
          v_ctr_at := v_at;
          IF v_bucket_to >= v_bucket_from AND v_bucket_ts[v_bucket_to] > v_ctr_at THEN v_ctr_at := v_bucket_ts[v_bucket_to]; END IF;
          -- Buckets that left the window since the counter's last call: not counted, not dropped
          -- (a later request of the batch may decide at an earlier instant).
          v_ctr_since := v_ctr_at - v_ctr_window[v_ctr];
          WHILE v_bucket_from <= v_bucket_to AND v_bucket_ts[v_bucket_from] <= v_ctr_since LOOP
            v_window_calls := v_window_calls - v_bucket_n[v_bucket_from];
            v_bucket_from := v_bucket_from + 1;
          END LOOP;
          v_range := v_block_steps > 0 AND NOT p_safe[v_i] AND NOT v_ctr_shadow[v_ctr] AND v_ctr_range[v_ctr];
          IF v_range AND v_ctr_blocked_until[v_ctr] > v_at THEN
            -- A blocked range denies without evaluating its limit (and never trips again: a
            -- block lasts exactly its step).
            IF v_agg_rule IS NULL THEN
              v_agg_rule := 'auto:block';
              v_agg_used := v_window_calls;
              v_agg_reset := v_ctr_blocked_until[v_ctr];
              v_agg_ctr := v_ctr;
              v_block_by := v_ctr;
              -- The next call is possible at the block's end only if the counter that tripped it
              -- allows one then (blockedRangeReset in decide.ts): nothing counts while blocked, so
              -- its window at the block's end is known now. A distinct counter never denies a
              -- number it still counts then.
              v_ctr_since := GREATEST(v_agg_reset, v_ctr_at) - v_ctr_window[v_ctr];
              IF v_ctr_kind[v_ctr] = 'distinct' AND v_prev_call > v_ctr_since THEN
                NULL;
              ELSE
                WHILE v_bucket_from <= v_bucket_to AND v_bucket_ts[v_bucket_from] <= v_ctr_since LOOP
                  v_window_calls := v_window_calls - v_bucket_n[v_bucket_from];
                  v_bucket_from := v_bucket_from + 1;
                END LOOP;
                IF v_window_calls + 1 > v_ctr_limit[v_ctr] THEN
                  WHILE v_bucket_from < v_bucket_to AND v_window_calls - v_bucket_n[v_bucket_from] >= v_ctr_limit[v_ctr] LOOP
                    v_window_calls := v_window_calls - v_bucket_n[v_bucket_from];
                    v_bucket_from := v_bucket_from + 1;
                  END LOOP;
                  v_agg_reset := GREATEST(v_agg_reset, v_bucket_ts[v_bucket_from] + v_ctr_window[v_ctr]);
                END IF;
              END IF;
            END IF;
          ELSIF v_ctr_kind[v_ctr] = 'distinct' AND v_prev_call > v_ctr_since THEN
            -- The number is already counted in this window: the call moves it, never adds one.
            v_moves[v_entry] := true;
          ELSIF v_window_calls + 1 > v_ctr_limit[v_ctr] THEN
            IF v_ctr_shadow[v_ctr] THEN
              v_shadow_count := v_shadow_count + 1;
              r_shadow[v_shadow_count] := v_ctr_rule[v_ctr];
            ELSE
              v_trips[v_entry] := v_range;
              IF v_agg_rule IS NULL THEN
                v_agg_rule := v_ctr_rule[v_ctr];
                v_agg_used := v_window_calls;
                WHILE v_bucket_from < v_bucket_to AND v_window_calls - v_bucket_n[v_bucket_from] >= v_ctr_limit[v_ctr] LOOP
                  v_window_calls := v_window_calls - v_bucket_n[v_bucket_from];
                  v_bucket_from := v_bucket_from + 1;
                END LOOP;
                v_agg_reset := v_bucket_ts[v_bucket_from] + v_ctr_window[v_ctr];
                v_agg_ctr := v_ctr;
              END IF;
            END IF;
          END IF;
        END LOOP;
      END IF;
    END IF;
    v_rule := CASE WHEN v_is_blocked THEN 'number:block_after' ELSE coalesce(v_num_rule, v_agg_rule) END;
    -- A counter's denials are the consumes it was named for (a number rule is named first).
    IF v_num_rule IS NULL AND v_agg_rule IS NOT NULL THEN v_ctr_denied[v_agg_ctr] := v_ctr_denied[v_agg_ctr] + 1; END IF;
    IF v_rule IS NULL THEN
      -- appendCall: the new call, then drop what exceeds capacity or the longest window.
      v_log_to := v_log_to + 1;
      v_logs[v_log_to] := v_at;
      v_log_from := GREATEST(v_log_from, v_log_to - v_log_capacity + 1);
      WHILE v_log_from < v_log_to AND v_logs[v_log_from] <= v_at - v_log_horizon LOOP
        v_log_from := v_log_from + 1;
      END LOOP;
      v_log_first[v_num_pos] := v_log_from;
      v_log_last[v_num_pos] := v_log_to;
      v_num_last_at[v_num_pos] := v_at;
      -- addCall on every counter: drop expired buckets, then fill the newest or open one.
      FOR v_entry IN v_request_entries[v_i] .. v_request_entries[v_i + 1] - 1 LOOP
        v_ctr := p_entry_counter[v_entry];
        v_bucket_from := v_ctr_first[v_ctr];
        v_bucket_to := v_ctr_last[v_ctr];
        v_window_calls := v_ctr_calls[v_ctr];
        v_ctr_at := v_at;
        IF v_bucket_to >= v_bucket_from AND v_bucket_ts[v_bucket_to] > v_ctr_at THEN v_ctr_at := v_bucket_ts[v_bucket_to]; END IF;
        v_ctr_since := v_ctr_at - v_ctr_window[v_ctr];
        WHILE v_bucket_from <= v_bucket_to AND v_bucket_ts[v_bucket_from] <= v_ctr_since LOOP
          v_window_calls := v_window_calls - v_bucket_n[v_bucket_from];
          v_bucket_from := v_bucket_from + 1;
        END LOOP;
        -- removeCall() at the number's previous call: the first live bucket whose newest call is
        -- not before it gives one call back (a bucket at 0 stays there).
        IF v_moves[v_entry] THEN
          v_idx := v_bucket_from;
          WHILE v_idx <= v_bucket_to AND v_bucket_ts[v_idx] < v_prev_call LOOP
            v_idx := v_idx + 1;
          END LOOP;
          IF v_idx <= v_bucket_to AND v_bucket_n[v_idx] > 0 THEN
            v_bucket_n[v_idx] := v_bucket_n[v_idx] - 1;
            v_window_calls := v_window_calls - 1;
          END IF;
        END IF;
        IF v_bucket_to >= v_bucket_from AND v_bucket_n[v_bucket_to] < v_ctr_bucket[v_ctr] THEN
          v_bucket_n[v_bucket_to] := v_bucket_n[v_bucket_to] + 1;
        ELSE
          v_bucket_to := v_bucket_to + 1;
          v_bucket_n[v_bucket_to] := 1;
        END IF;
        v_bucket_ts[v_bucket_to] := v_ctr_at;
        v_ctr_first[v_ctr] := v_bucket_from;
        v_ctr_last[v_ctr] := v_bucket_to;
        v_ctr_calls[v_ctr] := v_window_calls + 1;
        v_ctr_last_at[v_ctr] := v_ctr_at;
      END LOOP;
    ELSE
      -- Range counters whose limit denied a non-safe consume start (or escalate) their block.
      FOR v_entry IN v_request_entries[v_i] .. CASE WHEN v_is_blocked OR p_allowlisted[v_i] THEN 0 ELSE v_request_entries[v_i + 1] - 1 END LOOP
        IF v_trips[v_entry] THEN
          v_ctr := p_entry_counter[v_entry];
          v_level := CASE WHEN v_ctr_block_level[v_ctr] > 0 AND v_ctr_blocked_until[v_ctr] > v_at - p_block_decay
                          THEN LEAST(v_ctr_block_level[v_ctr] + 1, v_block_steps) ELSE 1 END;
          v_ctr_block_level[v_ctr] := v_level;
          v_ctr_blocked_until[v_ctr] := v_at + p_block_steps[v_level];
          v_ctr_block_changed[v_ctr] := true;
        END IF;
      END LOOP;
      v_num_denied[v_num_pos] := v_num_denied[v_num_pos] + 1;
      v_num_last_denied[v_num_pos] := v_at;
      v_num_last_at[v_num_pos] := v_at;
      -- block_after counts the number's own denials only: a prefix, country or global budget
      -- running out must not block the innocent numbers it denies. The denials-th denial within
      -- the window blocks and starts a fresh count; denials while blocked are not remembered,
      -- so a block lasts exactly its length (blockAfterBlock() in src/core/policy/decide.ts).
      IF v_denial_slots > 0 AND v_num_rule IS NOT NULL AND NOT v_is_blocked AND NOT p_safe[v_i] THEN
        v_denial_base := (v_num_pos - 1) * v_denial_slots;
        v_idx := 0;
        WHILE v_idx < v_denial_count[v_num_pos] AND v_denial_logs[v_denial_base + v_idx + 1] <= v_at - p_block_within LOOP
          v_idx := v_idx + 1;
        END LOOP;
        IF v_idx > 0 THEN
          FOR v_r IN 1 .. v_denial_count[v_num_pos] - v_idx LOOP
            v_denial_logs[v_denial_base + v_r] := v_denial_logs[v_denial_base + v_r + v_idx];
          END LOOP;
          v_denial_count[v_num_pos] := v_denial_count[v_num_pos] - v_idx;
        END IF;
        IF v_denial_count[v_num_pos] + 1 >= v_denial_slots THEN
          IF v_block_steps > 0 THEN
            -- nextBlock() in src/core/policy/decide.ts: one step up while the previous block
            -- ended less than p_block_decay ago; the step is cut to p_block_for when given (the
            -- level stays the step's, so the next block still escalates).
            v_level := CASE WHEN v_num_block_level[v_num_pos] > 0 AND v_num_blocked_until[v_num_pos] > v_at - p_block_decay
                            THEN LEAST(v_num_block_level[v_num_pos] + 1, v_block_steps) ELSE 1 END;
            v_num_block_level[v_num_pos] := v_level;
            v_num_blocked_until[v_num_pos] := v_at + CASE WHEN coalesce(p_block_for, 0) > 0
                                                          THEN LEAST(p_block_steps[v_level], p_block_for)
                                                          ELSE p_block_steps[v_level] END;
          ELSE
            v_num_blocked_until[v_num_pos] := v_at + coalesce(p_block_for, 0);
          END IF;
          v_denial_count[v_num_pos] := 0;
        ELSE
          v_denial_count[v_num_pos] := v_denial_count[v_num_pos] + 1;
          v_denial_logs[v_denial_base + v_denial_count[v_num_pos]] := v_at;
        END IF;
        v_denials_changed[v_num_pos] := true;
      END IF;
    END IF;
    r_allowed[v_i] := v_rule IS NULL;
    r_at[v_i] := v_at;
    r_shadow_ends[v_i] := v_shadow_count;
    -- The arrays that are NULL in most batches are made on first use.
    IF v_rule IS NOT NULL THEN
      IF r_rule IS NULL THEN r_rule := array_fill(NULL::TEXT, ARRAY[v_request_count]); END IF;
      r_rule[v_i] := v_rule;
    END IF;
    IF v_num_rule IS NULL AND NOT v_is_blocked AND v_agg_rule IS NOT NULL THEN
      IF r_agg_used IS NULL THEN
        r_agg_used := array_fill(NULL::INTEGER, ARRAY[v_request_count]);
        r_agg_reset := array_fill(NULL::BIGINT, ARRAY[v_request_count]);
      END IF;
      r_agg_used[v_i] := v_agg_used;
      r_agg_reset[v_i] := v_agg_reset;
    END IF;
    IF v_num_blocked_until[v_num_pos] > v_at THEN
      IF r_blocked_until IS NULL THEN r_blocked_until := array_fill(NULL::BIGINT, ARRAY[v_request_count]); END IF;
      r_blocked_until[v_i] := v_num_blocked_until[v_num_pos];
    END IF;
    IF v_num_rule IS NULL AND NOT v_is_blocked AND v_block_by IS NOT NULL THEN
      IF r_blocked_by IS NULL THEN r_blocked_by := array_fill(NULL::TEXT, ARRAY[v_request_count]); END IF;
      r_blocked_by[v_i] := v_ctr_rule[v_block_by];
    END IF;
    -- summarizeLog() of src/core/policy/log-summary.ts: the log after the request in runs of
    -- v_run calls (1 when it holds at most {{LOG_SUMMARY_ENTRIES}}), each run as its newest call; the
    -- caller derives the runs' lengths from r_log_len.
    r_log_len[v_i] := v_log_to - v_log_from + 1;
    v_run := GREATEST(1, (v_log_to - v_log_from + {{LOG_SUMMARY_ENTRIES}}) / {{LOG_SUMMARY_ENTRIES}});
    v_idx := v_log_from + v_run - 1;
    WHILE v_idx < v_log_to LOOP
      v_calls_count := v_calls_count + 1;
      r_calls[v_calls_count] := v_logs[v_idx];
      v_idx := v_idx + v_run;
    END LOOP;
    IF v_log_to >= v_log_from THEN
      v_calls_count := v_calls_count + 1;
      r_calls[v_calls_count] := v_logs[v_log_to];
    END IF;
    -- ruleState() of each number rule on the log after the request: the first call inside the
    -- window by binary search (the log is ascending), then used and resetTime from positions.
    FOR v_r IN 1 .. v_rule_count LOOP
      v_lo := v_log_from;
      v_hi := v_log_to + 1;
      WHILE v_lo < v_hi LOOP
        v_mid := (v_lo + v_hi) / 2;
        IF v_logs[v_mid] > v_at - p_rule_windows[v_r] THEN v_hi := v_mid; ELSE v_lo := v_mid + 1; END IF;
      END LOOP;
      v_idx := (v_i - 1) * v_rule_count + v_r;
      r_used[v_idx] := v_log_to - v_lo + 1;
      IF v_log_to - v_lo + 1 < p_rule_limits[v_r] THEN
        r_reset[v_idx] := CASE WHEN v_lo <= v_log_to THEN v_logs[v_lo] + p_rule_windows[v_r] ELSE v_at END;
      ELSE
        r_reset[v_idx] := v_logs[v_log_to - p_rule_limits[v_r] + 1] + p_rule_windows[v_r];
      END IF;
    END LOOP;
  END LOOP;

  -- The one number of a single-number batch: its row written by key, its log sliced once here
  -- (a plpgsql expression, not a query), the calls in the stats window found from the end.
  IF v_single THEN
    v_one_calls := v_logs[v_log_first[1] : v_log_last[1]];
    v_idx := v_log_first[1];
    WHILE v_idx <= v_log_last[1] AND v_logs[v_idx] <= v_num_last_at[1] - v_stats_window LOOP
      v_idx := v_idx + 1;
    END LOOP;
    v_one_n := GREATEST(v_log_last[1] - v_idx + 1, 0);
    v_one_start := CASE WHEN v_one_n > 0 THEN v_logs[v_idx] END;
    v_one_denials := CASE WHEN v_denials_changed[1] THEN v_denial_logs[1 : v_denial_count[1]] END;
    IF v_num_exists[1] THEN
      UPDATE phone_rate_limits AS p SET
        calls = v_one_calls,
        call_count = v_one_n,
        window_start = GREATEST(p.window_start, COALESCE(v_one_start, p.window_start)),
        last_call_at = COALESCE(v_one_calls[cardinality(v_one_calls)], p.last_call_at),
        denied_total = p.denied_total + v_num_denied[1],
        denied_in_window = CASE
          WHEN v_num_denied[1] = 0 THEN p.denied_in_window
          WHEN p.denied_window_start > v_num_last_at[1] - v_stats_window THEN p.denied_in_window + v_num_denied[1]
          ELSE v_num_denied[1] END,
        denied_window_start = CASE
          WHEN v_num_denied[1] = 0 OR p.denied_window_start > v_num_last_at[1] - v_stats_window THEN p.denied_window_start
          ELSE v_num_last_at[1] END,
        last_denied_at = COALESCE(v_num_last_denied[1], p.last_denied_at),
        blocked_until = v_num_blocked_until[1],
        block_level = v_num_block_level[1],
        denials = COALESCE(v_one_denials, p.denials),
        updated_at = NOW()
      WHERE p.phone_hash = v_num_hash[1];
    ELSE
      INSERT INTO phone_rate_limits AS p (phone_hash, region, phone_masked, calls, call_count, window_start, last_call_at,
                                          denied_total, denied_in_window, denied_window_start, last_denied_at, blocked_until, block_level, denials)
      VALUES (v_num_hash[1], v_num_region[1], v_num_masked[1], v_one_calls, v_one_n, coalesce(v_one_start, 0), v_one_calls[cardinality(v_one_calls)],
              v_num_denied[1], v_num_denied[1], CASE WHEN v_num_denied[1] > 0 THEN v_num_last_at[1] ELSE 0 END, v_num_last_denied[1],
              v_num_blocked_until[1], v_num_block_level[1], coalesce(v_one_denials, '{}'))
      ON CONFLICT (phone_hash) DO NOTHING;
      GET DIAGNOSTICS v_inserted = ROW_COUNT;
      IF v_inserted = 0 THEN
        RAISE EXCEPTION 'ratelimit_decide_v3: a new number of this batch was created concurrently; run the batch again'
          USING ERRCODE = '40001';
      END IF;
    END IF;
  END IF;

  -- New numbers, written once with their final state; any of them inserted meanwhile by
  -- another transaction means this batch decided on a stale (empty) state: fail, write nothing.
  -- Logs are gathered element by element, per number by a LATERAL aggregate over its positions
  -- (no GROUP BY: a grouped ordered aggregate sorts each group apart): a slice of the flat array
  -- would copy all of it per number.
  IF v_new_count > 0 AND NOT v_single THEN
    WITH u AS MATERIALIZED (
      SELECT * FROM unnest(v_num_hash, v_num_region, v_num_masked, v_num_exists, v_log_first, v_log_last, v_num_last_at, v_num_denied, v_num_last_denied, v_num_blocked_until, v_num_block_level, v_denial_count)
               WITH ORDINALITY AS u(h, r, m, ex, lf, ll, at, denied, last_denied, blocked, level, dlen, k)
       WHERE NOT u.ex
    )
    INSERT INTO phone_rate_limits AS p (phone_hash, region, phone_masked, calls, call_count, window_start, last_call_at,
                                        denied_total, denied_in_window, denied_window_start, last_denied_at, blocked_until, block_level, denials)
    SELECT u.h, u.r, u.m, coalesce(l.calls, '{}'), l.n, coalesce(l.start, 0), l.calls[cardinality(l.calls)],
           u.denied, u.denied, CASE WHEN u.denied > 0 THEN u.at ELSE 0 END, u.last_denied, u.blocked, u.level,
           CASE WHEN u.dlen > 0 THEN ARRAY(SELECT v_denial_logs[(u.k - 1) * v_denial_slots + g.j] FROM generate_series(1, u.dlen) AS g(j)) ELSE '{}' END
      FROM u, LATERAL (SELECT array_agg(v_logs[g.i]) AS calls,
                              count(*) FILTER (WHERE v_logs[g.i] > u.at - v_stats_window) AS n,
                              min(v_logs[g.i]) FILTER (WHERE v_logs[g.i] > u.at - v_stats_window) AS start
                         FROM generate_series(u.lf, u.ll) AS g(i)) AS l
     ORDER BY u.h
    ON CONFLICT (phone_hash) DO NOTHING;
    GET DIAGNOSTICS v_inserted = ROW_COUNT;
    IF v_inserted < v_new_count THEN
      RAISE EXCEPTION 'ratelimit_decide_v3: a new number of this batch was created concurrently; run the batch again'
        USING ERRCODE = '40001';
    END IF;
  END IF;

  IF v_new_count < v_num_count AND NOT v_single THEN
    WITH u AS MATERIALIZED (
      SELECT * FROM unnest(v_num_hash, v_num_exists, v_log_first, v_log_last, v_num_last_at, v_num_denied, v_num_last_denied, v_num_blocked_until, v_num_block_level, v_denial_count, v_denials_changed)
               WITH ORDINALITY AS u(h, ex, lf, ll, at, denied, last_denied, blocked, level, dlen, dtouched, k)
       WHERE u.ex
    )
    UPDATE phone_rate_limits AS p SET
      calls = coalesce(l.calls, '{}'),
      call_count = l.n,
      window_start = GREATEST(p.window_start, COALESCE(l.start, p.window_start)),
      last_call_at = COALESCE(l.calls[cardinality(l.calls)], p.last_call_at),
      denied_total = p.denied_total + u.denied,
      denied_in_window = CASE
        WHEN u.denied = 0 THEN p.denied_in_window
        WHEN p.denied_window_start > u.at - v_stats_window THEN p.denied_in_window + u.denied
        ELSE u.denied END,
      denied_window_start = CASE
        WHEN u.denied = 0 OR p.denied_window_start > u.at - v_stats_window THEN p.denied_window_start
        ELSE u.at END,
      last_denied_at = COALESCE(u.last_denied, p.last_denied_at),
      blocked_until = u.blocked,
      block_level = u.level,
      -- Untouched when this batch recorded no denial for block_after (it may hold more than
      -- p_block_denials entries after a policy change; src/core/policy/decide.ts leaves it as it is too).
      denials = CASE WHEN NOT u.dtouched THEN p.denials
                     ELSE ARRAY(SELECT v_denial_logs[(u.k - 1) * v_denial_slots + g.j] FROM generate_series(1, u.dlen) AS g(j)) END,
      updated_at = NOW()
    FROM u, LATERAL (SELECT array_agg(v_logs[g.i]) AS calls,
                            count(*) FILTER (WHERE v_logs[g.i] > u.at - v_stats_window) AS n,
                            min(v_logs[g.i]) FILTER (WHERE v_logs[g.i] > u.at - v_stats_window) AS start
                       FROM generate_series(u.lf, u.ll) AS g(i)) AS l
    WHERE p.phone_hash = u.h;
  END IF;

  -- Counters: a counter's buckets change only with a call (v_ctr_last_at set); they are gathered
  -- element by element (one LATERAL aggregate per row), never sliced: a slice of a plpgsql
  -- array inside a query flattens the whole array once per row. One counter: by key, its buckets
  -- sliced once here (a plpgsql expression, not a query).
  IF v_counter_count = 1 THEN
    IF v_ctr_last_at[1] IS NOT NULL OR v_ctr_denied[1] > 0 OR v_ctr_block_changed[1] THEN
      IF v_ctr_last_at[1] IS NOT NULL THEN
        v_one_ts := v_bucket_ts[v_ctr_first[1] : v_ctr_last[1]];
        v_one_cn := v_bucket_n[v_ctr_first[1] : v_ctr_last[1]];
      END IF;
      UPDATE rate_limit_counters AS c SET
        bucket_ts = CASE WHEN v_ctr_last_at[1] IS NULL THEN c.bucket_ts ELSE v_one_ts END,
        bucket_n = CASE WHEN v_ctr_last_at[1] IS NULL THEN c.bucket_n ELSE v_one_cn END,
        denied_total = c.denied_total + v_ctr_denied[1],
        last_at = GREATEST(c.last_at, v_ctr_last_at[1]),
        blocked_until = CASE WHEN v_ctr_block_changed[1] THEN v_ctr_blocked_until[1] ELSE c.blocked_until END,
        block_level = CASE WHEN v_ctr_block_changed[1] THEN v_ctr_block_level[1] ELSE c.block_level END,
        updated_at = NOW()
      WHERE c.rule_id = v_ctr_rule[1] AND c.key = p_counter_keys[1];
    END IF;
  ELSIF v_counter_count > 1 THEN
    WITH u AS MATERIALIZED (
      SELECT * FROM unnest(v_ctr_rule, p_counter_keys, v_ctr_first, v_ctr_last, v_ctr_denied, v_ctr_last_at, v_ctr_blocked_until, v_ctr_block_level, v_ctr_block_changed)
               AS u(r, k, f, l, denied, last, bu, bl, bchanged)
       WHERE u.last IS NOT NULL OR u.denied > 0 OR u.bchanged
    )
    UPDATE rate_limit_counters AS c SET
      bucket_ts = CASE WHEN u.last IS NULL THEN c.bucket_ts ELSE coalesce(b.ts, '{}') END,
      bucket_n = CASE WHEN u.last IS NULL THEN c.bucket_n ELSE coalesce(b.n, '{}') END,
      denied_total = c.denied_total + u.denied,
      last_at = GREATEST(c.last_at, u.last),
      blocked_until = CASE WHEN u.bchanged THEN u.bu ELSE c.blocked_until END,
      block_level = CASE WHEN u.bchanged THEN u.bl ELSE c.block_level END,
      updated_at = NOW()
    FROM u, LATERAL (SELECT array_agg(v_bucket_ts[g.i]) AS ts, array_agg(v_bucket_n[g.i]) AS n
                       FROM generate_series(u.f, CASE WHEN u.last IS NULL THEN 0 ELSE u.l END) AS g(i)) AS b
    WHERE c.rule_id = u.r AND c.key = u.k;
  END IF;

  IF v_shadow_count = 0 THEN r_shadow_ends := NULL; END IF;
END
$fn$;
