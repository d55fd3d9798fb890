// Validation of what clients send (zod), for the daemon only: the client package
// must not load zod, so this lives apart from the zod-free wire.ts/errors.ts/replies.ts.
// Nothing past RequestParser sees unchecked input.

import { z } from 'zod';
import type { CanonicalAddress } from '../core/address.js';
import type { ProtocolErrorCode } from './errors.js';
import { errorReply } from './replies.js';
import { OUTCOMES, REQUEST_TYPES, type CheckRequest, type ConsumeRequest, type ErrorReply, type OutcomeRequest, type Request, type RequestId } from './wire.js';

/** An id is echoed in replies: bounded. */
const MAX_ID_LENGTH = 128;
const id = z.union([z.string().max(MAX_ID_LENGTH), z.number().finite()]);

/**
 * Reads a client-supplied address into its per-IP quota key, or says why it is not an address.
 * The daemon passes src/core/address.ts canonicalAddress; it is a parameter because the protocol
 * layer may not run core's code (test/architecture.test.ts), only name its types.
 */
export type AddressReader = (text: string) => CanonicalAddress;

function schemas(readAddress: AddressReader): { check: z.ZodType<CheckRequest>; consume: z.ZodType<ConsumeRequest> } {
  // Parsed into the quota key (IPv4 as a dotted quad, IPv4-mapped IPv6 as IPv4, other IPv6 as its
  // /64), so past this point `ip` is the key and no spelling of one client's address can mint a
  // second quota.
  const ip = z
    .string()
    .transform((s, ctx) => {
      const c = readAddress(s);
      if (c.ok) return c.key;
      ctx.addIssue({ code: 'custom', message: c.message });
      return z.NEVER;
    })
    .optional();
  // docs/protocol.md gives /v1/check and /v1/consume one body, `ip` included, so a client may send the
  // same payload to both; a check has no use for it.
  // Unknown fields are ignored (z.object strips them): a newer client adding a field must keep
  // working against an older daemon. Known fields are checked strictly.
  return {
    check: z.object({ type: z.literal('rate_limit_check'), id: id.optional(), phoneNumber: z.string(), ip }),
    consume: z.object({ type: z.literal('rate_limit_consume'), id: id.optional(), phoneNumber: z.string(), ip }),
  };
}

/** The longest call an outcome may report: a week, far past any real call, within a 32-bit int. */
export const MAX_OUTCOME_DURATION_MS = 7 * 24 * 60 * 60 * 1000;

// Decision ids are checked (and their authenticity proven) by the daemon; here only their size is bounded.
const outcomeSchema: z.ZodType<OutcomeRequest> = z
  .object({
    type: z.literal('rate_limit_outcome'),
    id: id.optional(),
    decisionId: z.string().min(1).max(256),
    outcome: z.enum(OUTCOMES),
    durationMs: z.number().int().min(0).max(MAX_OUTCOME_DURATION_MS).optional(),
  })
  .superRefine((o, ctx) => {
    if (o.outcome === 'answered' && o.durationMs === undefined) {
      ctx.addIssue({ code: 'custom', path: ['durationMs'], message: 'an "answered" outcome needs durationMs (how long the call lasted, in ms)' });
    }
  });

export type Parsed = { ok: true; request: Request } | { ok: false; error: ErrorReply };

function fail(code: ProtocolErrorCode, message: string, reqId?: RequestId): Parsed {
  return { ok: false, error: errorReply(code, message, reqId) };
}

/** Echo an id only if it is one we would accept, so error replies never reflect junk. */
function salvageId(value: unknown): RequestId | undefined {
  if (typeof value === 'string') return value.length <= MAX_ID_LENGTH ? value : undefined;
  return typeof value === 'number' && Number.isFinite(value) ? value : undefined;
}

/**
 * The `id` of a frame that will not be validated (a throttled one), so even `too_many_requests`
 * echoes it (docs/protocol.md). Only JSON.parse, no schema: frames are size-capped, so this is cheap.
 */
export function peekRequestId(text: string): RequestId | undefined {
  if (!text.includes('"id"')) return undefined;
  try {
    const value: unknown = JSON.parse(text);
    return typeof value === 'object' && value !== null ? salvageId((value as Record<string, unknown>).id) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * A well-formed check or consume, recognised without zod (whose safeParse was a few percent of
 * the daemon's time per decision): every known field present has the schema's type and bounds.
 * Anything else returns undefined and goes to zod, so every refusal keeps zod's message. What it
 * returns is what the schema's parse returns: the known fields only (unknown ones dropped), `ip`
 * read into its quota key. Never throws: it only reads properties of a decoded JSON object.
 */
function plainDecisionRequest(
  obj: Record<string, unknown>,
  type: 'rate_limit_check' | 'rate_limit_consume',
  readAddress: AddressReader,
): CheckRequest | ConsumeRequest | undefined {
  const { id: rawId, phoneNumber, ip } = obj;
  if (typeof phoneNumber !== 'string') return undefined;
  // salvageId accepts exactly the ids the schema does.
  const id = salvageId(rawId);
  if (id === undefined && rawId !== undefined) return undefined;
  if (ip === undefined) return id === undefined ? { type, phoneNumber } : { type, id, phoneNumber };
  if (typeof ip !== 'string') return undefined;
  const address = readAddress(ip);
  if (!address.ok) return undefined;
  return id === undefined ? { type, phoneNumber, ip: address.key } : { type, id, phoneNumber, ip: address.key };
}

export interface RequestParserOptions {
  /** false: every request through zod (the tests hold the fast path to it). Default true. */
  fastPath?: boolean;
}

/** Validates requests; nothing past it sees unchecked input. */
export class RequestParser {
  private readonly check: z.ZodType<CheckRequest>;
  private readonly consume: z.ZodType<ConsumeRequest>;
  private readonly fastPath: boolean;

  constructor(
    private readonly readAddress: AddressReader,
    options: RequestParserOptions = {},
  ) {
    ({ check: this.check, consume: this.consume } = schemas(readAddress));
    this.fastPath = options.fastPath ?? true;
  }

  /** From an already-decoded JSON value (HTTP bodies, WebSocket frames). */
  parseRequest(value: unknown, forceType?: Request['type']): Parsed {
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      return fail('invalid_message', 'a message must be a JSON object');
    }
    const obj = forceType ? { ...(value as Record<string, unknown>), type: forceType } : (value as Record<string, unknown>);
    const reqId = salvageId(obj.id);
    if (typeof obj.type !== 'string') return fail('invalid_message', 'missing "type"', reqId);
    if (!(REQUEST_TYPES as readonly string[]).includes(obj.type)) {
      return fail('unknown_type', `unknown type "${obj.type.slice(0, 40)}"; expected ${REQUEST_TYPES.join(' or ')}`, reqId);
    }
    if (this.fastPath && obj.type !== 'rate_limit_outcome') {
      const plain = plainDecisionRequest(obj, obj.type as 'rate_limit_check' | 'rate_limit_consume', this.readAddress);
      if (plain) return { ok: true, request: plain };
    }
    const schema: z.ZodType<Request> = obj.type === 'rate_limit_check' ? this.check : obj.type === 'rate_limit_consume' ? this.consume : outcomeSchema;
    const r = schema.safeParse(obj);
    if (!r.success) {
      const issue = r.error.issues[0]!;
      const where = issue.path.length > 0 ? `"${issue.path.join('.')}": ` : '';
      return fail('invalid_message', `${where}${issue.message}`, reqId);
    }
    return { ok: true, request: r.data };
  }

  /** From a text frame. */
  parseFrame(text: string): Parsed {
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      return fail('invalid_json', 'the frame is not valid JSON');
    }
    return this.parseRequest(value);
  }
}
