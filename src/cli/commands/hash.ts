import { hashPhone, normalizePhone } from '../../core/phone.js';

export interface HashResult {
  e164: string;
  region: string | null;
  hash: string;
}

export function hashCommand(phone: string, key: string): HashResult {
  const { e164, region } = normalizePhone(phone);
  return { e164, region: region ?? null, hash: hashPhone(e164, key) };
}

export function printHash(r: HashResult): string {
  return `${r.e164}\t${r.hash}`;
}
