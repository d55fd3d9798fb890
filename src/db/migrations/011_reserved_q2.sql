-- Placeholder for q2's migration 011 (key rotation), so migrations stay numbered without gaps
-- on the q3 branch. Delete this file when q2's 011_key_rotation.sql is merged.
SELECT 1;
