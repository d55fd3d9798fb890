-- Nothing stored may narrow a number to fewer than 1,000 candidates (docs/protocol.md, *The
-- limit's promise*). Before this release masks showed a number's last two digits beside its
-- first four (+1415•••••71), and a policy could key prefix counters by a range of 10 or 100
-- numbers, both stored in the clear: together they could give the whole number away.
--
-- Masks now show the number without its last three digits (+14155552•••). From an old mask only
-- what it showed of the start can be kept: its leading digits stay, every digit after the first
-- bullet becomes a bullet (the length is kept), and never more than all but three digits show.

CREATE OR REPLACE FUNCTION pg_temp.ratelimit_range_mask(p_masked TEXT) RETURNS TEXT
LANGUAGE sql IMMUTABLE AS $$
  SELECT CASE
    WHEN p_masked IS NULL OR p_masked !~ '^\+' THEN p_masked
    ELSE '+' || left(lead.digits, greatest(0, char_length(p_masked) - 4))
             || repeat(U&'\2022', char_length(p_masked) - 1 - char_length(left(lead.digits, greatest(0, char_length(p_masked) - 4))))
  END
  FROM (SELECT COALESCE(substring(p_masked FROM '^\+([0-9]*)'), '') AS digits) AS lead
$$;

UPDATE phone_rate_limits
   SET phone_masked = pg_temp.ratelimit_range_mask(phone_masked)
 WHERE phone_masked IS DISTINCT FROM pg_temp.ratelimit_range_mask(phone_masked);

-- A prefix entry's `masked` is the prefix as the operator typed it: policy, not a number (and
-- dropping or widening a block at upgrade would change what it blocks). Number entries' masks,
-- and the copies the audit kept of them, are rewritten.
UPDATE rate_limit_lists
   SET masked = pg_temp.ratelimit_range_mask(masked)
 WHERE target_type = 'number' AND masked IS DISTINCT FROM pg_temp.ratelimit_range_mask(masked);

UPDATE rate_limit_audit
   SET detail = jsonb_set(detail, '{masked}', to_jsonb(pg_temp.ratelimit_range_mask(detail ->> 'masked')))
 WHERE target LIKE 'number:%'
   AND jsonb_typeof(detail -> 'masked') = 'string'
   AND detail ->> 'masked' IS DISTINCT FROM pg_temp.ratelimit_range_mask(detail ->> 'masked');

-- Prefix counters keyed by a range narrower than 1,000 numbers: a key alone does not say how many
-- digits its numbers have, so once any policy ever stored asked for fewer than 3 digits, every
-- prefix counter goes (prefix counts start over, as when `digits` changes). Daemons now enforce
-- such a policy with 3 digits (src/core/policy/counters.ts).
DELETE FROM rate_limit_counters
 WHERE rule_id ~ '(^|:)prefix:'
   AND EXISTS (SELECT 1 FROM rate_limit_policies WHERE yaml ~ 'digits[[:space:]]*:[[:space:]]*["'']?0*[12]["'']?([^0-9.]|$)');

DROP FUNCTION pg_temp.ratelimit_range_mask(TEXT);
