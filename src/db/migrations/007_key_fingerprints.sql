-- Which hashing key this database's hashes were made with (docs/protocol.md *Keys*, issue #11). A
-- process with another key would read "not tracked" for every tracked number and give each a
-- fresh quota, so src/db/keys.ts compares fingerprints (src/core/key.ts; never the key) before
-- anything hashes. Independent of migration 006: it touches only phone_rate_limits and this table.
--
-- Roles: exactly one 'current' once any key was recorded; at most one 'previous' (the key being
-- rotated away from: PHONE_ENCRYPTION_KEY_PREVIOUS); older keys 'retired', kept so an error can
-- say "that key was retired on ...". role_since is when the key took its role: a rotation's
-- start, from which `ratelimit key status` tells when the previous key can be dropped.
CREATE TABLE IF NOT EXISTS rate_limit_keys (
  fingerprint TEXT PRIMARY KEY,
  role TEXT NOT NULL CHECK (role IN ('current', 'previous', 'retired')),
  -- Rows of phone_rate_limits with key_fp NULL belong to this key (see below); true for the first
  -- key recorded, only.
  owns_untagged_rows BOOLEAN NOT NULL DEFAULT false,
  first_seen TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
  last_seen TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
  role_since TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW()
);
CREATE UNIQUE INDEX IF NOT EXISTS rate_limit_keys_one_current ON rate_limit_keys (role) WHERE role = 'current';
CREATE UNIQUE INDEX IF NOT EXISTS rate_limit_keys_one_previous ON rate_limit_keys (role) WHERE role = 'previous';
CREATE UNIQUE INDEX IF NOT EXISTS rate_limit_keys_one_untagged_owner ON rate_limit_keys (owns_untagged_rows) WHERE owns_untagged_rows;

-- The key a row's hash was made with. A hash alone cannot tell (that is the point of an HMAC),
-- yet during a rotation `key status` must count the rows still under the previous key.
-- A row's key never changes: its phone_hash is a function of the key, so a number under a new
-- key is a new row. Hence the tag is set once, at INSERT, by the column DEFAULT, which
-- src/db/keys.ts sets to the current key's fingerprint whenever it records or rotates a key;
-- writers need not know about it, and the hot path pays nothing. NULL: the row was inserted
-- before any key was recorded, i.e. under the first recorded key (owns_untagged_rows).
-- Limit: a process still running with the old key after a rotation inserts rows tagged with the
-- new fingerprint; key status therefore also waits one longest window from the rotation.
ALTER TABLE phone_rate_limits ADD COLUMN IF NOT EXISTS key_fp TEXT;
