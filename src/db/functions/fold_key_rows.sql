-- ratelimit_fold_key_rows: a key rotation's step (src/db/keys.ts). Folds each old-hash row into
-- its new-hash row: call logs and denial logs merged (every element of both, ascending), denial
-- counters summed, the later block kept, the earlier first sighting kept; the old row is
-- deleted. p_fp: the new key's fingerprint, for moved list entries. Idempotent: a pair whose old
-- row is gone is skipped, so daemons folding the same number at once fold it once. The current
-- source, re-applied by migrate() (src/db/migrate.ts).
--
-- LOCKING ORDER: the global order (numbers by hash, then counters by (rule id, key)); this
-- touches numbers only. Every row involved, old and new, is locked in one pass in hash order by
-- the same INSERT … ON CONFLICT DO UPDATE … WHERE false as ratelimit_decide_v3 (it inserts the new
-- rows that do not exist yet, so no lock is taken later out of order). Only pairs whose old row
-- exists are locked: meeting a number that was never seen under the old key costs an index probe
-- per table.

CREATE OR REPLACE FUNCTION ratelimit_fold_key_rows(p_old TEXT[], p_new TEXT[], p_fp TEXT)
RETURNS INTEGER LANGUAGE plpgsql AS $fn$
DECLARE
  v_old TEXT[];
  v_new TEXT[];
  v_folded INTEGER;
BEGIN
  -- The number's own list entry follows it (a blocked number may have no row at all), unless
  -- one exists under the new hash already (set after the rotation began: the newer one wins).
  -- Only admin commands and folds write list rows, and nothing locks them after numbers.
  DELETE FROM rate_limit_lists AS l
   USING unnest(p_old, p_new) AS x(o, n)
   WHERE l.target_type = 'number' AND l.target = x.o
     AND EXISTS (SELECT 1 FROM rate_limit_lists AS m WHERE m.target_type = 'number' AND m.target = x.n);
  UPDATE rate_limit_lists AS l SET target = x.n, key_fp = p_fp
    FROM unnest(p_old, p_new) AS x(o, n)
   WHERE l.target_type = 'number' AND l.target = x.o;

  SELECT array_agg(x.o), array_agg(x.n) INTO v_old, v_new
    FROM unnest(p_old, p_new) AS x(o, n)
   WHERE x.o <> x.n AND EXISTS (SELECT 1 FROM phone_rate_limits AS p WHERE p.phone_hash = x.o);
  IF v_old IS NULL THEN RETURN 0; END IF;

  INSERT INTO phone_rate_limits AS p (phone_hash, window_start)
  SELECT DISTINCT h, 0 FROM unnest(v_old || v_new) AS h ORDER BY h
  ON CONFLICT (phone_hash) DO UPDATE SET updated_at = p.updated_at WHERE false;

  -- Rows inserted by the lock pass for an old hash that vanished meanwhile (another fold won)
  -- are empty: deleting them with the rest is right.
  WITH gone AS (
    DELETE FROM phone_rate_limits AS p
     USING unnest(v_old, v_new) AS x(o, n)
     WHERE p.phone_hash = x.o
    RETURNING x.n, p.*
  )
  UPDATE phone_rate_limits AS t SET
    calls = ARRAY(SELECT c FROM unnest(t.calls || g.calls) AS c ORDER BY c),
    call_count = t.call_count + g.call_count,
    window_start = COALESCE(LEAST(NULLIF(t.window_start, 0), NULLIF(g.window_start, 0)), 0),
    region = COALESCE(t.region, g.region),
    phone_masked = COALESCE(t.phone_masked, g.phone_masked),
    created_at = LEAST(t.created_at, g.created_at),
    last_call_at = GREATEST(t.last_call_at, g.last_call_at),
    denied_total = t.denied_total + g.denied_total,
    denied_in_window = t.denied_in_window + g.denied_in_window,
    denied_window_start = GREATEST(t.denied_window_start, g.denied_window_start),
    last_denied_at = GREATEST(t.last_denied_at, g.last_denied_at),
    blocked_until = GREATEST(t.blocked_until, g.blocked_until),
    denials = ARRAY(SELECT d FROM unnest(t.denials || g.denials) AS d ORDER BY d),
    updated_at = NOW()
  FROM gone AS g
  WHERE t.phone_hash = g.n;
  GET DIAGNOSTICS v_folded = ROW_COUNT;

  RETURN v_folded;
END
$fn$;
