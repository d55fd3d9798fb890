// Longer than 350 lines because every kind of bad input meets one daemon here, WebSocket and HTTP alike.
// Hostile and malformed input against the running binary: every frame gets exactly one answer
// of the class docs/protocol.md implies, the socket stays open (or closes with 1009 when oversized),
// and the daemon neither crashes nor logs unhandled errors.

import fc from 'fast-check';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { canonicalAddress } from '../../src/core/address.js';
import { normalizePhone } from '../../src/core/phone.js';
import {
  assertBuilt,
  closeAll,
  crashSigns,
  createTestDatabase,
  type DaemonProcess,
  health,
  postJson,
  type Reply,
  startDaemon,
  stopAll,
  WsClient,
} from '../helpers/fixture.js';

const MAX_FRAME = 4096;
const ERROR_CODES = [
  'invalid_json',
  'invalid_message',
  'unknown_type',
  'invalid_phone_number',
  'unauthorized',
  'forbidden',
  'too_many_requests',
  'internal_error',
];
const TYPES = ['rate_limit_check', 'rate_limit_consume'];

let db: Awaited<ReturnType<typeof createTestDatabase>> | undefined;
let daemon: DaemonProcess;
const clients = new Set<WsClient>();

beforeAll(async () => {
  assertBuilt();
  db = await createTestDatabase();
  daemon = await startDaemon({
    databaseUrl: db.url,
    // Limits out of the way: this file is about parsing, not throttling.
    env: { RATELIMIT_MESSAGES_PER_SECOND: '1000000', RATE_LIMIT_IP_MAX: '1000000', RATE_LIMIT_PHONE_MAX: '3' },
  });
});

afterEach(async () => {
  await closeAll(clients);
  clients.clear();
});

afterAll(async () => {
  await stopAll([daemon]);
  await db?.drop();
});

async function connect(): Promise<WsClient> {
  const c = await WsClient.connect(daemon.wsUrl);
  clients.add(c);
  return c;
}

// ---- the oracle: what docs/protocol.md says each input deserves ---------------------------------

type Expected = { kind: 'error'; code: string; id?: unknown } | { kind: 'decision'; e164: string; id?: unknown } | { kind: 'too_large' };

const validId = (v: unknown) => (typeof v === 'string' && v.length <= 128) || (typeof v === 'number' && Number.isFinite(v));
// `ip` is read as src/core/address.ts reads any address (issue #11: one client, one quota key).
const validIp = (v: unknown) => typeof v === 'string' && canonicalAddress(v).ok;

/**
 * Unknown fields are ignored (forward compatibility); a wrong type for a known field or an
 * unusable `id` makes the message invalid (an `id` is echoed only when it is one the protocol allows).
 */
function expectForValue(value: unknown, forcedType?: string): Expected {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return { kind: 'error', code: 'invalid_message' };
  const obj: Record<string, unknown> = forcedType ? { ...(value as object), type: forcedType } : (value as Record<string, unknown>);
  const id = Object.hasOwn(obj, 'id') && validId(obj.id) ? obj.id : undefined;
  const err = (code: string): Expected => ({ kind: 'error', code, ...(id !== undefined ? { id } : {}) });
  const type = Object.hasOwn(obj, 'type') ? obj.type : undefined;
  if (typeof type !== 'string') return err('invalid_message');
  if (!TYPES.includes(type)) return err('unknown_type');
  if (Object.hasOwn(obj, 'id') && id === undefined) return err('invalid_message');
  if (!Object.hasOwn(obj, 'phoneNumber') || typeof obj.phoneNumber !== 'string') return err('invalid_message');
  if (Object.hasOwn(obj, 'ip') && !validIp(obj.ip)) return err('invalid_message');
  let e164: string;
  try {
    e164 = normalizePhone(obj.phoneNumber).e164;
  } catch {
    return err('invalid_phone_number');
  }
  return { kind: 'decision', e164, ...(id !== undefined ? { id } : {}) };
}

function parse(text: string): { ok: true; value: unknown } | { ok: false } {
  try {
    return { ok: true, value: JSON.parse(text) as unknown };
  } catch {
    return { ok: false };
  }
}

function expectForFrame(wire: Buffer): Expected {
  if (wire.length > MAX_FRAME) return { kind: 'too_large' };
  const parsed = parse(wire.toString('utf8'));
  return parsed.ok ? expectForValue(parsed.value) : { kind: 'error', code: 'invalid_json' };
}

function expectForBody(wire: Buffer, route: string): Expected {
  if (wire.length > MAX_FRAME) return { kind: 'too_large' };
  const parsed = parse(wire.toString('utf8'));
  if (!parsed.ok) return { kind: 'error', code: 'invalid_json' };
  const type = route === '/v1/check' ? 'rate_limit_check' : 'rate_limit_consume';
  const v = parsed.value;
  // A body may leave `type` out, but may not name the other route's.
  if (typeof v === 'object' && v !== null && !Array.isArray(v) && Object.hasOwn(v, 'type') && (v as { type: unknown }).type !== type) {
    return { kind: 'error', code: 'invalid_message' };
  }
  return expectForValue(v, type);
}

/** JSON's idea of the id: -0 travels as 0, 1e29 as 1e+29. */
const wireId = (id: unknown) => (id === undefined ? undefined : (JSON.parse(JSON.stringify(id)) as unknown));

function checkReply(reply: Reply, expected: Expected, input: string): void {
  const context = `input ${JSON.stringify(input.slice(0, 300))} → ${JSON.stringify(reply)}`;
  if (expected.kind === 'too_large') throw new Error(`unexpected reply for an oversized input: ${context}`);
  if (expected.kind === 'error') {
    expect(reply.type, context).toBe('error');
    expect(ERROR_CODES, context).toContain(reply.code);
    expect(reply.code, context).toBe(expected.code);
    expect(typeof reply.message, context).toBe('string');
  } else {
    expect(['rate_limit_status', 'rate_limit_exceeded'], context).toContain(reply.type);
    expect(reply.phoneNumber, context).toBe(expected.e164);
    expect(reply.source, context).toBe('database');
  }
  if (expected.id === undefined) expect('id' in reply, context).toBe(false);
  else expect(reply.id, context).toStrictEqual(wireId(expected.id));
}

// ---- generators ------------------------------------------------------------------------

const quoted = (a: fc.Arbitrary<string>) => a.map((s) => JSON.stringify(s));
const anyString = fc.oneof(fc.string(), fc.string({ unit: 'binary' }), fc.string({ unit: 'grapheme' }));
/** Raw JSON text for a value, including numbers JSON.parse turns into Infinity, -0 or rounds. */
const rawValue = fc.oneof(
  fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v)),
  fc.constantFrom(
    '1e400',
    '-1e400',
    '-0',
    '1e-400',
    '123456789012345678901234567890',
    '9007199254740993',
    'null',
    'true',
    '""',
    '[]',
    '{}',
    '{"__proto__":{"type":"rate_limit_check"}}',
  ),
  quoted(anyString),
);
const phoneText = fc.oneof(
  {
    weight: 4,
    arbitrary: quoted(
      fc.constantFrom('+14155552671', '+1 (415) 555-2671', '+442079460958', '+4915123456789', '+33 6 12 34 56 78', '+1\u00a0415 555 2671', '+1-415-555-2671'),
    ),
  },
  {
    weight: 3,
    arbitrary: quoted(
      fc.constantFrom(
        '+1555',
        '+999123456',
        '',
        ' ',
        '+',
        '14155552671',
        '+1415555267\uff11',
        '+1-415-555-2671 ext 3',
        'x'.repeat(65),
        `+${'1'.repeat(64)}`,
        '+1 415 CALL NOW',
        '\u202e+14155552671',
      ),
    ),
  },
  { weight: 1, arbitrary: quoted(fc.stringMatching(/^\+[0-9 ()-]{0,20}$/)) },
  { weight: 2, arbitrary: rawValue },
);
const typeText = fc.oneof(
  { weight: 6, arbitrary: quoted(fc.constantFrom(...TYPES)) },
  {
    weight: 2,
    arbitrary: quoted(fc.constantFrom('RATE_LIMIT_CHECK', 'rate_limit_status', 'error', '__proto__', 'constructor', 'toString', 'hasOwnProperty', '')),
  },
  { weight: 1, arbitrary: rawValue },
);
const idText = fc.oneof(
  quoted(fc.string({ maxLength: 140 })),
  quoted(fc.constant('x'.repeat(129))),
  fc.integer().map(String),
  fc.double().map((d) => JSON.stringify(d)),
  rawValue,
);
const ipText = fc.oneof(
  quoted(fc.constantFrom('203.0.113.9', '::1', '2001:db8::1', '::ffff:1.2.3.4', '256.1.1.1', '1.2.3', '', 'localhost', '1.2.3.4 ', '1.2.3.4%eth0')),
  quoted(fc.ipV4()),
  quoted(fc.ipV6()),
  rawValue,
);
const keyName = fc.oneof(
  fc.constantFrom('__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty', 'valueOf', '__defineGetter__', 'Type', 'phonenumber', 'id', 'type'),
  fc.string({ maxLength: 10 }),
);
/** Objects close to valid messages, written as raw text so duplicate and `__proto__` keys survive. */
const objectText = fc
  .record({
    type: fc.option(typeText, { nil: undefined, freq: 8 }),
    id: fc.option(idText, { nil: undefined }),
    phoneNumber: fc.option(phoneText, { nil: undefined, freq: 8 }),
    ip: fc.option(ipText, { nil: undefined }),
    extra: fc.oneof(
      { weight: 4, arbitrary: fc.constant([] as Array<[string, string]>) },
      { weight: 1, arbitrary: fc.array(fc.tuple(keyName, rawValue), { minLength: 1, maxLength: 3 }) },
    ),
    reversed: fc.boolean(),
  })
  .map(({ extra, reversed, ...fields }) => {
    const entries = Object.entries(fields)
      .filter((e): e is [string, string] => e[1] !== undefined)
      .concat(extra)
      .map(([k, v]) => `${JSON.stringify(k)}:${v}`);
    return `{${(reversed ? entries.reverse() : entries).join(',')}}`;
  });
const deeplyNested = fc.integer({ min: 1, max: 1500 }).map((d) => `${'['.repeat(d)}${']'.repeat(d)}`);
const oversized = fc
  .integer({ min: MAX_FRAME + 1, max: 3 * MAX_FRAME })
  .map((n) => `{"type":"rate_limit_check","phoneNumber":"+14155552671","pad":"${'p'.repeat(n)}"}`);

const frameArb = fc.oneof(
  { weight: 6, arbitrary: objectText },
  { weight: 2, arbitrary: anyString },
  { weight: 2, arbitrary: fc.jsonValue().map((v) => JSON.stringify(v)) },
  { weight: 1, arbitrary: deeplyNested },
  { weight: 1, arbitrary: fc.constantFrom('', ' ', 'null', '"rate_limit_check"', '\ufeff{"type":"rate_limit_check","phoneNumber":"+14155552671"}') },
  { weight: 1, arbitrary: oversized },
);

// ---- WebSocket ---------------------------------------------------------------------------

/** One sample: the frame's reply must be followed directly by the sentinel's, proving it was exactly one. */
async function exchange(state: { c: WsClient; n: number; seen?: Set<string> }, text: string): Promise<void> {
  const wire = Buffer.from(text, 'utf8');
  const expected = expectForFrame(wire);
  state.seen?.add(expected.kind === 'error' ? expected.code : expected.kind);
  state.c.send(wire.toString('utf8'));
  if (expected.kind === 'too_large') {
    expect((await state.c.closed).code).toBe(1009);
    state.c = await connect();
    return;
  }
  const sentinel = `sentinel-${++state.n}`;
  state.c.sendJson({ type: 'rate_limit_check', id: sentinel, phoneNumber: '+14155552671' });
  checkReply(await state.c.next(), expected, text);
  expect(await state.c.next()).toMatchObject({ type: 'rate_limit_status', id: sentinel });
  expect(state.c.backlog).toBe(0);
  expect(state.c.isOpen).toBe(true);
}

const HAND_PICKED: Array<[string, string]> = [
  ['not JSON', 'invalid_json'],
  ['{"type":"rate_limit_check","phoneNumber":"+14155552671"', 'invalid_json'],
  ['[]', 'invalid_message'],
  ['42', 'invalid_message'],
  ['null', 'invalid_message'],
  ['{}', 'invalid_message'],
  ['{"type":42,"phoneNumber":"+14155552671"}', 'invalid_message'],
  ['{"type":"rate_limit_delete","id":"u","phoneNumber":"+14155552671"}', 'unknown_type'],
  ['{"type":"constructor","phoneNumber":"+14155552671"}', 'unknown_type'],
  ['{"type":"rate_limit_check","phoneNumber":12345}', 'invalid_message'],
  ['{"type":"rate_limit_check","id":{"a":1},"phoneNumber":"+14155552671"}', 'invalid_message'],
  ['{"type":"rate_limit_check","id":1e400,"phoneNumber":"+14155552671"}', 'invalid_message'],
  ['{"type":"rate_limit_consume","phoneNumber":"+14155552671","ip":"999.1.1.1"}', 'invalid_message'],
  ['{"__proto__":{"type":"rate_limit_check"},"phoneNumber":"+14155552671"}', 'invalid_message'],
  ['{"type":"rate_limit_check","id":"p","phoneNumber":"+1 555"}', 'invalid_phone_number'],
  ['{"type":"rate_limit_consume","phoneNumber":"\\u0000"}', 'invalid_phone_number'],
];

describe('WebSocket frames', () => {
  it('answers hand-picked bad frames with the code for their class', async () => {
    const state = { c: await connect(), n: 0 };
    for (const [frame, code] of HAND_PICKED) {
      expect(expectForFrame(Buffer.from(frame))).toMatchObject({ kind: 'error', code }); // the oracle agrees with the table
      await exchange(state, frame);
    }
  });

  it('ignores unknown fields, prototype-polluting ones included, and answers the request', async () => {
    const c = await connect();
    for (const frame of [
      '{"type":"rate_limit_check","id":"x1","phoneNumber":"+14155552671","__proto__":{"type":"x","allowed":true}}',
      '{"type":"rate_limit_check","id":"x2","phoneNumber":"+14155552671","constructor":{"prototype":{"allowed":true}}}',
    ]) {
      c.send(frame);
      const reply = await c.next();
      expect(reply).toMatchObject({ type: 'rate_limit_status', phoneNumber: '+14155552671' });
      expect(Object.keys(reply).sort()).toEqual([
        'allowed',
        'id',
        'limit',
        'phoneNumber',
        'region',
        'remaining',
        'resetTime',
        'retryAfterMs',
        'source',
        'type',
        'used',
      ]);
    }
    expect(({} as Record<string, unknown>).allowed).toBeUndefined();
  });

  it('answers every generated frame exactly once, with the right class, and keeps the socket open', async () => {
    const state = { c: await connect(), n: 0, seen: new Set<string>() };
    await fc.assert(
      fc.asyncProperty(frameArb, (frame) => exchange(state, frame)),
      { numRuns: 1000 },
    );
    // The generators reach every class, so a pass means something.
    expect([...state.seen].sort()).toStrictEqual(['decision', 'invalid_json', 'invalid_message', 'invalid_phone_number', 'too_large', 'unknown_type']);
  });

  it('closes with 1007 on a text frame that is not UTF-8 (RFC 6455), affecting no other socket', async () => {
    const bystander = await connect();
    const c = await connect();
    c.send(Buffer.from([0x7b, 0xff, 0xfe, 0x7d]), { binary: false });
    expect((await c.closed).code).toBe(1007);
    expect(await bystander.call({ type: 'rate_limit_check', phoneNumber: '+14155552671' })).toMatchObject({ type: 'rate_limit_status' });
  });

  it('survives many bad frames pipelined on one socket, answering in order', async () => {
    const c = await connect();
    const frames = fc.sample(
      frameArb.filter((f) => Buffer.byteLength(f) <= MAX_FRAME),
      { numRuns: 300, seed: 4242 },
    );
    for (const f of frames) c.send(f);
    for (const f of frames) checkReply(await c.next(), expectForFrame(Buffer.from(f)), f);
    expect(c.isOpen).toBe(true);
  });
});

// ---- HTTP --------------------------------------------------------------------------------

async function post(route: string, text: string): Promise<void> {
  const wire = Buffer.from(text, 'utf8');
  const expected = expectForBody(wire, route);
  const r = await postJson(daemon.url, route, wire.toString('utf8'));
  const context = `${route} ${JSON.stringify(text.slice(0, 300))} → ${r.status} ${r.text.slice(0, 300)}`;
  expect(r.headers['content-type'], context).toMatch(/^application\/json/);
  if (expected.kind === 'too_large') {
    expect(r.status, context).toBe(413);
    return;
  }
  const reply = r.json as Reply;
  checkReply(reply, expected, text);
  if (expected.kind === 'error') expect(r.status, context).toBe(400);
  else if (route === '/v1/check') expect(r.status, context).toBe(200);
  else expect(r.status, context).toBe(reply.type === 'rate_limit_status' ? 200 : 429);
}

describe('HTTP bodies', () => {
  it('answers every generated body with 400 and the right code, or a decision', async () => {
    // The route's own `type` in the body is allowed; the other route's is not.
    const bodyArb = fc.oneof({ weight: 6, arbitrary: frameArb }, { weight: 1, arbitrary: fc.constant('') });
    await fc.assert(
      fc.asyncProperty(fc.constantFrom('/v1/check', '/v1/consume'), bodyArb, (route, body) => post(route, body)),
      { numRuns: 500 },
    );
  });
});

// ---- afterwards ----------------------------------------------------------------------------

describe('after the barrage', () => {
  it('has no polluted prototypes: a message without a type is still refused', async () => {
    const c = await connect();
    expect(await c.call({ phoneNumber: '+14155552671', id: 'probe-1' })).toMatchObject({ type: 'error', code: 'invalid_message' });
    expect(await c.call({ type: 'rate_limit_check', phoneNumber: '+14155552671', id: 'probe-2' })).toMatchObject({
      type: 'rate_limit_status',
      allowed: expect.any(Boolean),
    });
  });

  it('is still up and healthy, and logged no crash or unhandled error', async () => {
    expect(daemon.running()).toBe(true);
    const h = await health(daemon.url);
    expect(h.status).toBe(200);
    expect(h.body).toMatchObject({ status: 'ok', database: 'up' });
    expect(crashSigns(daemon)).toStrictEqual([]);
    expect(daemon.logs.filter((l) => (l.level ?? 0) >= 50)).toStrictEqual([]);
  });
});
