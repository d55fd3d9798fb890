-- Issue #19: outcomes (docs/protocol.md *Outcomes*). One row per decision whose outcome the
-- service reported: what happened to the call or message an allowed consume let through.
--
-- The decision itself is not stored at consume time: its decisionId is a self-contained
-- authenticated token (src/core/decision-id.ts) carrying the number's hash, region, 1,000-number
-- range and the decision instant, which land here only when the outcome is reported. So the
-- consume path writes nothing more, and per-country and per-range conversion is one indexed
-- range scan over decided_at.
--
-- Nothing here narrows a number further than the tables before it do: the hash is keyed (HMAC),
-- the range is the same 1,000-number prefix that prefix rules key their counters by, and the
-- decision id is encrypted. Rows go with the retention job once decided_at is past the id horizon
-- (7 days, DECISION_ID_HORIZON_MS), or the policy's retention horizon if that is longer.
CREATE TABLE IF NOT EXISTS rate_limit_outcomes (
  decision_id TEXT PRIMARY KEY,
  phone_hash TEXT NOT NULL,
  region TEXT,
  range_label TEXT NOT NULL,
  decided_at TIMESTAMP WITH TIME ZONE NOT NULL,
  outcome TEXT NOT NULL CHECK (outcome IN ('verified', 'answered', 'unanswered', 'failed')),
  duration_ms INTEGER CHECK (duration_ms IS NULL OR duration_ms >= 0),
  source TEXT NOT NULL CHECK (source IN ('ws', 'http', 'twilio')),
  recorded_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT clock_timestamp()
);

-- Conversion per country and per range over a window; the outcome and duration ride along so
-- those scans need not visit the table.
CREATE INDEX IF NOT EXISTS rate_limit_outcomes_region ON rate_limit_outcomes (region, decided_at) INCLUDE (outcome, duration_ms);
CREATE INDEX IF NOT EXISTS rate_limit_outcomes_range ON rate_limit_outcomes (range_label, decided_at) INCLUDE (outcome, duration_ms);
-- `ratelimit status` (a number's recent outcomes), and the retention job's scan by age.
CREATE INDEX IF NOT EXISTS rate_limit_outcomes_phone ON rate_limit_outcomes (phone_hash, decided_at);
CREATE INDEX IF NOT EXISTS rate_limit_outcomes_decided ON rate_limit_outcomes (decided_at);
