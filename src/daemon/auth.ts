import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';

/**
 * service: presented a valid token; may consume and may name the end user's `ip`.
 * open:    no tokens are configured (development); may consume, its own address counts.
 * browser: came from an allowed Origin without a token; may only check.
 */
export type Role = 'service' | 'open' | 'browser';

export type AuthResult = { ok: true; role: Role } | { ok: false; status: 401 | 403; message: string };

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

  authenticate(req: IncomingMessage, url: URL): AuthResult {
    const header = req.headers.authorization;
    const bearer = header && /^Bearer\s+(.+)$/i.exec(header.trim())?.[1];
    const token = bearer ?? url.searchParams.get('token') ?? undefined;
    const origin = typeof req.headers.origin === 'string' ? req.headers.origin : undefined;
    if (token !== undefined && this.tokensConfigured) {
      return this.tokenMatches(token) ? { ok: true, role: 'service' } : { ok: false, status: 401, message: 'invalid token' };
    }
    if (this.isAllowedOrigin(origin)) return { ok: true, role: 'browser' };
    if (!this.tokensConfigured) {
      // Without tokens the daemon is open, but a browser on a site not listed must not borrow
      // a visitor's network position (cross-site WebSocket hijacking).
      if (origin !== undefined && this.origins.size > 0) return { ok: false, status: 403, message: `origin ${origin} is not allowed` };
      return { ok: true, role: 'open' };
    }
    return { ok: false, status: 401, message: 'a bearer token is required (Authorization: Bearer <token> or ?token=)' };
  }
}

/**
 * Who may report outcomes (PROTOCOL.md *Outcomes*: the service role). With tokens configured,
 * only a token holder. In anonymous mode (development), a local tool, which sends no Origin:
 * a request with an Origin is a browser's, and a web page must never speak for the service.
 */
export function mayReportOutcomes(role: Role, origin: string | undefined): boolean {
  return role === 'service' || (role === 'open' && origin === undefined);
}
