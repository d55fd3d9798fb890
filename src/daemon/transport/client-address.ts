// Which quota key a connection or request counts against (issue #11): every address that reaches
// a limit goes through canonicalAddress, so one client is one key however its address is spelled
// (IPv4-mapped IPv6, upper case, zero runs; a whole IPv6 /64). Separate from auth.ts because it
// is about identity for limits, not about permissions.

import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import ipaddr from 'ipaddr.js';
import type { Logger } from 'pino';
import { canonicalAddress } from '../../core/address.js';
import type { TrustProxy } from '../../core/config.js';
import type { ClientLog } from './client-log.js';

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
 * Whether a peer can be Fly's proxy. On a Fly machine, Fly Proxy reaches the app over the
 * machine's private network, never from a public address; a public peer reached the machine some
 * other way and its Fly-Client-IP is its own invention. Loopback is a process on the machine.
 * Traffic over Fly's private network (6PN, fdaa::/16) also comes from a private address without
 * passing the proxy, so it can set any header: see README.md *Security*.
 */
export function mayBeFlyProxy(remoteAddress: string | undefined): boolean {
  if (remoteAddress === undefined || !ipaddr.isValid(remoteAddress)) return false;
  const range = ipaddr.process(remoteAddress).range();
  return range === 'private' || range === 'loopback' || range === 'uniqueLocal' || range === 'carrierGradeNat';
}

/**
 * The end user's quota key: the socket's, or Fly's `Fly-Client-IP` when RATELIMIT_TRUST_PROXY=fly
 * and the daemon runs on Fly (FLY_APP_NAME set) and the peer can be Fly's proxy (mayBeFlyProxy).
 * Anyone can send the header, so it is believed only where only the proxy can have set it.
 * A header that is not an address never becomes a key (it would mint a fresh quota per spelling):
 * the socket's address counts instead, which behind Fly is the proxy's, so such requests share one
 * quota rather than escaping it. Ignored headers are logged at most once a minute (ClientLog),
 * so an attacker cannot flood the log.
 */
export class ClientAddresses {
  private readonly trustFly: boolean;

  constructor(
    trust: TrustProxy,
    private readonly clientLog: ClientLog,
    /** FLY_APP_NAME: set by Fly on every machine. */
    flyAppName: string | undefined,
    logger: Logger,
  ) {
    this.trustFly = trust === 'fly' && flyAppName !== undefined;
    if (trust === 'fly' && flyAppName === undefined) {
      logger.warn('RATELIMIT_TRUST_PROXY=fly but FLY_APP_NAME is not set, so this is not a Fly machine: Fly-Client-IP is ignored and socket addresses count');
    }
  }

  /** Whether connections' socket addresses are end users' (false behind a proxy we trust). */
  get socketIsClient(): boolean {
    return !this.trustFly;
  }

  of(req: IncomingMessage): string {
    if (this.trustFly) {
      const header = req.headers['fly-client-ip'];
      if (typeof header === 'string') {
        const peer = req.socket.remoteAddress;
        if (!mayBeFlyProxy(peer)) {
          this.clientLog.warn(
            'fly_client_ip_untrusted_peer',
            { peer },
            'ignoring Fly-Client-IP from a public peer, which cannot be Fly Proxy; counting the socket address',
          );
          return socketAddressKey(req.socket);
        }
        const c = canonicalAddress(header);
        if (c.ok) return c.key;
        this.clientLog.warn(
          'fly_client_ip_invalid',
          { header: 'Fly-Client-IP', problem: c.message, peer },
          'ignoring an invalid Fly-Client-IP header; counting the socket address instead',
        );
      }
    }
    return socketAddressKey(req.socket);
  }
}
