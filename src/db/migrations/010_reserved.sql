-- Placeholder so the numbering has no gap on branches that carry migration 011 (q2, key rotation)
-- before 010 (q1) is merged. It does nothing. Whoever merges 010 deletes this file; if 010 is
-- never written, this file stays and records nothing but its number.
SELECT 1;
