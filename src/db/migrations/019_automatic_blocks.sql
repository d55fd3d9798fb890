-- Issue #19: automatic blocks that escalate and decay (docs/protocol.md *Policy*, `blocks`).
-- A range's block lives on the counter whose rule tripped it (sweep and conversion.prefix
-- counters), a number's on its row, next to block_after's blocked_until. blocked_until is kept
-- after the block ends: decay measures the quiet time since then. block_level is the 1-based
-- step of blocks.escalate that the latest block used (0: never blocked).
ALTER TABLE rate_limit_counters ADD COLUMN IF NOT EXISTS blocked_until BIGINT;
ALTER TABLE rate_limit_counters ADD COLUMN IF NOT EXISTS block_level INTEGER NOT NULL DEFAULT 0;
ALTER TABLE phone_rate_limits ADD COLUMN IF NOT EXISTS block_level INTEGER NOT NULL DEFAULT 0;
-- `list` and `top` show ranges blocked now; few counters are ever blocked.
CREATE INDEX IF NOT EXISTS rate_limit_counters_blocked ON rate_limit_counters (blocked_until) WHERE blocked_until IS NOT NULL;
