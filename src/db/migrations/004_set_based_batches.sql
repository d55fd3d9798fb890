-- The same decisions as 002's ratelimit_consume, in a constant number of statements per batch
-- instead of ~5 per number: plpgsql runs each embedded SQL statement through the executor,
-- and at hundreds of numbers per batch that, not the commit, became the cost.
--
-- Locking: one INSERT … ON CONFLICT DO UPDATE … WHERE false inserts missing rows and locks
-- existing ones (the docs: "all rows will be locked when the ON CONFLICT DO UPDATE action is
-- taken", updated or not), in hash order, in one pass. Every path that locks several rows
-- does so in hash order, so batches wait for each other but never deadlock. Rows locked, the
-- next statement's snapshot sees their latest committed state.
CREATE OR REPLACE FUNCTION ratelimit_consume(
  p_hashes TEXT[],
  p_regions TEXT[],
  p_masked TEXT[],
  p_maxes INTEGER[],
  p_windows BIGINT[]
) RETURNS TABLE (r_idx INTEGER, r_allowed BOOLEAN, r_at BIGINT, r_calls BIGINT[])
LANGUAGE plpgsql AS $fn$
DECLARE
  v_rules INTEGER := cardinality(p_maxes);
  v_window BIGINT := p_windows[1];
  v_capacity INTEGER := 0;
  v_horizon BIGINT := 0;
  v_order INTEGER[];
  v_keys TEXT[];
  v_logs TEXT[];
  v_nkeys INTEGER;
  v_pos INTEGER := 1;
  v_total INTEGER;
  v_key TEXT;
  v_log BIGINT[];
  v_len INTEGER;
  v_at BIGINT;
  v_ok BOOLEAN;
  v_i INTEGER;
  v_j INTEGER;
  v_r INTEGER;
  v_first INTEGER;
  v_denied INTEGER;
  v_last_denied BIGINT;
  u_calls TEXT[] := '{}';
  u_count INTEGER[] := '{}';
  u_start BIGINT[] := '{}';
  u_denied INTEGER[] := '{}';
  u_last_denied BIGINT[] := '{}';
  u_at BIGINT[] := '{}';
BEGIN
  v_total := cardinality(p_hashes);
  IF v_total IS DISTINCT FROM cardinality(p_regions) OR v_total IS DISTINCT FROM cardinality(p_masked)
     OR v_rules IS NULL OR v_rules < 1 OR v_rules <> cardinality(p_windows) THEN
    RAISE EXCEPTION 'ratelimit_consume: mismatched argument arrays' USING ERRCODE = '22023';
  END IF;
  IF v_total = 0 THEN RETURN; END IF;
  FOR v_r IN 1 .. v_rules LOOP
    v_capacity := GREATEST(v_capacity, p_maxes[v_r]);
    v_horizon := GREATEST(v_horizon, p_windows[v_r]);
  END LOOP;

  -- Request positions grouped by number (in hash order), each group in arrival order.
  v_order := ARRAY(SELECT o::INTEGER FROM unnest(p_hashes) WITH ORDINALITY AS t(h, o) ORDER BY h, o);

  INSERT INTO phone_rate_limits AS p (phone_hash, window_start, region, phone_masked)
  SELECT DISTINCT ON (h) h, 0, r, m
    FROM unnest(p_hashes, p_regions, p_masked) AS t(h, r, m)
   ORDER BY h, r IS NULL
  ON CONFLICT (phone_hash) DO UPDATE SET updated_at = p.updated_at WHERE false;

  SELECT array_agg(phone_hash ORDER BY phone_hash), array_agg(calls::TEXT ORDER BY phone_hash)
    INTO v_keys, v_logs
    FROM phone_rate_limits WHERE phone_hash = ANY (p_hashes);
  v_nkeys := cardinality(v_keys);

  FOR v_j IN 1 .. v_nkeys LOOP
    v_key := v_keys[v_j];
    v_log := v_logs[v_j]::BIGINT[];
    v_denied := 0;
    v_last_denied := NULL;
    WHILE v_pos <= v_total AND p_hashes[v_order[v_pos]] = v_key LOOP
      v_i := v_order[v_pos];
      v_pos := v_pos + 1;
      v_len := coalesce(cardinality(v_log), 0);
      v_at := (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT;
      IF v_len > 0 AND v_log[v_len] > v_at THEN v_at := v_log[v_len]; END IF;
      v_ok := true;
      FOR v_r IN 1 .. v_rules LOOP
        -- The log is ascending: a rule denies when its max-th most recent call is in its window.
        IF v_len >= p_maxes[v_r] AND v_log[v_len - p_maxes[v_r] + 1] > v_at - p_windows[v_r] THEN
          v_ok := false;
          EXIT;
        END IF;
      END LOOP;
      IF v_ok THEN
        v_log := v_log || v_at;
        v_len := v_len + 1;
        v_first := GREATEST(1, v_len - v_capacity + 1);
        WHILE v_first < v_len AND v_log[v_first] <= v_at - v_horizon LOOP
          v_first := v_first + 1;
        END LOOP;
        IF v_first > 1 THEN v_log := v_log[v_first:v_len]; END IF;
      ELSE
        v_denied := v_denied + 1;
        v_last_denied := v_at;
      END IF;
      r_idx := v_i; r_allowed := v_ok; r_at := v_at; r_calls := v_log;
      RETURN NEXT;
    END LOOP;
    -- What the row will say about the primary window, as of this batch.
    v_len := coalesce(cardinality(v_log), 0);
    v_first := v_len + 1;
    WHILE v_first > 1 AND v_log[v_first - 1] > v_at - v_window LOOP
      v_first := v_first - 1;
    END LOOP;
    u_calls := u_calls || v_log::TEXT;
    u_count := u_count || (v_len - v_first + 1);
    u_start := u_start || CASE WHEN v_first <= v_len THEN v_log[v_first] END;
    u_denied := u_denied || v_denied;
    u_last_denied := u_last_denied || v_last_denied;
    u_at := u_at || v_at;
  END LOOP;

  UPDATE phone_rate_limits AS p SET
    calls = u.calls::BIGINT[],
    call_count = u.n,
    window_start = GREATEST(p.window_start, COALESCE(u.start, p.window_start)),
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
    updated_at = NOW()
  FROM unnest(v_keys, u_calls, u_count, u_start, u_denied, u_last_denied, u_at)
       AS u(h, calls, n, start, denied, last_denied, at)
  WHERE p.phone_hash = u.h;
END
$fn$;
