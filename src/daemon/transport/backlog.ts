// How many bytes of replies the daemon holds for clients, per socket and in total (issue #11):
// a client that pipelines requests but never reads the replies must not grow the daemon's memory.
// Separate from ws.ts so the accounting (one running total, adjusted by each socket's change)
// can be read on its own; the WebSocket transport decides when to pause, resume and close.

export interface BacklogLimits {
  /** Past this a socket is no longer read from (its client is not reading our replies). */
  perSocketHighBytes: number;
  /** Below this (and with the total under its cap) a paused socket is read again. */
  perSocketLowBytes: number;
  /** Across all sockets: past this every socket over the low mark is paused. */
  totalHighBytes: number;
  /** Counted for each request still being decided, whose reply is not yet built. */
  pendingReplyBytes: number;
  /** A socket paused and over its low mark this long is closed with 1008. */
  stallMs: number;
  /** After the 1008 close frame, how long the client has to read it before the socket is dropped. */
  closeGraceMs: number;
}

export const DEFAULT_BACKLOG_LIMITS: BacklogLimits = {
  perSocketHighBytes: 256 * 1024,
  perSocketLowBytes: 64 * 1024,
  totalHighBytes: 64 * 1024 * 1024,
  // A reply is 150-300 bytes of JSON; a request being decided also holds its parsed form.
  pendingReplyBytes: 256,
  stallMs: 5_000,
  closeGraceMs: 5_000,
};

/** One socket's share, as last measured. */
export interface BacklogShare {
  countedBytes: number;
  /** When the socket was paused, or undefined while it is read. */
  pausedAtMs: number | undefined;
}

export class BacklogBudget {
  private totalBytes = 0;

  constructor(readonly limits: BacklogLimits = DEFAULT_BACKLOG_LIMITS) {}

  /** Reply bytes held for all sockets, as last measured. */
  get total(): number {
    return this.totalBytes;
  }

  /** Records a socket's backlog: bytes queued for sending plus requests still being decided. */
  measure(share: BacklogShare, queuedBytes: number, pendingRequests: number): void {
    const bytes = queuedBytes + pendingRequests * this.limits.pendingReplyBytes;
    this.totalBytes += bytes - share.countedBytes;
    share.countedBytes = bytes;
  }

  /** The socket is gone: its bytes no longer count. */
  release(share: BacklogShare): void {
    this.totalBytes -= share.countedBytes;
    share.countedBytes = 0;
  }

  shouldPause(share: BacklogShare): boolean {
    const { perSocketHighBytes, perSocketLowBytes, totalHighBytes } = this.limits;
    return share.countedBytes > perSocketHighBytes || (this.totalBytes > totalHighBytes && share.countedBytes > perSocketLowBytes);
  }

  mayResume(share: BacklogShare): boolean {
    return share.countedBytes <= this.limits.perSocketLowBytes && this.totalBytes <= this.limits.totalHighBytes;
  }

  /** Paused for long with its own replies unread (not merely waiting for the total to fall). */
  stalled(share: BacklogShare, nowMs: number): boolean {
    return share.pausedAtMs !== undefined && nowMs - share.pausedAtMs > this.limits.stallMs && share.countedBytes > this.limits.perSocketLowBytes;
  }
}
