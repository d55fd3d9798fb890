// The Daemon: builds the engine, the Decider and both transports on one node:http server, and
// owns listening, /health's numbers and the ordered graceful shutdown. Routing, sockets and
// decisions live in transport/ and decider.ts; start-up (database, key, heartbeat) in start.ts.

import { createServer, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { Logger } from 'pino';
import type { Config } from '../core/config.js';
import type { Pool } from '../db/pool.js';
import { Authenticator } from './auth.js';
import { DecisionTally, type DecisionCounters } from './tally.js';
import { Decider } from './decider.js';
import { DecisionIds } from '../core/decision-id.js';
import { OutcomeRecorder } from './outcomes.js';
import { ConversionStateSource } from './conversion-state.js';
import { KeyRotation } from './key-rotation.js';
import { DecisionEngine, type EngineOptions } from './engine/engine.js';
import type { Spool } from './engine/spool.js';
import { IpRules } from './ip-rules.js';
import { createMetrics, type Metrics } from './metrics.js';
import { readGuardReadings } from '../db/guard-stats.js';
import { PolicySource } from './policy-source.js';
import type { BacklogLimits } from './transport/backlog.js';
import { ClientAddresses } from './transport/client-address.js';
import { ClientLog } from './transport/client-log.js';
import { createMetricsServer } from './transport/metrics-http.js';
import { ConnectionGate, defaultMaxConnections, HANDSHAKE_TIMEOUT_MS } from './transport/connections.js';
import { HttpTransport, type Health } from './transport/http.js';
import { WsTransport } from './transport/ws.js';

// Behind Fly the proxy holds idle keep-alive connections for 60 s: staying open longer means the
// proxy, never us, closes an idle connection, so it never reuses one we are closing (a 502).
// Reached directly, idle connections are a cost with little use: Node's default 5 s.
const KEEP_ALIVE_BEHIND_FLY_MS = 65_000;
const KEEP_ALIVE_DIRECT_MS = 5_000;
// Later requests on a kept-alive connection: headers within HEADERS_TIMEOUT_MS of their first
// byte, the whole request (bodies are at most a few KiB) within REQUEST_TIMEOUT_MS, checked every
// second (Node's default check interval is 30 s).
const HEADERS_TIMEOUT_MS = HANDSHAKE_TIMEOUT_MS * 2;
const REQUEST_TIMEOUT_MS = HANDSHAKE_TIMEOUT_MS * 3;
const CONNECTIONS_CHECK_INTERVAL_MS = 1_000;
// A decision-path database operation may take RATELIMIT_DB_TIMEOUT plus this before the daemon
// decides from memory: the rest of the 1 s the client library allows past RATELIMIT_DB_TIMEOUT
// (src/client DEFAULT_REQUEST_TIMEOUT_MS) is for queueing and the reply itself.
const OPERATION_MARGIN_MS = 500;

export interface DaemonOptions {
  config: Config;
  pool: Pool;
  /** For the notification listener (resets, policy and list changes: LISTEN/NOTIFY). */
  databaseUrl: string;
  phoneKey: string;
  logger: Logger;
  version: string;
  /** Where decisions made from memory are kept until the database has them (start.ts opens it). */
  spool: Spool;
  /** Overrides for tests and benchmarks. */
  engine?: Partial<Pick<EngineOptions, 'maxBatch' | 'maxInFlight' | 'probeInitialDelayMs' | 'probeMaxDelayMs' | 'beforeRecovery'>>;
  pingIntervalMs?: number;
  /** How often the policy and lists are polled for changes (NOTIFY usually comes first). */
  policyPollIntervalMs?: number;
  backlog?: Partial<BacklogLimits>;
}

export class Daemon {
  readonly metrics: Metrics;
  readonly engine: DecisionEngine;
  /** The policy and the block/allow lists in force; start.ts starts it. */
  readonly policies: PolicySource;
  /** Whether the conversion rules are engaged, and the baseline per region; start.ts starts it. */
  readonly conversion: ConversionStateSource;
  private readonly tally = new DecisionTally();
  private readonly http: Server;
  private readonly httpTransport: HttpTransport;
  private readonly ws: WsTransport;
  private readonly gate: ConnectionGate;
  private readonly sockets = new Set<Socket>();
  /** RATELIMIT_METRICS_PORT's listener; undefined when /metrics is on the main port. */
  private readonly metricsServer: Server | undefined;
  private readonly startedAt = Date.now();
  private shutdownPromise: Promise<number> | undefined;

  constructor(private readonly opts: DaemonOptions) {
    const { config, logger } = opts;
    this.metrics = createMetrics();
    const ipRules = new IpRules({ onFull: () => this.metrics.ipTableFull.inc() });
    ipRules.update(config.defaultPolicy.ip);
    this.policies = new PolicySource({
      pool: opts.pool,
      logger,
      defaultPolicy: config.defaultPolicy,
      defaultPolicySources: config.defaultPolicySources,
      pollIntervalMs: opts.policyPollIntervalMs,
      announced: () => this.engine.changesAnnounced,
      onChange: (what, active) => {
        // Cached denials were decided under the old policy or lists.
        this.engine.policyChanged();
        if (what !== 'policy') return;
        ipRules.update(active.policy.ip);
        this.metrics.policyVersion.set(active.version);
      },
    });
    this.metrics.policyVersion.set(0);
    this.conversion = new ConversionStateSource({ pool: opts.pool, policies: this.policies, logger });
    this.metrics.watchGuard(() => readGuardReadings(opts.pool, this.policies.current.policy));
    this.engine = new DecisionEngine({
      pool: opts.pool,
      url: opts.databaseUrl,
      policies: this.policies,
      logger,
      metrics: this.metrics,
      denyCache: config.denyCache,
      onAnnouncedChange: () => this.policies.poke(),
      spool: opts.spool,
      operationDeadlineMs: config.dbStatementTimeoutMs + OPERATION_MARGIN_MS,
      conversionState: this.conversion.current,
      ...opts.engine,
    });
    const auth = new Authenticator(config.apiTokens, config.allowedOrigins);
    const rotation = config.previousPhoneKey
      ? new KeyRotation({ pool: opts.pool, currentKey: opts.phoneKey, previousKey: config.previousPhoneKey, logger })
      : undefined;
    const decisionIds = new DecisionIds(opts.phoneKey, config.previousPhoneKey);
    const decider = new Decider({
      engine: this.engine,
      policies: this.policies,
      ipRules,
      metrics: this.metrics,
      tally: this.tally,
      logger,
      phoneKey: opts.phoneKey,
      rotation,
      decisionIds,
      prices: config.prices,
    });
    const outcomes = new OutcomeRecorder({
      engine: this.engine,
      pool: opts.pool,
      ids: decisionIds,
      metrics: this.metrics,
      logger,
      policies: this.policies,
      conversion: this.conversion,
    });
    const isShuttingDown = () => this.shutdownPromise !== undefined;
    const clientLog = new ClientLog(logger);
    const addresses = new ClientAddresses(config.trustProxy, clientLog, config.flyAppName, logger);
    this.gate = new ConnectionGate({
      maxConnections: config.maxConnections ?? defaultMaxConnections(),
      maxPerAddress: config.maxConnectionsPerIp,
      perAddress: addresses.socketIsClient,
      metrics: this.metrics,
      logger,
    });
    const transport = { config, auth, decider, outcomes, metrics: this.metrics, logger, addresses, gate: this.gate, clientLog, isShuttingDown };
    this.httpTransport = new HttpTransport({ ...transport, health: () => this.health(), metricsElsewhere: config.metricsPort !== undefined });
    this.metricsServer = config.metricsPort === undefined ? undefined : createMetricsServer(this.metrics, logger);
    this.ws = new WsTransport({ ...transport, pingIntervalMs: opts.pingIntervalMs, backlog: opts.backlog });
    this.http = createServer(
      {
        keepAliveTimeout: config.trustProxy === 'fly' ? KEEP_ALIVE_BEHIND_FLY_MS : KEEP_ALIVE_DIRECT_MS,
        headersTimeout: HEADERS_TIMEOUT_MS,
        requestTimeout: REQUEST_TIMEOUT_MS,
        connectionsCheckingInterval: CONNECTIONS_CHECK_INTERVAL_MS,
      },
      (req, res) => void this.httpTransport.onRequest(req, res),
    );
    this.gate.attach(this.http);
    this.http.on('connection', (s: Socket) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    // onUpgrade answers every failure itself (an exception here would end the process).
    this.http.on('upgrade', (req, socket, head) => this.ws.onUpgrade(req, socket, head));
  }

  /** Every consume decided since start, by outcome (for the heartbeat). */
  decisionCounters(): DecisionCounters {
    return this.tally.snapshot();
  }

  /** The version of the policy in force (0: the RATE_LIMIT_* default). */
  get policyVersion(): number {
    return this.policies.current.version;
  }

  get connectionCount(): number {
    return this.ws.connectionCount;
  }

  get uptimeMs(): number {
    return Date.now() - this.startedAt;
  }

  /** Listens on the main port, and on RATELIMIT_METRICS_PORT when set; resolves with the main address. */
  async listen(): Promise<AddressInfo> {
    const { port, host, metricsPort } = this.opts.config;
    const address = await listenOn(this.http, port, host);
    if (this.metricsServer && metricsPort !== undefined) {
      try {
        this.metricsAddress = await listenOn(this.metricsServer, metricsPort, host);
      } catch (err) {
        this.http.close();
        throw err;
      }
    }
    return address;
  }

  /** Where /metrics listens when RATELIMIT_METRICS_PORT is set (after listen()). */
  metricsAddress: AddressInfo | undefined;

  health(): Health {
    const up = this.engine.mode === 'database';
    return {
      status: up ? 'ok' : 'degraded',
      database: up ? 'up' : 'down',
      source: this.engine.mode,
      pendingWrites: this.engine.pendingWrites,
      connections: this.ws.connectionCount,
      uptimeS: Math.round(this.uptimeMs / 1000),
      version: this.opts.version,
    };
  }

  /**
   * Stop accepting, answer what is in flight, close sockets with 1001, write what memory
   * decided (or leave it in the spool if the database is down), stop background work.
   * Resolves with the number of decisions lost: neither written nor spooled. Idempotent. Does
   * not end the pool.
   */
  shutdown(drainUntilMs = Date.now()): Promise<number> {
    this.shutdownPromise ??= (async () => {
      const closed = new Promise<void>((resolve) => this.http.close(() => resolve()));
      this.http.closeIdleConnections();
      await this.ws.close();
      while (this.httpTransport.inFlight > 0) await new Promise((r) => setTimeout(r, 10));
      this.http.closeIdleConnections();
      const { lost: unwritten } = await this.engine.drain(drainUntilMs);
      await this.engine.stop();
      this.policies.stop();
      this.conversion.stop();
      // Sockets that never finished their close handshake.
      this.ws.terminate();
      for (const s of this.sockets) s.destroy();
      await closed;
      await closeMetricsServer(this.metricsServer);
      return unwritten;
    })();
    return this.shutdownPromise;
  }

  /** After the deadline: drop everything. */
  terminate(): void {
    this.ws.terminate();
    for (const s of this.sockets) s.destroy();
    this.http.close();
    void closeMetricsServer(this.metricsServer);
    this.policies.stop();
    this.conversion.stop();
    void this.engine.stop();
  }
}

function listenOn(server: Server, port: number, host: string): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve(server.address() as AddressInfo);
    });
  });
}

function closeMetricsServer(server: Server | undefined): Promise<void> {
  if (!server?.listening) return Promise.resolve();
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}
