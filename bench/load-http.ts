// HTTP load generator: `inflight` keep-alive connections, one POST /v1/consume in flight on each
// (HTTP/1.1 clients do not pipeline), in its own process like the WebSocket one.
import http from 'node:http';
import { driveLanes, emit, workerArgs } from './lib/child.js';
import { clientIp, keySampler, phoneNumber, type KeyDistribution } from './lib/keys.js';

export interface HttpLoadConfig {
  host: string;
  port: number;
  token: string;
  inflight: number;
  dist: KeyDistribution;
  warmupMs: number;
  measureMs: number;
  ipBase?: number;
}

const cfg = workerArgs<HttpLoadConfig>();
const agent = new http.Agent({ keepAlive: true, maxSockets: cfg.inflight, maxFreeSockets: cfg.inflight });
const nextKey = keySampler(cfg.dist);
let ipCounter = cfg.ipBase ?? 0;

function consume(): Promise<'allowed' | 'denied'> {
  const body = `{"phoneNumber":"${phoneNumber(nextKey())}","ip":"${clientIp(ipCounter++)}"}`;
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        agent,
        host: cfg.host,
        port: cfg.port,
        method: 'POST',
        path: '/v1/consume',
        headers: { Authorization: `Bearer ${cfg.token}`, 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) },
      },
      (res) => {
        res.resume();
        res.once('end', () => {
          if (res.statusCode === 200) resolve('allowed');
          else if (res.statusCode === 429) resolve('denied');
          else reject(new Error(`HTTP ${res.statusCode}`));
        });
        res.once('error', reject);
      },
    );
    req.once('error', reject);
    req.end(body);
  });
}

const result = await driveLanes({ lanes: cfg.inflight, warmupMs: cfg.warmupMs, measureMs: cfg.measureMs, op: consume });
agent.destroy();
emit({ event: 'result', result });
process.exit(0);
