// Twilio's request signature, held to the example Twilio publishes ("Validating Requests",
// twilio.com/docs/usage/security, and TwilioDevEd/api-snippets security/signature_validation:
// auth token 12345, this URL and these parameters sign to RSOYDt4T1cUTdK1PDd93/VVr8B8=), and
// the mapping of status callbacks to outcomes (docs/protocol.md *Outcomes*).
import { describe, expect, it } from 'vitest';
import { twilioSignature, twilioStatus, validTwilioSignature } from '../../src/core/twilio.js';

const TOKEN = '12345';
const URL_ = 'https://mycompany.com/myapp.php?foo=1&bar=2';
const PARAMS: Array<[string, string]> = [
  ['CallSid', 'CA1234567890ABCDE'],
  ['Caller', '+14158675309'],
  ['Digits', '1234'],
  ['From', '+14158675309'],
  ['To', '+18005551212'],
];
const PUBLISHED = 'RSOYDt4T1cUTdK1PDd93/VVr8B8=';

describe("Twilio's signature", () => {
  it("matches Twilio's published example, whatever the parameters' order", () => {
    expect(twilioSignature(TOKEN, URL_, PARAMS)).toBe(PUBLISHED);
    expect(twilioSignature(TOKEN, URL_, [...PARAMS].reverse())).toBe(PUBLISHED);
    expect(validTwilioSignature(TOKEN, PUBLISHED, URL_, PARAMS)).toBe(true);
  });

  it('accepts the URL signed with or without its default port, as twilio-node does', () => {
    const withPort = 'https://mycompany.com:443/myapp.php?foo=1&bar=2';
    expect(validTwilioSignature(TOKEN, PUBLISHED, withPort, PARAMS)).toBe(true);
    expect(validTwilioSignature(TOKEN, twilioSignature(TOKEN, withPort, PARAMS), URL_, PARAMS)).toBe(true);
    expect(validTwilioSignature(TOKEN, PUBLISHED, 'https://mycompany.com:8443/myapp.php?foo=1&bar=2', PARAMS)).toBe(false);
  });

  it('refuses another token, URL, parameter or value, a missing or junk signature', () => {
    expect(validTwilioSignature('54321', PUBLISHED, URL_, PARAMS)).toBe(false);
    expect(validTwilioSignature(TOKEN, PUBLISHED, 'https://mycompany.com/myapp.php?foo=1&bar=3', PARAMS)).toBe(false);
    expect(validTwilioSignature(TOKEN, PUBLISHED, URL_, [...PARAMS, ['CallStatus', 'completed']])).toBe(false);
    expect(
      validTwilioSignature(
        TOKEN,
        PUBLISHED,
        URL_,
        PARAMS.map(([k, v]) => [k, k === 'Digits' ? '1235' : v] as [string, string]),
      ),
    ).toBe(false);
    for (const bad of [undefined, '', 'RSOYDt4T1cUTdK1PDd93/VVr8B8', PUBLISHED.toLowerCase(), 'x'.repeat(10_000)]) {
      expect(validTwilioSignature(TOKEN, bad, URL_, PARAMS)).toBe(false);
    }
    expect(validTwilioSignature('', twilioSignature('', URL_, PARAMS), URL_, PARAMS)).toBe(false);
  });
});

describe('status callbacks as outcomes', () => {
  const of = (o: Record<string, string>) => twilioStatus(new Map(Object.entries(o)));
  it.each([
    [
      { CallStatus: 'completed', CallDuration: '42' },
      { kind: 'outcome', outcome: 'answered', durationMs: 42_000 },
    ],
    [
      { CallStatus: 'completed', CallDuration: '0' },
      { kind: 'outcome', outcome: 'answered', durationMs: 0 },
    ],
    [
      { CallStatus: 'completed', CallDuration: '30', AnsweredBy: 'machine_end_beep' },
      { kind: 'outcome', outcome: 'unanswered' },
    ],
    [
      { CallStatus: 'completed', CallDuration: '30', AnsweredBy: 'human' },
      { kind: 'outcome', outcome: 'answered', durationMs: 30_000 },
    ],
    [{ CallStatus: 'no-answer' }, { kind: 'outcome', outcome: 'unanswered' }],
    [{ CallStatus: 'busy' }, { kind: 'outcome', outcome: 'unanswered' }],
    [{ CallStatus: 'canceled' }, { kind: 'outcome', outcome: 'unanswered' }],
    [{ CallStatus: 'failed' }, { kind: 'outcome', outcome: 'failed' }],
    [{ CallStatus: 'queued' }, { kind: 'ignored' }],
    [{ CallStatus: 'ringing' }, { kind: 'ignored' }],
    [{ CallStatus: 'in-progress' }, { kind: 'ignored' }],
    [
      { MessageStatus: 'undelivered', ErrorCode: '30003' },
      { kind: 'outcome', outcome: 'failed' },
    ],
    [
      { MessageStatus: 'failed', ErrorCode: '30008' },
      { kind: 'outcome', outcome: 'failed' },
    ],
    [{ MessageStatus: 'delivered' }, { kind: 'ignored' }],
    [{ MessageStatus: 'sent' }, { kind: 'ignored' }],
    [{ MessageStatus: 'queued' }, { kind: 'ignored' }],
    [{ SmsStatus: 'undelivered' }, { kind: 'outcome', outcome: 'failed' }],
    [{ CallStatus: 'completed' }, { kind: 'invalid' }],
    [{ CallStatus: 'completed', CallDuration: '-1' }, { kind: 'invalid' }],
    [{ CallStatus: 'completed', CallDuration: '4.5' }, { kind: 'invalid' }],
    [{ CallStatus: 'completed', CallDuration: '9999999' }, { kind: 'invalid' }],
    [{ CallStatus: 'exploded' }, { kind: 'invalid' }],
    [{ MessageStatus: 'teleported' }, { kind: 'invalid' }],
    [{ Body: 'hello' }, { kind: 'invalid' }],
  ])('%j -> %j', (params, expected) => {
    expect(of(params)).toMatchObject(expected);
  });
});
