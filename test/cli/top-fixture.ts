// A dashboard frame for the layout tests: one daemon, `hotCount` numbers in one range, one aggregate key.
import { fleetSeries, fleetTotals, flyRegionTotals, type HotRow, type TopFrame, type TopInstance } from '../../src/cli/top/model.js';

function instance(id: string): TopInstance {
  return {
    instanceId: id,
    host: `${id}.internal`,
    flyRegion: null,
    version: '0.1.0',
    pid: 7,
    uptimeMs: 60_000,
    lastSeenAgoMs: 500,
    state: 'up',
    connections: 3,
    allowedPerS: 8,
    deniedPerS: 0,
    fallback: false,
    dbLatencyMs: 1.2,
    allowedSeries: [8, 8, 8],
    deniedSeries: [0, 0, 0],
    policyVersion: 0,
    deniedPerSByReason: {},
  };
}

export function fixtureFrame(hotCount = 50): TopFrame {
  const instances = [instance('machine-a')];
  const hottest: HotRow[] = Array.from({ length: hotCount }, (_, i) => ({
    hash: `${i}`.padStart(64, 'a'),
    hashPrefix: `${i}`.padStart(12, 'a'),
    masked: `+1415555${String(1000 + i).slice(0, 1)}•••`,
    region: 'US',
    used: 1,
    limit: 2,
    deniedInWindow: 0,
    resetInMs: 600_000,
    atLimit: false,
    blocked: false,
  }));
  return {
    nowMs: Date.UTC(2026, 0, 1),
    sort: 'denials',
    limit: 2,
    windowMs: 3_600_000,
    policyVersion: 0,
    dbLatencyMs: 1,
    database: { serverVersion: '16.4', connections: 5, maxConnections: 100, sizeBytes: 9_000_000, readOnly: false },
    instances,
    totals: fleetTotals(instances, 0),
    flyRegions: flyRegionTotals(instances),
    series: fleetSeries(instances),
    hottest,
    window: { tracked: 500, trackedEstimated: false, active: 50, atLimit: 0, calls: 50, denials: 0, resets: 0 },
    regions: [{ region: 'US', active: 50, atLimit: 0, calls: 50, denials: 0 }],
    aggregates: [{ ruleId: 'prefix:1h', group: 'prefix', label: '+1415555•••', used: 9, limit: 10, shadow: false }],
    windowDenials: { byReason: [], shadowByRule: [] },
    movers: null,
  };
}
