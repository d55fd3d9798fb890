-- The seed schema from docs/protocol.md, verbatim. IF NOT EXISTS adopts a database that an earlier
-- deployment of the original design created by hand.
CREATE TABLE IF NOT EXISTS phone_rate_limits (
  phone_hash TEXT PRIMARY KEY,           -- HMAC-SHA256 of the E.164 number
  call_count INTEGER NOT NULL DEFAULT 0, -- calls in the current window
  window_start BIGINT NOT NULL,          -- start of the current window, ms since epoch
  region TEXT,                           -- ISO country of the number, if known
  created_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
  updated_at TIMESTAMP WITH TIME ZONE DEFAULT NOW()
);
