-- Retention (issue #12, src/db/retention.ts). rate_limit_resets is append-only audit, so an
-- index on its age costs nothing on the decision path; pruning it by age no longer scans it.
-- No index is added on phone_rate_limits or rate_limit_counters: every decision rewrites their
-- activity columns, and an index on one would end HOT updates (see 005). Retention walks those
-- two tables by primary key instead, a bounded slice at a time.
CREATE INDEX IF NOT EXISTS rate_limit_resets_reset_at_idx ON rate_limit_resets (reset_at);
