// Log lines a client can cause (refused upgrades, malformed requests, aborted bodies): each kind
// at most once per interval at `warn`, the next one carrying how many were suppressed meanwhile,
// so an attacker cannot flood the log or drown the lines an operator needs. The suppressed ones
// still go out at `debug`.

import type { Logger } from 'pino';

export const CLIENT_LOG_INTERVAL_MS = 60_000;

interface KindState {
  lastWarnMs: number;
  suppressed: number;
}

export class ClientLog {
  private readonly kinds = new Map<string, KindState>();

  constructor(
    private readonly logger: Logger,
    private readonly intervalMs = CLIENT_LOG_INTERVAL_MS,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * `kind` must come from a fixed set chosen by the code (never from the request), so this map
   * stays as small as that set.
   */
  warn(kind: string, fields: Record<string, unknown>, message: string): void {
    const nowMs = this.now();
    const state = this.kinds.get(kind);
    if (state && nowMs - state.lastWarnMs < this.intervalMs) {
      state.suppressed++;
      this.logger.debug({ kind, ...fields }, message);
      return;
    }
    const suppressed = state?.suppressed ?? 0;
    this.kinds.set(kind, { lastWarnMs: nowMs, suppressed: 0 });
    this.logger.warn(
      { kind, ...fields, ...(suppressed > 0 ? { suppressed } : {}) },
      suppressed > 0 ? `${message} (${suppressed} more of this kind since the last warning, logged at debug)` : message,
    );
  }
}
