import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';

/**
 * service: presented a valid token; may consume and may name the end user's `ip`.
 * open:    no tokens are configured (anonymous mode) and no Origin header (a local tool, a
 *          backend); may consume, its own address counts.
 * browser: came with an Origin header and no token: from an allowed Origin, or, in anonymous
 *          mode, from any origin when ALLOWED_ORIGINS is empty; may only check. A web page must
 *          not spend a victim's quota through its visitors' browsers (a text/plain POST needs no
 *          preflight), so in anonymous mode an Origin never grants consume.
 */
export type Role = 'service' | 'open' | 'browser';

/** Why a request was refused, for the rate-limited log line (a fixed set: see ClientLog). */
export type RefusalKind = 'invalid_token' | 'token_required' | 'origin_not_allowed';

export type AuthResult = { ok: true; role: Role } | { ok: false; status: 401 | 403; kind: RefusalKind; message: string };

// Comparing digests keeps the comparison constant-time even when lengths differ.
const digest = (s: string) => createHash('sha256').update(s).digest();

export class Authenticator {
  private readonly tokens: Buffer[];
  private readonly origins: Set<string>;

  constructor(tokens: string[], origins: string[]) {
    this.tokens = tokens.map(digest);
    this.origins = new Set(origins.map((o) => o.toLowerCase()));
  }

  get tokensConfigured(): boolean {
    return this.tokens.length > 0;
  }

  isAllowedOrigin(origin: string | undefined): boolean {
    return origin !== undefined && this.origins.has(origin.toLowerCase());
  }

  private tokenMatches(token: string): boolean {
    const d = digest(token);
    let match = false;
    for (const t of this.tokens) match = timingSafeEqual(d, t) || match;
    return match;
  }

  /** The configured origins, for messages. */
  private originsText(): string {
    if (this.origins.size === 0) return 'ALLOWED_ORIGINS is empty';
    const list = [...this.origins].join(',');
    return `ALLOWED_ORIGINS is ${list.length > 256 ? `${list.slice(0, 256)}…` : list}`;
  }

  /**
   * `params`: the request target's query (src/daemon/transport/target.ts), for `?token=`; the
   * Authorization header is preferred (a token in the URL ends up in proxies' access logs).
   */
  authenticate(req: IncomingMessage, params: URLSearchParams): AuthResult {
    const header = req.headers.authorization;
    const bearer = header && /^Bearer\s+(.+)$/i.exec(header.trim())?.[1];
    const token = bearer ?? params.get('token') ?? undefined;
    const origin = typeof req.headers.origin === 'string' ? req.headers.origin : undefined;
    // Untrusted, so quoted and bounded before it goes into a reply or a log line.
    const shown = origin === undefined ? '' : JSON.stringify(origin.length > 128 ? `${origin.slice(0, 128)}…` : origin);
    if (token !== undefined && this.tokensConfigured) {
      return this.tokenMatches(token)
        ? { ok: true, role: 'service' }
        : { ok: false, status: 401, kind: 'invalid_token', message: 'invalid token (send one of RATELIMIT_API_TOKENS as Authorization: Bearer <token>)' };
    }
    if (this.isAllowedOrigin(origin)) return { ok: true, role: 'browser' };
    if (!this.tokensConfigured) {
      if (origin === undefined) return { ok: true, role: 'open' };
      // A browser on a site not listed must not borrow a visitor's network position
      // (cross-site WebSocket hijacking) once origins are listed; with none listed, a page may
      // check but never consume (role browser).
      if (this.origins.size > 0) {
        return {
          ok: false,
          status: 403,
          kind: 'origin_not_allowed',
          message: `origin ${shown} is not allowed: ${this.originsText()} (add the page's exact origin, scheme://host[:port], to ALLOWED_ORIGINS)`,
        };
      }
      return { ok: true, role: 'browser' };
    }
    if (origin !== undefined) {
      return {
        ok: false,
        status: 401,
        kind: 'origin_not_allowed',
        message: `origin ${shown} may not connect without a token: ${this.originsText()} (add the page's exact origin to it, or send Authorization: Bearer <token>)`,
      };
    }
    return {
      ok: false,
      status: 401,
      kind: 'token_required',
      message: 'a bearer token is required (Authorization: Bearer <token>; ?token= works but ends up in access logs)',
    };
  }
}

/**
 * Who may report outcomes (docs/protocol.md *Outcomes*: the service role). With tokens configured,
 * only a token holder. In anonymous mode (development), a local tool, which sends no Origin:
 * a request with an Origin is a browser's, and a web page must never speak for the service.
 */
export function mayReportOutcomes(role: Role, origin: string | undefined): boolean {
  return role === 'service' || (role === 'open' && origin === undefined);
}
