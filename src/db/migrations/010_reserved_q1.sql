-- Placeholder for q1's migration 010 (durable spool), so migrations stay numbered without gaps
-- on the q3 branch. Delete this file when q1's 010 is merged.
SELECT 1;
