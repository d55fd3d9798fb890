// Longer than 350 lines because every file in ops/ gets its checks here, one describe each.
// The operators' kit (ops/) and the documentation's links: static checks that keep them
// loadable and in line with the metrics the daemon exposes. No Grafana, Prometheus or Docker
// daemon needed; `promtool check rules` runs too when promtool is installed.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { DEFAULT_PORT } from '../../src/core/defaults.js';
import { ROUTES } from '../../src/protocol/wire.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const read = (path: string) => readFileSync(join(ROOT, path), 'utf8');

/**
 * Every metric the dashboard and the alerts may name: what src/daemon/metrics.ts registers,
 * what docs/protocol.md's Policy work adds, prom-client's default process metrics we chart, and
 * Prometheus's own `up`. A name outside this list is a panel that would stay empty.
 */
const KNOWN_METRICS = [
  'ratelimit_decisions_total',
  'ratelimit_country_consumes_total',
  'ratelimit_spend_total',
  'ratelimit_shadow_denials_total',
  'ratelimit_policy_version',
  'ratelimit_connections',
  'ratelimit_connections_max',
  'ratelimit_websocket_connections',
  'ratelimit_fallback_active',
  'ratelimit_fallback_transitions_total',
  'ratelimit_pending_writes',
  'ratelimit_request_errors_total',
  'ratelimit_db_query_duration_seconds_bucket',
  'ratelimit_db_query_duration_seconds_sum',
  'ratelimit_db_query_duration_seconds_count',
  'ratelimit_db_batch_size_bucket',
  'ratelimit_db_batch_size_sum',
  'ratelimit_db_batch_size_count',
  'process_resident_memory_bytes',
  'process_cpu_seconds_total',
  'nodejs_eventloop_lag_p99_seconds',
  // Issue 19's guard (src/daemon/metrics.ts).
  'ratelimit_outcomes_total',
  'ratelimit_auto_blocks',
  'ratelimit_rule_usage_ratio',
  'ratelimit_rule_keys_at_limit',
  'ratelimit_conversion_idle',
  'up',
];

const PROMQL_KEYWORDS = new Set(['and', 'or', 'unless', 'bool', 'offset', 'inf', 'nan']);

/**
 * The metric names a PromQL expression selects: label matchers, ranges, grouping clauses,
 * strings and numbers removed, then every identifier that is not a function call or keyword.
 */
function metricNames(expr: string): string[] {
  const stripped = expr
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ')
    .replace(/\boffset\s+-?\w+/g, ' ')
    .replace(/"(?:[^"\\]|\\.)*"/g, ' ')
    .replace(/\b\d+(\.\d+)?(e[+-]?\d+)?\b/gi, ' ');
  const names: string[] = [];
  for (const match of stripped.matchAll(/[A-Za-z_:][A-Za-z0-9_:]*/g)) {
    const after = stripped.slice(match.index + match[0].length);
    if (/^\s*\(/.test(after)) continue; // a function: rate(, sum(, histogram_quantile(
    if (PROMQL_KEYWORDS.has(match[0].toLowerCase())) continue;
    names.push(match[0]);
  }
  return names;
}

describe('metricNames (the checker the other tests rely on)', () => {
  it('finds the selected metrics and nothing else', () => {
    expect(
      metricNames(
        'histogram_quantile(0.99, sum by (le, op) (rate(ratelimit_db_query_duration_seconds_bucket{instance=~"$instance"}[$__rate_interval]))) > 0.25',
      ),
    ).toEqual(['ratelimit_db_query_duration_seconds_bucket']);
    expect(metricNames('a_total > 3 * sum by (reason) (rate(b_total{result="denied"}[1d] offset 5m)) and bool c')).toEqual(['a_total', 'b_total', 'c']);
  });
});

interface Target {
  expr?: string;
}
interface Panel {
  id: number;
  type: string;
  title: string;
  gridPos: { x: number; y: number; w: number; h: number };
  datasource?: { type: string; uid: string };
  targets?: Target[];
}

describe('ops/grafana/ratelimit.json', () => {
  const dashboard = JSON.parse(read('ops/grafana/ratelimit.json')) as {
    uid: string;
    title: string;
    panels: Panel[];
    templating: { list: { name: string; type: string; query: unknown }[] };
  };
  const panels = dashboard.panels.filter((panel) => panel.type !== 'row');

  it('is a dashboard with panels, unique ids and a Prometheus data source to choose', () => {
    expect(dashboard.uid).toBe('ratelimit');
    expect(panels.length).toBeGreaterThanOrEqual(10);
    const ids = dashboard.panels.map((panel) => panel.id);
    expect(new Set(ids).size).toBe(ids.length);
    const source = dashboard.templating.list.find((variable) => variable.type === 'datasource');
    expect(source).toMatchObject({ name: 'datasource', query: 'prometheus' });
    for (const panel of panels) {
      expect(panel.datasource, panel.title).toEqual({ type: 'prometheus', uid: '${datasource}' });
      expect(panel.gridPos.x + panel.gridPos.w, panel.title).toBeLessThanOrEqual(24);
    }
  });

  it("queries only metrics the daemon exposes (or Prometheus's up)", () => {
    const expressions = panels.flatMap((panel) => (panel.targets ?? []).map((target) => ({ panel: panel.title, expr: target.expr ?? '' })));
    for (const variable of dashboard.templating.list) {
      const query = variable.query as { query?: string } | string;
      if (variable.type === 'query') expressions.push({ panel: `$${variable.name}`, expr: typeof query === 'string' ? query : (query.query ?? '') });
    }
    for (const panel of panels) expect(panel.targets?.length, `${panel.title} has a query`).toBeGreaterThan(0);
    for (const { panel, expr } of expressions) {
      const names = metricNames(expr.replace(/^label_values\((.*),\s*\w+\)$/, '$1'));
      expect(names.length, `${panel}: ${expr}`).toBeGreaterThan(0);
      for (const name of names) expect(KNOWN_METRICS, `${panel}: ${expr}`).toContain(name);
    }
  });

  it('charts the series an operator needs at 3 a.m.', () => {
    const all = panels
      .flatMap((panel) => panel.targets ?? [])
      .map((target) => target.expr ?? '')
      .join('\n');
    for (const name of [
      'ratelimit_fallback_active',
      'ratelimit_pending_writes',
      'ratelimit_shadow_denials_total',
      'ratelimit_policy_version',
      'ratelimit_connections_max',
      'ratelimit_db_query_duration_seconds_bucket',
    ]) {
      expect(all).toContain(name);
    }
    expect(all).toMatch(/sum by \(reason\) \(rate\(ratelimit_decisions_total\{result="denied"/);
    expect(all).toMatch(/sum by \(rule\) \(rate\(ratelimit_decisions_total\{result="denied"/);
  });
});

interface Rule {
  alert?: string;
  record?: string;
  expr?: unknown;
  for?: unknown;
  labels?: Record<string, unknown>;
  annotations?: Record<string, unknown>;
}

describe('ops/prometheus/alerts.yml', () => {
  const file = parseYaml(read('ops/prometheus/alerts.yml')) as { groups?: { name?: unknown; rules?: Rule[] }[] };
  const rules = (file.groups ?? []).flatMap((group) => group.rules ?? []);

  it('is groups[].rules[] of alerts with expr, for, severity, summary and description', () => {
    expect(Array.isArray(file.groups) && file.groups.length).toBeGreaterThan(0);
    for (const group of file.groups!) {
      expect(typeof group.name).toBe('string');
      expect(Array.isArray(group.rules)).toBe(true);
    }
    const names = rules.map((rule) => rule.alert);
    expect(new Set(names).size).toBe(names.length);
    for (const rule of rules) {
      expect(rule.alert, JSON.stringify(rule)).toMatch(/^Ratelimit[A-Za-z]+$/);
      expect(typeof rule.expr, rule.alert).toBe('string');
      expect(String(rule.for), rule.alert).toMatch(/^\d+[smh]$/);
      expect(['critical', 'warning', 'info'], rule.alert).toContain(rule.labels?.severity);
      expect(typeof rule.annotations?.summary, rule.alert).toBe('string');
      expect(typeof rule.annotations?.description, rule.alert).toBe('string');
    }
  });

  it('alerts on what the issue asks, with metrics the daemon exposes', () => {
    const used = new Set<string>();
    for (const rule of rules) {
      const names = metricNames(String(rule.expr));
      expect(names.length, rule.alert).toBeGreaterThan(0);
      for (const name of names) {
        expect(KNOWN_METRICS, `${rule.alert}: ${String(rule.expr)}`).toContain(name);
        used.add(name);
      }
    }
    // fallback active, denial spikes, DB latency, connection cap, pending writes, instance down
    for (const name of [
      'ratelimit_fallback_active',
      'ratelimit_decisions_total',
      'ratelimit_db_query_duration_seconds_bucket',
      'ratelimit_connections_max',
      'ratelimit_pending_writes',
      'up',
    ]) {
      expect([...used]).toContain(name);
    }
    const spike = rules.find((rule) => String(rule.expr).includes('ratelimit_decisions_total'));
    expect(String(spike?.expr)).toMatch(/by \(reason\)/);
  });

  const promtool = spawnSync('promtool', ['--version']);
  const hasPromtool = !promtool.error && promtool.status === 0;
  it.skipIf(!hasPromtool)('passes promtool check rules (skipped when promtool is not installed)', () => {
    const result = spawnSync('promtool', ['check', 'rules', join(ROOT, 'ops/prometheus/alerts.yml')], { encoding: 'utf8' });
    expect(result.status, result.stdout + result.stderr).toBe(0);
  });
});

describe('ops/compose/compose.yaml', () => {
  const compose = parseYaml(read('ops/compose/compose.yaml')) as {
    services: Record<
      string,
      {
        image?: string;
        build?: { context: string; dockerfile: string };
        depends_on?: Record<string, { condition: string }>;
        environment?: Record<string, string>;
        ports?: string[];
        healthcheck?: { test: string[] };
        stop_grace_period?: string;
        read_only?: boolean;
        volumes?: string[];
      }
    >;
    volumes?: Record<string, unknown>;
  };
  const { postgres, ratelimit } = compose.services;

  it('runs PostgreSQL 16 with a volume and a health check', () => {
    expect(postgres?.image).toBe('postgres:16');
    expect(postgres?.healthcheck?.test.join(' ')).toContain('pg_isready');
    expect(Object.keys(compose.volumes ?? {})).toContain('pgdata');
  });

  it("builds the daemon from the repository's Dockerfile and waits for a healthy database", () => {
    const context = resolve(ROOT, 'ops/compose', ratelimit!.build!.context);
    expect(relative(ROOT, context)).toBe('');
    expect(existsSync(join(context, ratelimit!.build!.dockerfile))).toBe(true);
    expect(ratelimit?.depends_on?.postgres?.condition).toBe('service_healthy');
  });

  it('points the daemon at that database, requires the key, and checks /health on the default port', () => {
    const env = ratelimit!.environment!;
    expect(new URL(env.DATABASE_URL!).host).toBe('postgres:5432');
    expect(env.PHONE_ENCRYPTION_KEY).toMatch(/^\$\{PHONE_ENCRYPTION_KEY:\?/);
    // The service port and the private metrics port (RATELIMIT_METRICS_PORT), both on loopback.
    expect(ratelimit?.ports).toEqual([`127.0.0.1:${DEFAULT_PORT}:${DEFAULT_PORT}`, `127.0.0.1:${env.RATELIMIT_METRICS_PORT}:${env.RATELIMIT_METRICS_PORT}`]);
    expect(env.RATELIMIT_API_TOKENS).toMatch(/^\$\{RATELIMIT_API_TOKENS:\?/);
    expect(ratelimit?.healthcheck?.test.join(' ')).toContain(`http://127.0.0.1:${DEFAULT_PORT}${ROUTES.health}`);
    // Longer than the daemon's default 10 s drain, so it is not killed mid-write.
    expect(Number.parseInt(ratelimit!.stop_grace_period!, 10)).toBeGreaterThan(10);
  });
});

describe('ops/compose/compose.yaml: the daemon writes only its data dir', () => {
  const compose = parseYaml(read('ops/compose/compose.yaml')) as {
    services: Record<string, { read_only?: boolean; volumes?: string[] }>;
    volumes?: Record<string, unknown>;
  };
  const dockerfile = read('Dockerfile');

  it("mounts a named volume on the image's RATELIMIT_DATA_DIR under a read-only root filesystem", () => {
    const dataDir = /RATELIMIT_DATA_DIR=(\S+)/.exec(dockerfile)?.[1];
    expect(dataDir).toBe('/data');
    const ratelimit = compose.services.ratelimit!;
    expect(ratelimit.read_only).toBe(true);
    const mount = ratelimit.volumes?.find((v) => v.endsWith(`:${dataDir}`));
    expect(mount, `a volume on ${dataDir}`).toBeDefined();
    expect(Object.keys(compose.volumes ?? {})).toContain(mount!.split(':')[0]);
  });
});

describe('ops/systemd/ratelimit.service', () => {
  const lines = read('ops/systemd/ratelimit.service')
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('#'));
  const sections = new Map<string, [string, string][]>();
  let current = '';
  for (const line of lines) {
    const header = /^\[(\w+)\]$/.exec(line);
    if (header) sections.set((current = header[1]!), []);
    else {
      const eq = line.indexOf('=');
      sections.get(current)!.push([line.slice(0, eq), line.slice(eq + 1)]);
    }
  }
  const service = sections.get('Service') ?? [];
  const value = (key: string) => service.filter(([k]) => k === key).map(([, v]) => v);

  it('has Unit, Service and Install sections and runs `serve` with an EnvironmentFile', () => {
    expect([...sections.keys()]).toEqual(['Unit', 'Service', 'Install']);
    expect(value('EnvironmentFile')).toEqual(['/etc/ratelimit/ratelimit.env']);
    expect(value('ExecStart')[0]).toMatch(/bin\/ratelimit\.js serve$/);
    expect(value('Environment')).toContain('NODE_ENV=production');
  });

  it('is hardened, without options that break Node', () => {
    for (const [key, expected] of [
      ['NoNewPrivileges', 'yes'],
      ['ProtectSystem', 'strict'],
      ['ProtectHome', 'yes'],
      ['PrivateTmp', 'yes'],
      ['DynamicUser', 'yes'],
      ['CapabilityBoundingSet', ''],
    ] as const) {
      expect(value(key), key).toContain(expected);
    }
    // V8's JIT needs writable executable memory.
    expect(value('MemoryDenyWriteExecute')).not.toContain('yes');
  });

  it('gives the graceful drain more time than its 10 s default before SIGKILL', () => {
    expect(value('KillSignal')).toEqual(['SIGTERM']);
    expect(Number.parseInt(value('TimeoutStopSec')[0]!, 10)).toBeGreaterThan(10);
  });

  it('ships an example EnvironmentFile naming the variables it needs', () => {
    const example = read('ops/systemd/ratelimit.env.example');
    for (const name of ['DATABASE_URL=', 'PHONE_ENCRYPTION_KEY=', 'RATELIMIT_API_TOKENS=', 'ALLOWED_ORIGINS=']) {
      expect(example).toContain(name);
    }
  });
});

describe('documentation links', () => {
  const docs = [
    'README.md',
    ...readdirSync(join(ROOT, 'docs'))
      .filter((f) => f.endsWith('.md'))
      .map((f) => `docs/${f}`),
  ];

  /** Inline `[text](target)` and reference `[id]: target` links, outside code. */
  function links(markdown: string): string[] {
    const prose = markdown.replace(/```[\s\S]*?```/g, '').replace(/`[^`\n]*`/g, '');
    const inline = [...prose.matchAll(/\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g)].map((m) => m[1]!);
    const reference = [...prose.matchAll(/^\s*\[[^\]]+\]:\s*(\S+)/gm)].map((m) => m[1]!);
    return [...inline, ...reference];
  }

  /** GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens. */
  function anchors(markdown: string): Set<string> {
    const headings = markdown.replace(/```[\s\S]*?```/g, '').matchAll(/^#{1,6}\s+(.+?)\s*$/gm);
    return new Set(
      [...headings].map((m) =>
        m[1]!
          .toLowerCase()
          .replace(/[^\p{L}\p{N}\s_-]/gu, '')
          .replace(/\s/g, '-'),
      ),
    );
  }

  it.each(docs)('%s: every relative link resolves to a file in the repository, and its anchor to a heading', (doc) => {
    for (const link of links(read(doc))) {
      if (/^[a-z][a-z0-9+.-]*:/i.test(link)) continue; // https:, mailto:
      const [path, anchor] = link.split('#') as [string, string | undefined];
      const target = path === '' ? join(ROOT, doc) : resolve(ROOT, dirname(doc), decodeURIComponent(path));
      const inside = relative(ROOT, target);
      expect(inside.startsWith('..') || inside === '', `${doc} → ${link} stays inside the repository`).toBe(false);
      expect(existsSync(target) && statSync(target).isFile(), `${doc} → ${link} is a file`).toBe(true);
      if (anchor !== undefined && target.endsWith('.md')) {
        expect([...anchors(readFileSync(target, 'utf8'))], `${doc} → ${link} names a heading`).toContain(anchor);
      }
    }
  });

  it('the README links the protocol reference, not the shared contract outside the repository', () => {
    const readme = read('README.md');
    expect(readme).toContain('(docs/protocol.md)');
    expect(readme).not.toContain('../shared/');
  });
});
