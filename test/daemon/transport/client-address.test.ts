// Fly-Client-IP (issue 17): believed only with RATELIMIT_TRUST_PROXY=fly, on a Fly machine
// (FLY_APP_NAME), from a peer that can be Fly's proxy (a private address, never a public one).
import type { IncomingMessage } from 'node:http';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { ClientAddresses, mayBeFlyProxy } from '../../../src/daemon/transport/client-address.js';
import { ClientLog } from '../../../src/daemon/transport/client-log.js';

const logger = pino({ level: 'silent' });
const req = (peer: string, header?: string) =>
  ({ headers: header === undefined ? {} : { 'fly-client-ip': header }, socket: { remoteAddress: peer } }) as unknown as IncomingMessage;

describe('mayBeFlyProxy', () => {
  it('private, unique-local (6PN is fdaa::/16) and loopback peers may be; public ones never', () => {
    for (const a of ['172.16.5.1', '10.0.0.1', '192.168.1.1', 'fdaa:0:1::2', '::ffff:172.19.0.1', '127.0.0.1', '::1', '100.64.0.1'])
      expect({ a, ok: mayBeFlyProxy(a) }).toEqual({ a, ok: true });
    for (const a of ['203.0.113.9', '2001:db8::1', '8.8.8.8', '::ffff:8.8.8.8', 'junk', '']) expect({ a, ok: mayBeFlyProxy(a) }).toEqual({ a, ok: false });
    expect(mayBeFlyProxy(undefined)).toBe(false);
  });
});

describe('ClientAddresses', () => {
  it('takes Fly-Client-IP on Fly from a private peer', () => {
    const a = new ClientAddresses('fly', new ClientLog(logger), 'my-app', logger);
    expect(a.socketIsClient).toBe(false);
    expect(a.of(req('172.16.0.2', '198.51.100.4'))).toBe('198.51.100.4');
    expect(a.of(req('172.16.0.2', '2001:db8:1:2::9'))).toBe('2001:db8:1:2::/64');
  });

  it('ignores it from a public peer, off Fly, or without RATELIMIT_TRUST_PROXY=fly', () => {
    const onFly = new ClientAddresses('fly', new ClientLog(logger), 'my-app', logger);
    expect(onFly.of(req('203.0.113.9', '198.51.100.4'))).toBe('203.0.113.9');
    const offFly = new ClientAddresses('fly', new ClientLog(logger), undefined, logger);
    expect(offFly.socketIsClient).toBe(true);
    expect(offFly.of(req('172.16.0.2', '198.51.100.4'))).toBe('172.16.0.2');
    const none = new ClientAddresses('none', new ClientLog(logger), 'my-app', logger);
    expect(none.of(req('172.16.0.2', '198.51.100.4'))).toBe('172.16.0.2');
  });

  it('a header that is not an address counts as the socket address', () => {
    const a = new ClientAddresses('fly', new ClientLog(logger), 'my-app', logger);
    expect(a.of(req('172.16.0.2', 'junk'))).toBe('172.16.0.2');
    expect(a.of(req('172.16.0.2', '1.2.3.4, 5.6.7.8'))).toBe('172.16.0.2');
  });
});
