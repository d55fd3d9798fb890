-- Each daemon's heartbeat, read by `ratelimit top`. UNLOGGED: it is rewritten every few seconds
-- and worthless after a crash, so it should cost no WAL.
CREATE UNLOGGED TABLE IF NOT EXISTS ratelimit_instances (
  instance_id TEXT PRIMARY KEY,
  host TEXT NOT NULL,
  fly_region TEXT,
  version TEXT NOT NULL,
  pid INTEGER NOT NULL,
  started_at TIMESTAMP WITH TIME ZONE NOT NULL,
  -- Measured by the instance on a monotonic clock: started_at is its wall clock, which may be
  -- skewed against the database's.
  uptime_ms BIGINT NOT NULL DEFAULT 0,
  -- The database's clock, so "silent for three intervals" never depends on an instance's clock.
  last_seen TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
  -- Set by a graceful shutdown: the instance left on purpose, it did not die.
  stopped_at TIMESTAMP WITH TIME ZONE,
  interval_ms INTEGER NOT NULL,
  connections INTEGER NOT NULL DEFAULT 0,
  allowed_per_s REAL NOT NULL DEFAULT 0,
  denied_per_s REAL NOT NULL DEFAULT 0,
  allowed_total BIGINT NOT NULL DEFAULT 0,
  denied_total BIGINT NOT NULL DEFAULT 0,
  fallback BOOLEAN NOT NULL DEFAULT false,
  db_latency_ms REAL,
  -- decisions per second over the last minute, oldest first: a dashboard can draw its
  -- sparkline from its very first frame.
  allowed_series INTEGER[] NOT NULL DEFAULT '{}',
  denied_series INTEGER[] NOT NULL DEFAULT '{}'
);
