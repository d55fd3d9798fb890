// Which quota key a connection or request counts against (issue #11): every address that reaches
// a limit goes through canonicalAddress, so one client is one key however its address is spelled
// (IPv4-mapped IPv6, upper case, zero runs; a whole IPv6 /64). Separate from auth.ts because it
// is about identity for limits, not about permissions.

import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import { canonicalAddress } from '../../core/address.js';
import type { TrustProxy } from '../../core/config.js';

/** Key for a socket whose peer address is gone (closed before we looked): they share one quota. */
export const UNKNOWN_ADDRESS_KEY = 'unknown';

/** The quota key of a socket's peer. */
export function socketAddressKey(socket: Pick<Socket, 'remoteAddress'>): string {
  const raw = socket.remoteAddress;
  if (raw === undefined) return UNKNOWN_ADDRESS_KEY;
  const c = canonicalAddress(raw);
  return c.ok ? c.key : UNKNOWN_ADDRESS_KEY;
}

/**
 * The end user's quota key: the socket's, or Fly's `Fly-Client-IP` when RATELIMIT_TRUST_PROXY=fly.
 * A header that is not an address never becomes a key (it would mint a fresh quota per spelling):
 * the socket's address counts instead, which behind Fly is the proxy's, so such requests share one
 * quota rather than escaping it. The first such header is logged as a warning (it means the proxy
 * is misconfigured or someone reaches the app around it); later ones at debug, so an attacker
 * cannot flood the log.
 */
export class ClientAddresses {
  private warned = false;

  constructor(
    private readonly trust: TrustProxy,
    private readonly logger: Logger,
  ) {}

  /** Whether connections' socket addresses are end users' (false behind a proxy we trust). */
  get socketIsClient(): boolean {
    return this.trust === 'none';
  }

  of(req: IncomingMessage): string {
    if (this.trust === 'fly') {
      const header = req.headers['fly-client-ip'];
      if (typeof header === 'string') {
        const c = canonicalAddress(header);
        if (c.ok) return c.key;
        const fields = { header: 'Fly-Client-IP', problem: c.message, socket: req.socket.remoteAddress };
        if (!this.warned) {
          this.warned = true;
          this.logger.warn(fields, 'ignoring an invalid Fly-Client-IP header; counting the socket address instead (further ones are logged at debug)');
        } else {
          this.logger.debug(fields, 'ignoring an invalid Fly-Client-IP header');
        }
      }
    }
    return socketAddressKey(req.socket);
  }
}
