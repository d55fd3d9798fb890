-- ratelimit_active_epoch_ms: the length of an epoch of the active-number set (rate_limit_active,
-- migrations 011 and 013) for the trigger and the readers, an inlined constant. Defined once, as
-- ACTIVE_EPOCH_MS in src/db/active-numbers.ts. The current source, re-applied by migrate() (src/db/migrate.ts).

CREATE OR REPLACE FUNCTION ratelimit_active_epoch_ms() RETURNS BIGINT
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT {{ACTIVE_EPOCH_MS}}::BIGINT $$;
