// The outcome settings in resolveConfig (src/core/config.ts): TWILIO_AUTH_TOKEN and
// RATELIMIT_PUBLIC_URL, checked once at start with the other settings.
import { describe, expect, it } from 'vitest';
import { resolveConfig } from '../../src/core/config.js';

describe('outcome settings', () => {
  it('leave the Twilio route off and the signed URL local by default', () => {
    const c = resolveConfig({}, {});
    expect(c.twilioAuthToken).toBeUndefined();
    expect(c.publicUrl).toBeUndefined();
  });

  it('take the Twilio token and a public URL (a trailing slash dropped)', () => {
    const c = resolveConfig({}, { TWILIO_AUTH_TOKEN: ' abc123 ', RATELIMIT_PUBLIC_URL: 'https://rl.example.com:8443/' });
    expect(c.twilioAuthToken).toBe('abc123');
    expect(c.publicUrl).toBe('https://rl.example.com:8443');
  });

  it('refuse a public URL with a path, a query or another scheme, naming the variable', () => {
    for (const bad of ['https://rl.example.com/v1', 'rl.example.com', 'ftp://rl.example.com', 'https://rl.example.com?x=1']) {
      expect(() => resolveConfig({}, { RATELIMIT_PUBLIC_URL: bad }), bad).toThrow(/RATELIMIT_PUBLIC_URL must look like https:\/\/ratelimit\.example\.com/);
    }
  });
});
