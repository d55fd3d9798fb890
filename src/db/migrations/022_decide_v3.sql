-- Issue #22: ratelimit_decide_v3 (src/db/functions/decide_v3.sql) decides for this release's
-- daemons; ratelimit_decide_v2 stays for v0.1.0's during a rolling upgrade. ratelimit_decide (v1,
-- migrations 006 and 012) is called by no released version (v0.1.0 calls v2), so it goes now,
-- with its digest in ratelimit_functions (migrate() keeps one per live source file; the table
-- does not exist yet on a database being created).
DROP FUNCTION IF EXISTS ratelimit_decide(TEXT[], TEXT[], TEXT[], BOOLEAN[], TEXT[], INTEGER[], BIGINT[], BOOLEAN[], INTEGER, BIGINT, BIGINT,
                                         INTEGER[], INTEGER[], TEXT[], TEXT[], INTEGER[], BIGINT[], INTEGER[], BOOLEAN[], BIGINT);
DO $$
BEGIN
  IF to_regclass('ratelimit_functions') IS NOT NULL THEN
    DELETE FROM ratelimit_functions WHERE name = 'ratelimit_decide';
  END IF;
END
$$;
