-- Functions no daemon has called since the policy engine (006): ratelimit_consume (002, rewritten
-- by 004) and ratelimit_record (002) were superseded by ratelimit_decide and ratelimit_record_v2.
-- The release before this one kept them for its tests only, so dropping them now respects the
-- support window (docs/self-hosting.md). The live functions' sources are src/db/functions/*.sql,
-- re-applied by migrate() after the migrations.
DROP FUNCTION IF EXISTS ratelimit_consume(TEXT[], TEXT[], TEXT[], INTEGER[], BIGINT[]);
DROP FUNCTION IF EXISTS ratelimit_record(TEXT[], TEXT[], TEXT[], BIGINT[], BOOLEAN[], INTEGER, BIGINT, BIGINT);
