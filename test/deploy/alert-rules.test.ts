// The traffic alerts (issue 20) against recorded series: `promtool test rules` must see them fire
// on a pumping run (all calls allowed, so no denial alert) and stay quiet on normal traffic; and the
// guard's (issue 19): automatic blocks escalating or spreading, conversion rules idle.
// promtool comes with Debian's prometheus package, which .ci/run installs.
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';

const ROOT = join(import.meta.dirname, '..', '..');
const probe = spawnSync('promtool', ['--version']);
const hasPromtool = !probe.error && probe.status === 0;
if (!hasPromtool) console.warn('promtool is not installed (apt-get install prometheus): skipping the alert rules test');

describe('traffic alert rules', () => {
  it.skipIf(!hasPromtool)('fire on the recorded pumping run and stay quiet on normal traffic (promtool test rules)', () => {
    const r = spawnSync('promtool', ['test', 'rules', join(ROOT, 'ops/prometheus/tests/traffic.test.yml')], { encoding: 'utf8' });
    expect(r.status, `${r.stdout}\n${r.stderr}`).toBe(0);
    expect(r.stdout).toContain('SUCCESS');
  });

  it.skipIf(!hasPromtool)('fire on escalating and spreading automatic blocks and idle conversion rules, counting each range once (promtool test rules)', () => {
    const r = spawnSync('promtool', ['test', 'rules', join(ROOT, 'ops/prometheus/tests/guard.test.yml')], { encoding: 'utf8' });
    expect(r.status, `${r.stdout}\n${r.stderr}`).toBe(0);
    expect(r.stdout).toContain('SUCCESS');
  });
});
