// The data dir holds the generated key and the spool: whoever creates it makes it 0700 (0701
// only for root running the embedded server as another OS user, which must pass through it).
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { resolveConfig } from '../../src/core/config.js';
import { embeddedDataDirMode, loadPhoneKey } from '../../src/db/key-file.js';
import { Spool } from '../../src/daemon/engine/spool.js';

const KEY = 'data-dir-mode-key-0123456789abcdefghij';
const root = process.getuid?.() === 0;
const dirs: string[] = [];
afterAll(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});
async function scratch(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'ratelimit-datadir-'));
  dirs.push(d);
  return d;
}
const mode = async (p: string) => (await stat(p)).mode & 0o777;

describe('data dir mode', () => {
  it('embeddedDataDirMode: 0700, search-only for others under root', () => {
    expect(embeddedDataDirMode(false)).toBe(0o700);
    expect(embeddedDataDirMode(true)).toBe(0o701);
  });

  it('the embedded key file creates the data dir (and its missing parents) without read for group or others', async () => {
    const dataDir = join(await scratch(), 'nested', 'data');
    await loadPhoneKey(resolveConfig({ dataDir }, {}), () => undefined);
    expect(await mode(dataDir)).toBe(embeddedDataDirMode(root));
    expect(await mode(join(dataDir, '..'))).toBe(embeddedDataDirMode(root));
  });

  it('the spool creates the data dir 0700 when a DATABASE_URL is used', async () => {
    const dataDir = join(await scratch(), 'data');
    const spool = await Spool.open({
      dataDir,
      scope: { databaseUrl: 'postgres://db.internal/x', phoneKey: KEY },
      instanceId: 'data-dir-mode',
      maxBytes: 1 << 20,
      logger: pino({ level: 'silent' }),
    });
    try {
      expect(await mode(dataDir)).toBe(0o700);
      expect(await mode(join(dataDir, 'spool'))).toBe(0o700);
      expect(await mode(spool.file)).toBe(0o600);
    } finally {
      await spool.close();
    }
  });
});
