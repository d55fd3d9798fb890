-- Issue #19: `list`, `top`, `stats` and the metrics show the numbers under an automatic block
-- (block_after, escalating with the `blocks` group) without reading every number's row. Few rows
-- ever have a block, and blocked_until changes only when one starts or is lifted: decisions that
-- leave it as it is keep their HOT updates (migration 005), since the indexed value is unchanged.
CREATE INDEX IF NOT EXISTS phone_rate_limits_blocked ON phone_rate_limits (blocked_until) WHERE blocked_until IS NOT NULL;
