-- Issue #19: conversion rules engage while an outcome was recorded within 7 days
-- (CONVERSION_ENGAGED_WITHIN_MS), which every daemon asks at start and once a minute, and which
-- the take-back of a converted call checks for its decision instant (src/db/outcomes.ts). Both
-- look rows up by recorded_at, which no index of migration 018 leads with.
CREATE INDEX IF NOT EXISTS rate_limit_outcomes_recorded ON rate_limit_outcomes (recorded_at);
