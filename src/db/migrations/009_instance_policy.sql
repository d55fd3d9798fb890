-- What `ratelimit top` and `stats` need from each daemon beyond 003's totals (issues #10, #13):
-- the policy version it enforces (so a daemon still on an older one is flagged) and its denials
-- by reason and shadow denials by rule (an IP denial must never read as "0 denied/s").
ALTER TABLE ratelimit_instances
  ADD COLUMN IF NOT EXISTS policy_version INTEGER NOT NULL DEFAULT 0,
  -- reason -> denials since the daemon started, and per second over the heartbeat's rate window
  ADD COLUMN IF NOT EXISTS denied_by_reason JSONB NOT NULL DEFAULT '{}',
  ADD COLUMN IF NOT EXISTS denied_per_s_by_reason JSONB NOT NULL DEFAULT '{}',
  -- shadow rule id -> consumes it would have denied since the daemon started
  ADD COLUMN IF NOT EXISTS shadow_denied JSONB NOT NULL DEFAULT '{}';

-- Per-minute rollup of every daemon's decisions, so `stats` can say "denials in the last window,
-- by reason" after the daemons that made them have gone. Each heartbeat adds its deltas in one
-- statement; rows older than a day are pruned by the heartbeats. `rule` is '' for a denial
-- (reason = its docs/protocol.md reason) and the rule id for a shadow denial (reason = 'shadow').
-- Logged (unlike ratelimit_instances): it is history an operator may be asked about.
CREATE TABLE IF NOT EXISTS rate_limit_decision_counts (
  minute TIMESTAMP WITH TIME ZONE NOT NULL,
  reason TEXT NOT NULL,
  rule TEXT NOT NULL,
  n BIGINT NOT NULL,
  PRIMARY KEY (minute, reason, rule)
);
